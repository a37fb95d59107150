"""Tests for safs_optuna.pruners.DivergencePruner, with real (in-memory and SQLite) studies."""

from __future__ import annotations

import math
from typing import Sequence

import optuna
import pytest
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner
from optuna.trial import TrialState

from safs_optuna.pruners import DivergencePruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_trial(
    study: optuna.Study,
    values: Sequence[float],
    attrs: dict | None = None,
) -> tuple[bool, optuna.trial.FrozenTrial]:
    """Report `values` as epochs 0.., asking the pruner after each; returns (pruned, trial)."""
    trial = study.ask()
    for key, value in (attrs or {}).items():
        trial.set_user_attr(key, value)
    pruned = False
    for step, value in enumerate(values):
        trial.report(value, step)
        if trial.should_prune():
            pruned = True
            break
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, values[-1] if math.isfinite(values[-1]) else 0.0)
    return pruned, study.trials[trial.number]


def maximize(pruner: BasePruner, storage: str | None = None) -> optuna.Study:
    return optuna.create_study(direction="maximize", pruner=pruner, storage=storage)


def test_does_not_prune_a_healthy_trial() -> None:
    pruner = DivergencePruner(chance_level=10.0)
    pruned, trial = run_trial(
        maximize(pruner), [10.0, 30.0, 11.0, 60.0], {"chance_accuracy": 10.0}
    )
    assert not pruned and trial.state == TrialState.COMPLETE
    assert "pruned_reason" not in trial.user_attrs
    assert pruner.last_reason is None


def test_prunes_a_chance_level_streak_with_a_readable_reason() -> None:
    pruned, trial = run_trial(
        maximize(DivergencePruner()), [40.0, 10.0, 10.0, 80.0], {"chance_accuracy": 10.0}
    )
    assert pruned
    assert list(trial.intermediate_values) == [0, 1, 2]  # pruned at the second chance epoch
    assert trial.user_attrs["pruned_reason"] == (
        "validation accuracy 10.0% stayed at chance level (10.0%) for 2 epochs"
    )


@pytest.mark.parametrize(
    ("kwargs", "values", "attrs", "pruned"),
    [
        ({}, [10.9, 10.2], {"chance_accuracy": 10.0}, True),  # within the 1-point margin
        ({}, [11.5, 10.0], {"chance_accuracy": 10.0}, False),  # 11.5 is above the margin
        ({"chance_margin": 2.0}, [11.5, 10.0], {"chance_accuracy": 10.0}, True),
        ({}, [10.0], {"chance_accuracy": 10.0}, False),  # one epoch is not a streak yet
        ({"chance_epochs": 1}, [10.0], {"chance_accuracy": 10.0}, True),
        ({"chance_epochs": 3}, [10.0, 10.0, 30.0], {"chance_accuracy": 10.0}, False),
        ({}, [10.0, 10.0], {}, False),  # no chance level known: rule skipped
        ({"chance_level": 25.0}, [25.0, 24.0], {}, True),
        ({"chance_level": 25.0}, [12.0, 12.0], {"chance_accuracy": 10.0}, True),  # arg wins
        ({}, [float("nan"), float("nan")], {"chance_accuracy": 10.0}, False),
    ],
)
def test_chance_rule(kwargs: dict, values: list, attrs: dict, pruned: bool) -> None:
    assert run_trial(maximize(DivergencePruner(**kwargs)), values, attrs)[0] is pruned


def test_chance_rule_only_applies_to_maximized_accuracy() -> None:
    study = optuna.create_study(direction="minimize", pruner=DivergencePruner(chance_level=10.0))
    assert not run_trial(study, [5.0, 5.0, 5.0])[0]


def test_delegates_to_median_pruner_and_records_its_decision() -> None:
    inner = MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = maximize(DivergencePruner(inner))
    for _ in range(2):
        assert not run_trial(study, [50.0, 60.0, 70.0], {"chance_accuracy": 10.0})[0]
    good, _ = run_trial(study, [55.0, 65.0, 75.0], {"chance_accuracy": 10.0})
    bad, trial = run_trial(study, [30.0, 40.0, 45.0], {"chance_accuracy": 10.0})
    assert (good, bad) == (False, True)
    assert list(trial.intermediate_values) == [0, 1]  # MedianPruner warms up for step 0
    assert trial.user_attrs["pruned_reason"] == (
        "pruned by MedianPruner at step 1 (intermediate value 40)"
    )
    # The decision is the MedianPruner's: without it, the same trial is not pruned.
    assert bool(inner.prune(study, trial)) is True
    assert DivergencePruner().prune(study, trial) is False


def test_never_prunes_healthy_trials_without_inner() -> None:
    study = maximize(DivergencePruner())
    for values in ([90.0, 91.0], [20.0, 15.0], [50.0, 40.0]):
        assert not run_trial(study, values, {"chance_accuracy": 10.0})[0]


def test_reason_is_stored_in_sqlite(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = maximize(DivergencePruner(), storage=storage)
    run_trial(study, [10.0, 10.0], {"chance_accuracy": 10.0})
    reloaded = optuna.load_study(study_name=study.study_name, storage=storage)
    reasons = [t.user_attrs["pruned_reason"] for t in reloaded.trials]
    assert reasons[0].startswith("validation accuracy 10.0% stayed at chance level")


def test_wraps_hyperband_inside_study_optimize() -> None:
    inner = HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
    pruner = DivergencePruner(inner)
    study = optuna.create_study(
        study_name="hyperband-wrapped",  # Hyperband's brackets hash the study name
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
        pruner=pruner,
    )

    def objective(trial: optuna.Trial) -> float:
        quality = trial.suggest_float("quality", 0.0, 1.0)
        trial.set_user_attr("chance_accuracy", 10.0)
        accuracy = 0.0
        for epoch in range(9):
            accuracy = 10.0 if quality < 0.05 else 10.0 + 80.0 * quality * (epoch + 1) / 9
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    study.optimize(objective, n_trials=40)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    reasons = [t.user_attrs["pruned_reason"] for t in pruned]
    assert any(r.startswith("pruned by HyperbandPruner at step") for r in reasons)
    assert len(inner._pruners) > 0  # Hyperband initialised its brackets through the wrapper
    assert all(t.state == TrialState.PRUNED for t in study.trials if t.params["quality"] < 0.05)
    assert len(pruned) < len(study.trials)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"wrapped_pruner": "median"}, TypeError, "wrapped_pruner must be an optuna.pruners.BasePruner or None, got str"),
        ({"chance_epochs": 0}, ValueError, "chance_epochs must be an integer >= 1, got 0"),
        ({"chance_epochs": True}, ValueError, "chance_epochs must be an integer >= 1, got True"),
        ({"chance_epochs": 1.5}, ValueError, "chance_epochs must be an integer >= 1, got 1.5"),
        ({"chance_margin": -1.0}, ValueError, "chance_margin must be a finite number >= 0"),
        ({"chance_margin": float("inf")}, ValueError, "chance_margin must be a finite number"),
        ({"chance_level": 150.0}, ValueError, "chance_level must be None or a percentage"),
        ({"chance_level": float("nan")}, ValueError, "in [0, 100], got nan"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        DivergencePruner(**kwargs)
    assert message in str(info.value)


def test_exposes_the_wrapped_pruner() -> None:
    wrapped = MedianPruner()
    assert DivergencePruner(wrapped).wrapped_pruner is wrapped
    assert DivergencePruner(wrapped_pruner=wrapped).wrapped_pruner is wrapped
    assert DivergencePruner().wrapped_pruner is None


def test_inner_is_a_deprecated_name_of_wrapped_pruner() -> None:
    wrapped = MedianPruner()
    with pytest.warns(FutureWarning, match=r"DivergencePruner\(inner=...\) is deprecated; use .*wrapped_pruner"):
        pruner = DivergencePruner(inner=wrapped, chance_epochs=3)
    assert pruner.wrapped_pruner is wrapped
    with pytest.warns(FutureWarning, match="DivergencePruner.inner is deprecated"):
        assert pruner.inner is wrapped
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match="wrapped_pruner must be .* got str"):
        DivergencePruner(inner="median")
    with pytest.raises(TypeError, match="pass the wrapped pruner once"):
        DivergencePruner(wrapped, inner=wrapped)
