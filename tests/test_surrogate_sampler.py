"""SurrogateSampler: proposals are a function of the storage (resume, workers), never repeat,
and follow the regression once trials finished."""

from __future__ import annotations

import threading

import numpy as np
import optuna
import pytest

from safs_optuna.samplers import SurrogateSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPS = ["relu", "tanh", "elu", "swish", "gelu", "x"]
SITES = ["conv1", "conv2", "fc1"]
WORTH = {op: i for i, op in enumerate(OPS)}


def objective(trial: optuna.Trial) -> float:
    # Additive over sites: what the regression can learn from neighbours.
    return float(sum(WORTH[trial.suggest_categorical(f"{s}.left", OPS)] * w for s, w in zip(SITES, (1, 1, 0.5))))


def _study(storage, seed: int = 0, **kwargs) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name="s", direction="maximize", load_if_exists=True,
                               sampler=SurrogateSampler(seed=seed, **kwargs))


def _params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


def test_a_resumed_study_proposes_what_an_uninterrupted_one_does(tmp_path):
    straight = _study(f"sqlite:///{tmp_path / 'a.db'}")
    straight.optimize(objective, n_trials=14)
    url = f"sqlite:///{tmp_path / 'b.db'}"
    _study(url).optimize(objective, n_trials=6)
    resumed = _study(url)  # a new sampler instance, as in a new process
    resumed.optimize(objective, n_trials=8)
    assert _params(resumed) == _params(straight)


def test_the_seed_matters():
    a, b = _study(None, seed=0), _study(None, seed=1)
    a.optimize(objective, n_trials=6)
    b.optimize(objective, n_trials=6)
    assert _params(a) != _params(b)


def test_overlapping_asks_never_duplicate(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    a, b = _study(url), _study(url)
    for _ in range(15):
        ta = a.ask()
        for s in SITES:
            ta.suggest_categorical(f"{s}.left", OPS)
        tb = b.ask()  # asked while ta runs
        objective(tb)
        a.tell(ta, objective(ta))
        b.tell(tb, objective(tb))
    keys = [tuple(sorted(p.items())) for p in _params(a)]
    assert len(keys) == 30 and len(set(keys)) == 30


def test_threads_on_one_storage_never_duplicate(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    _study(url).optimize(objective, n_trials=1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _study(url).optimize(objective, n_trials=8)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    keys = [tuple(sorted(p.items())) for p in _params(_study(url))]
    assert len(keys) == 33 and len(set(keys)) == len(keys)


def test_workers_in_lockstep_do_not_clash_again_on_the_next_best(tmp_path, monkeypatch):
    # Two workers propose the same best prediction at the same moment, in a space small enough
    # that both pools hold every unseen configuration. Each look at the claims waits for the
    # other worker, so both see the clash every time; a retry that took the next best
    # prediction would clash again on every try and end in a duplicate.
    from safs_optuna.samplers import claims
    from safs_optuna.samplers.surrogate import _Proposer

    def describe(params: dict) -> list[float]:  # distinct per configuration: no ties to break
        return [sum(OPS.index(params[f"{s}.left"]) * 6 ** i for i, s in enumerate(SITES)) / 216]

    sampler = SurrogateSampler(seed=0, n_startup_trials=2, describe=describe)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'e.db'}", direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=8)
    storage = study._storage
    pending = [storage.get_trial(study.ask()._trial_id) for _ in range(2)]
    trials = claims.all_trials(study)
    finished = [t for t in trials if t.state in claims.FINISHED]
    space = {f"{s}.left": optuna.distributions.CategoricalDistribution(OPS) for s in SITES}
    proposer = _Proposer(sampler, space, finished, claims.value_score(True))

    barrier = threading.Barrier(2, timeout=10)
    real = claims.all_trials

    def in_lockstep(study):
        try:
            barrier.wait()  # both claims are written before either reads
            seen = real(study)
            barrier.wait()  # both have read before either writes its next claim
        except threading.BrokenBarrierError:  # the other one is done: nothing left to sync
            seen = real(study)
        return seen

    monkeypatch.setattr(claims, "all_trials", in_lockstep)
    proposals: dict[int, dict] = {}

    def claim(i: int) -> None:
        try:  # the same first stream: two workers at the same position asking at once
            proposals[i] = claims.claim_unseen(study, pending[i], trials, proposer, claims.default_key,
                                               np.random.default_rng(7), 0, len(finished))
        finally:
            barrier.abort()  # release the other worker if it still waits

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(proposals) == 2 and proposals[0] != proposals[1]


def test_a_small_space_is_exhausted_before_anything_repeats():
    study = optuna.create_study(direction="maximize", sampler=SurrogateSampler(seed=0, n_startup_trials=2))
    study.optimize(lambda t: WORTH[t.suggest_categorical("a", OPS[:3])] + WORTH[t.suggest_categorical("b", OPS[:3])],
                   n_trials=9)
    assert len({tuple(sorted(p.items())) for p in _params(study)}) == 9


def test_after_startup_it_climbs_faster_than_random_search():
    def best(sampler) -> float:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=20)
        return study.best_value

    surrogate = [best(SurrogateSampler(seed=s, n_startup_trials=5)) for s in range(5)]
    random = [best(optuna.samplers.RandomSampler(seed=s)) for s in range(5)]
    top = 12.5  # x at every site
    assert np.mean(surrogate) > np.mean(random)
    assert max(surrogate) == top


def test_describe_steers_the_proposal_and_a_missing_number_is_harmless():
    # A describe that knows the objective (and fails, as NaN, on one operator) leads the
    # regression to the optimum of a space too big to find by chance in 12 trials.
    ops = [f"op{i}" for i in range(12)]
    sites = [f"s{i}" for i in range(5)]

    def value(params) -> float:
        return float(sum(int(params[f"{s}.left"][2:]) for s in sites))

    def describe(params) -> list[float]:
        return [np.nan if "op3" in params.values() else value(params)]

    def obj(trial):
        return value({f"{s}.left": trial.suggest_categorical(f"{s}.left", ops) for s in sites})

    def best(sampler) -> float:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(obj, n_trials=12)
        return study.best_value

    with_numbers = best(SurrogateSampler(seed=0, n_startup_trials=4, describe=describe))
    without = best(SurrogateSampler(seed=0, n_startup_trials=4))
    assert with_numbers > without
    assert with_numbers >= 0.8 * 55


def test_score_orders_trials_and_pruned_trials_rank_last():
    seen = []

    def score(t):
        seen.append(t.number)
        return -t.value if t.state == optuna.trial.TrialState.COMPLETE else -np.inf

    study = optuna.create_study(direction="maximize", sampler=SurrogateSampler(seed=0, n_startup_trials=2, score=score))
    for i in range(6):
        trial = study.ask()
        v = objective(trial)
        if i == 1:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, v)
    assert seen  # the regression ranked the finished trials with the given score


@pytest.mark.parametrize("kwargs, word", [({"k": 0}, "k"), ({"pool_size": 0}, "pool_size"),
                                          ({"n_startup_trials": -1}, "n_startup_trials"), ({"k": 1.5}, "k")])
def test_bad_arguments_name_themselves(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SurrogateSampler(**kwargs)


def test_docstring_example_runs():
    # The class docstring's example, as written there.
    study = optuna.create_study(direction="maximize", sampler=SurrogateSampler(seed=0))

    def obj(trial):
        a = trial.suggest_categorical("site.left", ["relu", "tanh", "elu", "swish"])
        b = trial.suggest_categorical("site2.left", ["relu", "tanh", "elu", "swish"])
        return {"relu": 1, "tanh": 2, "elu": 3, "swish": 4}[a] + (b == "elu")

    study.optimize(obj, n_trials=10)
    assert study.best_value == 5


@pytest.mark.slow
def test_the_pipeline_searches_with_it_and_features_on_two_workers_and_a_rerun_adds_nothing(tmp_path):
    import subprocess
    import sys

    from safs_optuna.config import load_config

    from ._tiny import write_config

    path = write_config(tmp_path, trials=6)
    cmd = [sys.executable, "-m", "safs_optuna.cli", "run", str(path), "--workers", "2", "--threads", "1",
           "--set", 'activations.sampler="surrogate"', "--set", 'activations.surrogate_features=["response_gain"]']
    for _ in range(2):  # the second run finds every stage done
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config(path)
    trials = optuna.load_study(study_name="tiny/activations", storage=cfg.storage).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 6
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 6
    assert all("response_gain" in t.user_attrs["zero_cost"] for t in finished)
