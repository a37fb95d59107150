"""HalvingPruner: successive halving on the ranking score, with any sampler."""

import optuna
import pytest

from safs_optuna.pruners import REASON_ATTR, HalvingPruner
from safs_optuna.ranking import CHANCE_ATTR, VAL_LOSS_ATTR, VAL_SIZE_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(rates, epochs=5, at_chance=False):
    """Trial i learns at rates[i]; with at_chance, accuracy stays at 10 % and only the loss moves."""
    def objective(trial):
        rate = rates[trial.number]
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr(CHANCE_ATTR, 10.0)
        trial.set_user_attr(VAL_SIZE_ATTR, 1000)
        losses = []
        acc = 10.0
        for epoch in range(epochs):
            acc = 10.0 if at_chance else min(95.0, 10.0 + rate * (epoch + 1))
            losses.append(2.3 - rate * 0.01 * (epoch + 1))
            trial.set_user_attr(VAL_LOSS_ATTR, losses)
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc
    return objective


@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0)])
def test_only_the_best_third_goes_on_at_each_rung(sampler):
    rates = [5.0, 1.0, 2.0, 9.0, 3.0, 8.0, 0.5, 7.0, 6.0, 4.0, 0.2, 10.0]
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=HalvingPruner())
    study.optimize(_objective(rates), n_trials=len(rates))
    states = {t.number: t.state for t in study.trials}
    # The first two never meet a full rung (min_trials=3), so they train in full.
    assert states[0] == states[1] == optuna.trial.TrialState.COMPLETE
    # Trial 2 (rate 2) is behind trial 0 (rate 5) at epoch 1 among 3: pruned after 1 epoch.
    assert states[2] == optuna.trial.TrialState.PRUNED
    assert len(study.trials[2].intermediate_values) == 1
    assert "ranks 2 of the 3 trials that reached epoch 1" in study.trials[2].user_attrs[REASON_ATTR]
    # The best learner so far always goes on; the slowest learners never do.
    assert states[3] == optuna.trial.TrialState.COMPLETE and states[11] == optuna.trial.TrialState.COMPLETE
    assert states[6] == states[10] == optuna.trial.TrialState.PRUNED
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    assert epochs < 0.6 * 5 * len(rates)


def test_at_chance_level_the_loss_decides():
    # Every trial stays at chance accuracy; only the loss tells them apart.
    rates = [1.0, 2.0, 3.0, 0.5, 9.0]
    study = optuna.create_study(direction="maximize", pruner=HalvingPruner(min_trials=2, reduction_factor=2))
    study.optimize(_objective(rates, at_chance=True), n_trials=len(rates))
    states = [t.state for t in study.trials]
    assert states[3] == optuna.trial.TrialState.PRUNED  # slowest loss decrease
    assert states[4] == optuna.trial.TrialState.COMPLETE  # fastest


def test_a_study_resumed_with_a_fresh_pruner_decides_as_one_run(tmp_path):
    rates = [5.0, 1.0, 2.0, 9.0, 3.0, 8.0, 0.5, 7.0, 6.0, 4.0, 0.2, 10.0]
    whole = optuna.create_study(direction="maximize", pruner=HalvingPruner())
    whole.optimize(_objective(rates), n_trials=len(rates))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = optuna.create_study(storage=url, study_name="h", direction="maximize", pruner=HalvingPruner())
    first.optimize(_objective(rates), n_trials=5)
    resumed = optuna.load_study(storage=url, study_name="h", pruner=HalvingPruner())
    resumed.optimize(_objective(rates), n_trials=len(rates) - 5)
    assert [t.state for t in resumed.trials] == [t.state for t in whole.trials]
    assert [len(t.intermediate_values) for t in resumed.trials] == [len(t.intermediate_values) for t in whole.trials]


def test_failed_trials_do_not_count_and_rungs_are_checked():
    with pytest.raises(ValueError, match="rungs must be increasing"):
        HalvingPruner(rungs=(3, 1))
    with pytest.raises(ValueError, match="rungs must be increasing"):
        HalvingPruner(rungs=(0,))
    with pytest.raises(ValueError, match="reduction_factor"):
        HalvingPruner(reduction_factor=1)
    with pytest.raises(ValueError, match="min_trials"):
        HalvingPruner(min_trials=0)
    study = optuna.create_study(direction="maximize", pruner=HalvingPruner())
    for _ in range(3):
        t = study.ask()
        t.report(90.0, 0)
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    t = study.ask()
    t.report(5.0, 0)
    assert not t.should_prune()  # three failed trials are not competitors
