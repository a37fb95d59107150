"""pipeline.py pieces that need no training: stage-2 params, studies, status, re-arming."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna.config import HPOSpace, load_config
from safs_optuna.pipeline import STAGES, Pipeline, PipelineError, hparams_from_params, suggest_hparams
from safs_optuna.pipeline.results import warnings
from safs_optuna.training import HParams

from ._tiny import write_config

optuna.logging.set_verbosity(optuna.logging.WARNING)
BASE = HParams(optimizer="adam", lr=1e-3, momentum=0.8, weight_decay=0.0, schedule="constant", batch_size=64)


# ----------------------------------------------------------------- stage-2 params
def _ask(params: dict, space: HPOSpace = HPOSpace(learn_scale=(True, False)), learn_scale: bool | None = None):
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    hp, learn = suggest_hparams(trial, space, BASE, learn_scale=learn_scale)
    return trial, hp, learn


def test_suggest_hparams_sgd_has_momentum():
    trial, hp, learn = _ask({"optimizer": "sgd", "lr": 0.05, "momentum": 0.7, "weight_decay": 1e-4,
                             "schedule": "cosine", "learn_scale": True})
    assert set(trial.params) == {"optimizer", "lr", "momentum", "weight_decay", "schedule", "learn_scale"}
    got = (hp.optimizer, hp.lr, hp.momentum, hp.weight_decay, hp.schedule)
    assert got == ("sgd", 0.05, 0.7, 1e-4, "cosine")
    assert hp.batch_size == 64  # what stage 2 does not tune comes from the protocol
    assert learn is True


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_suggest_hparams_momentum_only_for_sgd(optimizer):
    trial, hp, learn = _ask({"optimizer": optimizer, "learn_scale": False})
    assert "momentum" not in trial.params
    assert hp.optimizer == optimizer and hp.momentum == BASE.momentum
    assert learn is False
    lo, hi = HPOSpace().lr
    assert lo <= hp.lr <= hi


def test_suggest_hparams_fixed_learn_scale_is_not_a_param():
    trial, _, learn = _ask({"optimizer": "adam"}, learn_scale=True)
    assert "learn_scale" not in trial.params and learn is True
    trial, _, learn = _ask({"optimizer": "adam"}, learn_scale=False)
    assert "learn_scale" not in trial.params and learn is False


def test_suggest_hparams_respects_the_space():
    space = HPOSpace(optimizers=("sgd",), lr=(0.01, 0.02), momentum=(0.5, 0.6), weight_decay=(1e-5, 2e-5),
                     schedules=("step",), learn_scale=(False,))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        hp, learn = suggest_hparams(study.ask(), space, BASE)
        assert hp.optimizer == "sgd" and hp.schedule == "step" and learn is False
        assert 0.01 <= hp.lr <= 0.02 and 0.5 <= hp.momentum <= 0.6 and 1e-5 <= hp.weight_decay <= 2e-5


def test_hparams_from_params_round_trips_a_stored_trial():
    # The final stage rebuilds the winner's protocol from its stored params alone.
    trial, hp, learn = _ask({"optimizer": "sgd", "lr": 0.03, "momentum": 0.95, "weight_decay": 1e-3,
                             "schedule": "plateau", "learn_scale": True})
    assert hparams_from_params(trial.params, BASE) == (hp, learn)
    assert hparams_from_params({}, BASE) == (BASE, False)


# A nesterov-SGD protocol must not break stage-2 trials that pick another optimizer.
def test_hparams_from_params_with_a_nesterov_protocol():
    base = HParams(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True)
    hp, _ = hparams_from_params({"optimizer": "adam", "lr": 0.01}, base)
    assert hp.optimizer == "adam" and not hp.nesterov
    hp, _ = hparams_from_params({"optimizer": "sgd", "lr": 0.01, "momentum": 0.8}, base)
    assert hp.optimizer == "sgd" and hp.momentum == 0.8


# ----------------------------------------------------------------- studies and status
@pytest.fixture
def cfg(tmp_path):
    return load_config(write_config(tmp_path))


def _states(cfg, stage: str) -> list[TrialState]:
    study = optuna.load_study(study_name=f"{cfg.name}/{stage}", storage=cfg.storage)
    return [t.state for t in study.get_trials(deepcopy=False)]


def _once(pipe: Pipeline) -> list[str]:
    return [s.name for s in pipe.stages if s.kind == "once"]


def test_status_before_and_after_prepare(cfg):
    pipe = Pipeline(cfg, log=lambda msg: None)
    assert [s.name for s in pipe.stages] == [s.name for s in STAGES if s.enabled_by is None]  # ablations are on by default
    for stage in pipe.stages:
        st = pipe.studies.status(stage)
        assert not st.exists and not st.done and st.finished == 0 and st.best_trial is None
    pipe.studies.prepare()
    budgets = {"activations": 3, "hpo": 3, "hpo-relu": 3}
    for stage in pipe.stages:
        st = pipe.studies.status(stage)
        assert st.exists and not st.done, stage.name
        assert st.budget == budgets.get(stage.name, 1)
        # Every stage has its first trial queued: a once stage's only one, a search stage's start point.
        assert (st.waiting, st.running, st.failed, st.finished) == (1, 0, 0, 0), stage.name
    assert not pipe.studies.status("dense").done
    names = {s.study_name for s in optuna.get_all_study_summaries(cfg.storage)}
    assert names == {f"tiny/{s.name}" for s in STAGES if s.enabled_by is None}


def test_once_stages_are_queued_exactly_once(cfg):
    first = Pipeline(cfg, log=lambda msg: None)
    first.studies.prepare()
    first.studies.prepare()
    second = Pipeline(cfg, worker=1, log=lambda msg: None)  # another worker joining the study
    second.studies.prepare()
    for name in _once(first):
        assert _states(cfg, name) == [TrialState.WAITING], name
    for name in ("activations", "hpo", "hpo-relu"):  # the start points, queued once too
        assert _states(cfg, name) == [TrialState.WAITING], name


def test_stage2_starts_from_the_default_protocol_inside_the_space(cfg):
    pipe = Pipeline(cfg, log=lambda msg: None)
    pipe.studies.prepare()
    lo_wd = cfg.hpo.space.weight_decay[0]
    for name, extra in (("hpo", {"learn_scale": True}), ("hpo-relu", {})):
        study = optuna.load_study(study_name=f"tiny/{name}", storage=cfg.storage)
        (trial,) = study.get_trials(deepcopy=False)
        fixed = trial.system_attrs["fixed_params"]
        # The protocol's weight decay 0 is clipped into the log-scale range; adam has no momentum.
        assert fixed == {"optimizer": "adam", "lr": 0.001, "weight_decay": lo_wd, "schedule": "constant",
                         **extra}, name


def test_a_failed_once_stage_is_rearmed_only_when_asked(cfg):
    pipe = Pipeline(cfg, log=lambda msg: None)
    pipe.studies.prepare()
    study = pipe.studies.study(next(s for s in STAGES if s.name == "baseline"))
    (trial,) = study.get_trials(deepcopy=False)
    assert pipe.studies.storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING)
    pipe.studies.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)

    Pipeline(cfg, log=lambda msg: None).studies.prepare(rearm=False)
    assert _states(cfg, "baseline") == [TrialState.FAIL]
    fresh = Pipeline(cfg, log=lambda msg: None)
    fresh.studies.prepare(rearm=True)
    assert _states(cfg, "baseline") == [TrialState.FAIL, TrialState.WAITING]
    fresh.studies.prepare(rearm=True)  # already re-armed: not queued twice
    assert _states(cfg, "baseline") == [TrialState.FAIL, TrialState.WAITING]
    for name in _once(pipe):
        if name != "baseline":
            assert _states(cfg, name) == [TrialState.WAITING], name
    st = fresh.studies.status(next(s for s in STAGES if s.name == "baseline"))
    assert (st.failed, st.waiting) == (1, 1)


def test_a_changed_config_is_refused_but_budgets_may_grow(cfg, tmp_path):
    Pipeline(cfg, log=lambda msg: None).studies.prepare()
    grown = load_config(write_config(tmp_path, trials=5))
    Pipeline(grown, log=lambda msg: None).studies.prepare()  # more trials: the same study
    changed = tmp_path / "tiny.toml"
    changed.write_text(changed.read_text().replace("ratio = 0.99", "ratio = 0.9"))
    with pytest.raises(PipelineError, match=r"sparsity\.ratio: stored 0\.99, config 0\.9"):
        Pipeline(load_config(changed), log=lambda msg: None).studies.prepare()


# ----------------------------------------------------------------- a search that found nothing
def _add(study, accs, start=False, state=TrialState.COMPLETE, op="relu"):
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    attrs = {"chance_accuracy": 10.0, "val_size": 1000, "val_loss": [2.3] * len(accs)}
    if start:
        attrs["start"] = True
    study.add_trial(create_trial(
        state=state, value=max(accs) if state == TrialState.COMPLETE else None,
        params={"0.left": op}, distributions={"0.left": CategoricalDistribution(["relu", "gelu", "elu"])},
        intermediate_values=dict(enumerate(accs)), user_attrs=attrs))


@pytest.mark.parametrize("curves, says", [
    ([[10.0, 10.2], [9.9, 10.4], [10.1, 10.0]], "all 3 trials stayed at chance level; they need more epochs"),
    ([[10.0, 30.0], [10.0, 20.0], [10.0, 25.0]], "found nothing better than its start point (trial 1)"),
    ([[10.0, 20.0], [10.0, 30.0], [10.0, 25.0]], None),
])
def test_a_finished_search_says_when_it_found_nothing(cfg, curves, says, capsys):
    from safs_optuna.cli import main

    pipe = Pipeline(cfg, log=lambda msg: None)
    study = pipe.studies.study("activations")
    for trial in study.get_trials(deepcopy=False):  # the queued start point: replaced by hand-made ones
        pipe.studies.storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING)
        pipe.studies.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    for i, accs in enumerate(curves):
        _add(study, accs, start=i == 0, op=("relu", "gelu", "elu")[i])
    st = pipe.studies.status("activations")
    assert st.done
    if says is None:
        assert st.found_nothing is None and warnings(pipe) == []
        return
    assert says in st.found_nothing and "--set activations." in st.found_nothing
    assert warnings(pipe) == [st.found_nothing]
    assert main(["status", str(cfg.path)]) == 0
    out = capsys.readouterr().out
    assert "NOTHING" in out and f"WARNING {st.found_nothing}" in out
    from safs_optuna.report import dashboard_note

    note, _ = dashboard_note(cfg, "table", warnings(pipe), {}, "plot", 1)
    assert f"**Warning:** {st.found_nothing}" in note


def _stuck_at_chance(cfg, stage: str) -> str | None:
    """What a finished search ``stage`` whose 3 trials all stayed at chance says."""
    pipe = Pipeline(cfg, log=lambda msg: None)
    study = pipe.studies.study(stage)
    for trial in study.get_trials(deepcopy=False):  # the queued start point: replaced by hand-made ones
        pipe.studies.storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING)
        pipe.studies.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    for i, accs in enumerate([[10.0, 10.2], [9.9, 10.4], [10.1, 10.0]]):
        _add(study, accs, start=i == 0, op=("relu", "gelu", "elu")[i])
    return pipe.studies.status(stage).found_nothing


@pytest.mark.parametrize("hpo_epochs, knob", [("1", "hpo.epochs=… (now 1)"), ('"final"', "final.epochs=… (now 1)")])
def test_found_nothing_names_the_epochs_key_that_sets_the_trials_length(tmp_path, hpo_epochs, knob):
    # Stage-2 trials that train as long as the fine-tune ("final") get longer with final.epochs.
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[hpo]\ntrials = 3\nepochs = 1", f"[hpo]\ntrials = 3\nepochs = {hpo_epochs}"))
    assert f"try --set {knob}" in _stuck_at_chance(load_config(path), "hpo")


@pytest.mark.parametrize("scope, hint", [("layer", True), ("lamp", False)])
def test_a_search_stuck_at_chance_after_layer_wise_pruning_suggests_another_allocation(tmp_path, scope, hint):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('scope = "layer"', f'scope = "{scope}"'))
    said = _stuck_at_chance(load_config(path), "activations")
    assert "stayed at chance level" in said
    assert ('sparsity.scope="lamp"' in said) == hint


def test_a_study_stored_before_a_config_key_existed_resumes_at_its_default(cfg):
    pipe = Pipeline(cfg, log=lambda msg: None)
    pipe.studies.prepare()
    study = pipe.studies.study("dense")
    stored = dict(study.user_attrs["config"])
    stored["sparsity"] = {k: v for k, v in stored["sparsity"].items() if k != "min_density"}
    study.set_user_attr("config", stored)  # as an older version wrote it
    assert Pipeline(cfg, log=lambda msg: None).studies.study("dense").study_name == study.study_name
    stored["sparsity"]["ratio"] = 0.5  # a key that exists and differs still refuses the study
    study.set_user_attr("config", stored)
    with pytest.raises(PipelineError, match=r"sparsity.ratio: stored 0.5, config 0.99"):
        Pipeline(cfg, log=lambda msg: None).studies.study("dense")


def test_a_search_trial_asked_for_after_the_budget_was_taken_fails_unrun(cfg):
    from safs_optuna.pipeline.bodies import BeyondBudget, search
    from safs_optuna.pipeline.status import BEYOND_BUDGET_ATTR

    pipe = Pipeline(cfg, log=lambda msg: None)
    pipe.studies.prepare()
    stage = next(s for s in pipe.stages if s.name == "hpo")
    study = pipe.studies.study(stage)
    # Three workers asked at once for the budget's three places (the queued start point is one).
    held = [study.ask() for _ in range(3)]
    assert [t.number for t in held] == [0, 1, 2]
    late = study.ask()
    with pytest.raises(BeyondBudget, match="budget of 3 trials was taken"):
        search(pipe, stage, late)
    study.tell(late, state=TrialState.FAIL)
    assert pipe.studies.status(stage).failed == 0  # nothing went wrong: no failure to show
    frozen = study.get_trials(deepcopy=False)[late.number]
    assert BEYOND_BUDGET_ATTR in frozen.user_attrs
    # A worker that dies frees its place: a trial asked for later takes it.
    study.tell(held[1], state=TrialState.FAIL)
    assert pipe.studies.places_before(study, stage, late.number + 1) == 2
    assert pipe.studies.status(stage).failed == 1


def test_compute_per_column_counts_the_stage_and_the_searches_before_it(cfg):
    from safs_optuna.pipeline.compute import Compute, column_compute, compute_line

    pipe = Pipeline(cfg, log=lambda msg: None)
    pipe.studies.prepare()

    def add(stage, epochs, images, state=TrialState.COMPLETE, once=True):
        # A "once" trial records the epochs it trained; a search trial's are its reported epochs.
        attrs = {"train_images": images, **({"trained_epochs": epochs} if once else {})}
        steps = {} if once else {e: 10.0 + e for e in range(epochs)}
        pipe.studies.study(stage).add_trial(optuna.trial.create_trial(
            state=state, value=20.0 if state == TrialState.COMPLETE else None, user_attrs=attrs,
            intermediate_values=steps, params={}, distributions={}))

    add("baseline", 6, 9000)
    add("activations", 3, 900, once=False)
    add("activations", 1, 900, state=TrialState.PRUNED, once=False)
    add("stage1", 6, 9000)
    columns = column_compute(pipe)
    assert columns["magnitude pruning"].epochs == 6 and columns["magnitude pruning"].images == 54000
    assert columns["stage 1"] == Compute(10, 6 * 9000 + 4 * 900, columns["stage 1"].seconds)
    assert columns["stage 1"].fine_tunes(columns["magnitude pruning"]) == pytest.approx((54000 + 3600) / 54000)
    assert columns["SAFS"].epochs == 4  # the final fine-tune has not run; the activation search has
    assert columns["total"].epochs == 16
    line = compute_line(pipe)
    assert "stage 1 1.1 fine-tunes, 10 epochs" in line and "total 2.1 fine-tunes, 16 epochs" in line


def test_relu_with_the_same_compute_trains_as_many_images_as_the_searches(tmp_path):
    from safs_optuna.pipeline.compute import searched_epochs

    off = Pipeline(load_config(write_config(tmp_path)), log=lambda msg: None)
    assert "baseline-long" not in [s.name for s in off.stages]  # off by default
    pipe = Pipeline(load_config(write_config(tmp_path), {"baseline_long": True}), log=lambda msg: None)
    long = next(s for s in pipe.stages if s.name == "baseline-long")
    assert long.kind == "once" and long.column == "ReLU, same compute" and set(long.needs) == {"hpo"}
    pipe.studies.prepare()

    def add(stage, epochs, images, state=TrialState.COMPLETE):
        attrs = {"train_images": images} if images else {}
        pipe.studies.study(stage).add_trial(optuna.trial.create_trial(
            state=state, value=20.0 if state == TrialState.COMPLETE else None, user_attrs=attrs,
            intermediate_values={e: 10.0 + e for e in range(epochs)}, params={}, distributions={}))

    assert searched_epochs(pipe, long, 9000) == 1  # nothing searched yet: at least one epoch
    add("activations", 3, 900)
    add("activations", 2, 900, state=TrialState.PRUNED)  # a stopped trial's epochs were spent too
    add("hpo", 5, 1800)
    add("hpo", 4, 1800, state=TrialState.FAIL)
    add("baseline", 6, 9000)  # not a search: not counted
    # (3 + 2) × 900 + (5 + 4) × 1800 = 20 700 images: 2.3 full epochs of 9000
    assert searched_epochs(pipe, long, 9000) == 2
    add("hpo", 10, 0)  # a trial stored before image counts: taken as full epochs
    assert searched_epochs(pipe, long, 9000) == 12
    # Its column costs its own fine-tune only: it waits for the searches but trains with none of them.
    from safs_optuna.pipeline.compute import column_compute

    pipe.studies.study("baseline-long").add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=20.0, user_attrs={"train_images": 9000, "trained_epochs": 12},
        params={}, distributions={}))
    columns = column_compute(pipe)
    assert columns["ReLU, same compute"].epochs == 12
    assert columns["SAFS"].epochs == 3 + 2 + 5 + 4 + 10  # the searches it uses (its own trial not run)
