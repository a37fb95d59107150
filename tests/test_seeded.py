"""PositionSeededSampler: a resumed study (a new process) proposes what an uninterrupted one does."""

from __future__ import annotations

import optuna
import pytest

from safs_optuna.samplers.seeded import PositionSeededSampler, position_seed

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    n = trial.suggest_int("n", 1, 8)
    return -(x - 1) ** 2 + {"a": 0.0, "b": 1.0, "c": 2.0}[kind] - abs(n - 3)


def _tpe(seed: int) -> PositionSeededSampler:
    # Few startup trials, so that the later proposals depend on the stored history too.
    return PositionSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=2), seed)


def _params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


def _run(url, sampler: optuna.samplers.BaseSampler, n: int) -> optuna.Study:
    study = optuna.create_study(storage=url, study_name="s", sampler=sampler, direction="maximize",
                                load_if_exists=True)
    study.optimize(_objective, n_trials=n)
    return study


def test_resumed_study_proposes_the_same_trials(tmp_path):
    straight = _run(f"sqlite:///{tmp_path / 'a.db'}", _tpe(0), 6)
    url = f"sqlite:///{tmp_path / 'b.db'}"
    _run(url, _tpe(0), 3)
    resumed = _run(url, _tpe(0), 3)  # a fresh sampler instance: what a new process has
    assert len(resumed.trials) == 6
    assert _params(resumed) == _params(straight)
    assert len({t.params["x"] for t in straight.trials}) == 6  # not one point proposed six times


def test_plain_seeded_sampler_would_not_resume_identically():
    # The control: without the wrapper the resumed process replays the seed's first draws.
    random = lambda: optuna.samplers.RandomSampler(seed=0)  # noqa: E731
    wrapped = lambda: PositionSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), 0)  # noqa: E731
    for make, same in ((random, False), (wrapped, True)):
        straight = _run(optuna.storages.InMemoryStorage(), make(), 4)
        storage = optuna.storages.InMemoryStorage()
        _run(storage, make(), 2)
        assert (_params(_run(storage, make(), 2)) == _params(straight)) is same


def test_different_seeds_give_different_params(tmp_path):
    a = _run(f"sqlite:///{tmp_path / 'a.db'}", _tpe(0), 3)
    b = _run(f"sqlite:///{tmp_path / 'b.db'}", _tpe(1), 3)
    assert all(pa["x"] != pb["x"] for pa, pb in zip(_params(a), _params(b)))


def test_in_flight_trials_change_the_seed():
    # Two workers asking at once must not draw the same point: the second sees the first in flight.
    factory = lambda s: optuna.samplers.RandomSampler(seed=s)  # noqa: E731
    study = optuna.create_study(sampler=PositionSeededSampler(factory))
    first, second = study.ask(), study.ask()
    assert first.suggest_float("x", 0, 1) != second.suggest_float("x", 0, 1)


def test_a_pruned_trial_counts_as_finished():
    factory = lambda s: optuna.samplers.RandomSampler(seed=s)  # noqa: E731
    study = optuna.create_study(sampler=PositionSeededSampler(factory, seed=3))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    x = study.ask().suggest_float("x", 0, 1)
    expected = optuna.samplers.RandomSampler(seed=position_seed(3, 1, 0)).sample_independent(
        study, study.trials[1], "x", optuna.distributions.FloatDistribution(0, 1))
    assert x == expected


def test_position_seed_is_stable_across_processes():
    # A regression value: blake2b, not Python's salted hash(), so every process agrees.
    assert position_seed(0, 3, 0) == 408485306
    assert 0 <= position_seed(123456789, 10**12) < 2**32


@pytest.mark.parametrize("other", [(1, 3, 0), (0, 0, 3), (0, 30), (0, 3), (0, 3, 0, 0), (0, 2, 1)])
def test_position_seed_differs_for_different_inputs(other):
    assert position_seed(*other) != position_seed(0, 3, 0)


def test_exported_and_its_docstring_example_resumes_identically():
    import inspect
    import re
    import textwrap

    import safs_optuna
    import safs_optuna.samplers

    assert safs_optuna.PositionSeededSampler is safs_optuna.samplers.PositionSeededSampler is PositionSeededSampler
    doc = inspect.getdoc(PositionSeededSampler)
    code = textwrap.dedent(re.search(r"\.\. code-block:: python\n(.*?)\n\S", doc, re.S).group(1))
    namespace: dict = {}
    exec(compile(code, "PositionSeededSampler example", "exec"), namespace)
    resumed = [t.params for t in namespace["study"].trials]
    straight = optuna.create_study(sampler=namespace["make_sampler"]())
    straight.optimize(namespace["objective"], n_trials=10)
    assert len(resumed) == 10 and resumed == [t.params for t in straight.trials]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"factory": "tpe"}, "factory must be a callable that builds a sampler from a seed, got str"),
    ({"factory": optuna.samplers.RandomSampler, "seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"factory": optuna.samplers.RandomSampler, "seed": True}, "seed must be an integer, got True"),
])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(TypeError, match=message):
        PositionSeededSampler(**kwargs)
