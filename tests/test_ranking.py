"""How trials are compared (safs_optuna.ranking) and what relies on it: the LAHC acceptance test,
the incumbent-relative pruner and the "auto" candidate epochs."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from safs_optuna.pipeline import auto_epochs
from safs_optuna.pruners import IncumbentPruner
from safs_optuna.ranking import behind_margin, chance_band, first_move, trial_score
from safs_optuna.samplers import LAHCSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
CHOICES = ("relu", "tanh", "gelu", "elu", "selu")
DIST = {"x.left": CategoricalDistribution(CHOICES)}


def _trial(accs, losses, op="relu", state=TrialState.COMPLETE, chance=10.0, n=1000):
    return create_trial(
        state=state,
        value=max(accs) if state == TrialState.COMPLETE else None,
        params={"x.left": op},
        distributions=DIST,
        intermediate_values=dict(enumerate(accs)),
        user_attrs={"chance_accuracy": chance, "val_size": n, "val_loss": list(losses)},
    )


# ----------------------------------------------------------------- the comparison rule
def test_the_chance_band_is_the_majority_share_plus_two_standard_errors():
    # 10 % majority class on 1 000 images: SE = sqrt(0.1 * 0.9 / 1000) = 0.949 points.
    assert chance_band(10.0, 1000) == pytest.approx(10.0 + 2 * 0.9487, abs=1e-3)
    assert chance_band(10.0, 60000) < chance_band(10.0, 1000)  # more images, a narrower band


def test_loss_breaks_an_accuracy_tie_at_chance():
    dead = _trial([10.0, 10.0, 10.2], [2.3031, 2.3030, 2.3029])
    stirring = _trial([10.0, 9.8, 10.1], [2.3020, 2.2990, 2.2950])
    assert trial_score(stirring) > trial_score(dead)
    # accuracies inside the band all count as equal, so a slightly higher one does not win
    noisy = _trial([11.5, 10.0, 10.0], [2.3030, 2.3031, 2.3032])
    assert trial_score(stirring) > trial_score(noisy)


def test_accuracy_decides_above_the_chance_band():
    better = _trial([10.0, 20.0, 30.0], [2.30, 2.10, 1.95])
    lower_loss = _trial([10.0, 18.0, 25.0], [2.30, 2.00, 1.80])
    assert trial_score(better) > trial_score(lower_loss)
    tie = _trial([10.0, 22.0, 30.0], [2.30, 2.00, 1.90])
    assert trial_score(tie) > trial_score(better)  # the same accuracy: the lower loss wins


def test_pruned_and_failed_trials_score_worst_and_a_bare_trial_scores_by_value():
    pruned = _trial([30.0], [1.0], state=TrialState.PRUNED)
    assert trial_score(pruned) < trial_score(_trial([10.0], [2.31]))
    bare = create_trial(value=42.0, params={"x.left": "relu"}, distributions=DIST)
    assert trial_score(bare) == (42.0, 0.0)


def test_first_move_and_truncation():
    t = _trial([10.0, 10.5, 14.0, 30.0], [2.30] * 4)
    assert first_move(t) == 2
    assert first_move(t, epochs=2) is None  # cut to the first two epochs: still at chance
    assert trial_score(t, epochs=2)[0] == pytest.approx(chance_band(10.0, 1000))


# ----------------------------------------------------------------- LAHC uses it
def test_lahc_accepts_a_candidate_whose_loss_moved_while_accuracy_is_at_chance():
    from safs_optuna.samplers.lahc._chain import replay as _replay, value_score as _value_score

    trials = [
        _trial([10.0, 10.0], [2.3030, 2.3030], "relu"),  # the start, dead
        _trial([10.0, 10.0], [2.3010, 2.2980], "gelu"),  # its loss moved: accepted
        _trial([10.0, 10.0], [2.3031, 2.3032], "tanh"),  # worse loss than both: rejected
    ]
    for number, t in enumerate(trials):
        t.number = number
    assert _replay(trials, 3, trial_score).current.params["x.left"] == "gelu"
    # by the value alone all three tie, and LAHC accepts ties: the dead "tanh" would win
    assert _replay(trials, 3, _value_score(True)).current.params["x.left"] == "tanh"


# ----------------------------------------------------------------- the incumbent-relative pruner
def _running(study, accs, losses):
    trial = study.ask({"x.left": DIST["x.left"]})
    trial.set_user_attr("chance_accuracy", 10.0)
    trial.set_user_attr("val_size", 1000)
    trial.set_user_attr("val_loss", list(losses))
    for epoch, acc in enumerate(accs):
        trial.report(acc, epoch)
    return trial


def _study(reference_accs):
    study = optuna.create_study(direction="maximize", sampler=LAHCSampler(seed=0, score=trial_score),
                                pruner=IncumbentPruner())
    study.add_trial(_trial(reference_accs, [2.3] * len(reference_accs), "relu"))
    return study


def test_a_candidate_clearly_behind_the_incumbent_is_stopped():
    study = _study([10.0, 18.0, 30.0, 40.0])
    trial = _running(study, [10.0, 10.1, 10.0], [2.303] * 3)
    assert trial.should_prune()
    reason = study._storage.get_trial(trial._trial_id).user_attrs["pruned_reason"]
    assert "behind trial 0" in reason and "30.0%" in reason


def test_a_candidate_at_chance_is_not_stopped_while_the_incumbent_is_at_chance():
    study = _study([10.0, 10.0, 10.2, 10.0])
    trial = _running(study, [10.0, 9.6, 10.0], [2.303] * 3)
    assert not trial.should_prune()


def test_a_candidate_within_the_noise_margin_is_not_stopped():
    study = _study([10.0, 20.0, 30.0])
    margin = behind_margin(27.0, 30.0, 1000)
    assert margin > 3.0  # three standard errors of a difference of two accuracies at ~30 %
    trial = _running(study, [10.0, 19.0, 27.0], [2.2] * 3)
    assert not trial.should_prune()


def test_the_start_trial_is_never_stopped():
    study = optuna.create_study(direction="maximize", sampler=LAHCSampler(seed=0, score=trial_score),
                                pruner=IncumbentPruner())
    trial = _running(study, [10.0, 10.0, 10.0], [2.303] * 3)
    assert not trial.should_prune()  # nothing has finished: nothing to compare with


def test_the_reference_is_the_worse_of_history_and_current():
    # LAHC accepts a candidate that reaches either the history entry or the current solution.
    sampler = LAHCSampler(history_length=2, seed=0, score=trial_score)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.add_trial(_trial([20.0], [2.0], "relu"))   # start: current 20, history [20, 20]
    study.add_trial(_trial([40.0], [1.5], "tanh"))   # accepted: current 40, history [40, 20]
    nxt = study.ask()  # compared with history slot 1 (20, trial 0) or current (40): the easier one
    assert sampler.threshold_trial(study, nxt).number == 0


# ----------------------------------------------------------------- "auto" candidate epochs
def test_auto_epochs_follow_when_the_start_point_leaves_chance():
    band = chance_band(10.0, 1000)
    assert auto_epochs([10.0, 10.0], band, ceiling=10) == (None, "")  # not yet known
    epochs, why = auto_epochs([10.0, 10.0, 15.0], band, ceiling=10)
    assert epochs == 4 and "epoch 3" in why  # left chance in epoch 3: candidates train 3 + 1
    assert auto_epochs([30.0], band, ceiling=10)[0] == 2  # the floor
    assert auto_epochs([10.0] * 6 + [20.0], band, ceiling=6)[0] == 6  # the ceiling
    epochs, why = auto_epochs([10.0] * 6, band, ceiling=6)
    assert epochs == 6 and "stayed at chance" in why


def test_behind_margin_shrinks_with_more_validation_images():
    assert behind_margin(20.0, 30.0, 6000) < behind_margin(20.0, 30.0, 1000)
    assert math.isfinite(behind_margin(0.0, 100.0, 10))


def test_without_a_threshold_the_reference_is_the_best_earlier_trial():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=IncumbentPruner())
    first = _running(study, [10.0, 10.0, 10.0], [2.303] * 3)
    assert not first.should_prune()  # the first trial has nothing earlier to be compared with
    study.add_trial(_trial([10.0, 30.0, 45.0], [2.0, 1.8, 1.6], "gelu"))
    late = _running(study, [10.0, 10.0, 10.0], [2.303] * 3)
    assert late.should_prune()
    assert not first.should_prune()  # a trial that finished later is not "earlier"
