"""Optuna pruners (early stopping of trials) for activation search on sparse networks."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from . import optuna_private
from .ranking import CHANCE_ATTR, VAL_SIZE_ATTR, behind_margin, curve_score_of, trial_score

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["DivergencePruner", "HalvingPruner", "IncumbentPruner"]

REASON_ATTR = "pruned_reason"
"""User attr holding the sentence that says why a trial was pruned (shown by optuna-dashboard)."""
_DEFAULT_VAL_SIZE = 1000
_UNSET: Any = object()  # tells an omitted deprecated argument from an explicit None


class DivergencePruner(BasePruner):
    """Pruner that stops trials stuck at chance level, then defers to another pruner.

    Exotic activations at 99 % sparsity often leave the network guessing (validation accuracy
    at chance level). Such trials are pruned at once, whatever the wrapped pruner thinks; every
    other decision is the wrapped pruner's. The reason for each prune, whichever rule made it,
    is stored on the trial as the user attr ``"pruned_reason"`` (a sentence, shown by
    optuna-dashboard) and kept in :attr:`last_reason`.

    A trial is pruned when, in this order:

    1. the study maximizes and the last ``chance_epochs`` intermediate values are all at most
       the chance level plus ``chance_margin`` (the level is ``chance_level`` if given, else
       the trial's user attr ``"chance_accuracy"``, which :func:`safs_optuna.training.fit`
       sets to the validation split's majority-class accuracy; with neither, this rule is
       skipped);
    2. ``wrapped_pruner`` prunes it.

    A NaN or infinite loss needs no pruner: ``fit`` raises
    :class:`~safs_optuna.training.DivergedError` at the batch where it happens, and the
    pipeline records that trial as pruned with the reason.

    Intermediate values are expected in percent, as ``fit`` reports them.

    .. note::
        Wrapping :class:`~optuna.pruners.HyperbandPruner` works as it does in
        :class:`~optuna.pruners.PatientPruner`: Hyperband's ``prune`` builds its per-bracket
        view of the study itself. Optuna only hands *samplers* that per-bracket view when the
        study's pruner *is* a ``HyperbandPruner``, so with this wrapper the sampler learns from
        all trials instead of those of the trial's bracket.

    Example:

        .. code-block:: python

            import optuna
            from safs_optuna.pruners import DivergencePruner


            def objective(trial):
                lr = trial.suggest_float("lr", 1e-4, 10.0, log=True)
                trial.set_user_attr("chance_accuracy", 10.0)  # 10 balanced classes
                accuracy = 10.0
                for epoch in range(10):
                    accuracy = 10.0 if lr > 0.1 else 50.0 + 4 * epoch
                    trial.report(accuracy, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(trial.user_attrs.get("pruned_reason"))
                return accuracy


            study = optuna.create_study(
                direction="maximize",
                pruner=DivergencePruner(optuna.pruners.HyperbandPruner(max_resource=10)),
            )
            study.optimize(objective, n_trials=20)
            for t in study.trials:
                print(t.number, t.state.name, t.user_attrs.get("pruned_reason", ""))

    Args:
        wrapped_pruner:
            The pruner to defer to when the chance rule does not apply; :obj:`None` never prunes
            otherwise. (Named as in :class:`~optuna.pruners.PatientPruner`; the earlier keyword
            ``inner`` still works but is deprecated and warns.)
        chance_epochs:
            How many of the last reported values must be at chance level; >= 1.
        chance_margin:
            Values up to the chance level plus this many percentage points count as chance
            level; >= 0.
        chance_level:
            Chance-level accuracy in percent, in [0, 100]; :obj:`None` reads the trial's user
            attr ``"chance_accuracy"``.
    """

    def __init__(
        self,
        wrapped_pruner: BasePruner | None = None,
        chance_epochs: int = 2,
        chance_margin: float = 1.0,
        chance_level: float | None = None,
        *,
        inner: BasePruner | None = _UNSET,
    ) -> None:
        if inner is not _UNSET:
            if wrapped_pruner is not None:
                raise TypeError("pass the wrapped pruner once, as wrapped_pruner (inner is its old name)")
            warnings.warn(
                "DivergencePruner(inner=...) is deprecated; use DivergencePruner(wrapped_pruner=...)",
                FutureWarning,
                stacklevel=2,
            )
            wrapped_pruner = inner
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise TypeError(
                "wrapped_pruner must be an optuna.pruners.BasePruner or None, "
                f"got {type(wrapped_pruner).__name__}"
            )
        if (
            not isinstance(chance_epochs, numbers.Integral)
            or isinstance(chance_epochs, bool)
            or chance_epochs < 1
        ):
            raise ValueError(f"chance_epochs must be an integer >= 1, got {chance_epochs!r}")
        if not _is_finite(chance_margin) or chance_margin < 0:
            raise ValueError(f"chance_margin must be a finite number >= 0, got {chance_margin!r}")
        valid_level = _is_finite(chance_level) and 0 <= chance_level <= 100
        if chance_level is not None and not valid_level:
            raise ValueError(
                f"chance_level must be None or a percentage in [0, 100], got {chance_level!r}"
            )
        self._wrapped_pruner = wrapped_pruner
        self._chance_epochs = int(chance_epochs)
        self._chance_margin = float(chance_margin)
        self._chance_level = None if chance_level is None else float(chance_level)
        # Informational only: with study.optimize(n_jobs > 1) threads share this attribute;
        # the per-trial record is the "pruned_reason" user attr.
        self.last_reason: str | None = None

    @property
    def wrapped_pruner(self) -> BasePruner | None:
        """The pruner deferred to when the chance rule does not apply."""
        return self._wrapped_pruner

    @property
    def inner(self) -> BasePruner | None:
        """Deprecated alias of :attr:`wrapped_pruner`."""
        warnings.warn(
            "DivergencePruner.inner is deprecated; use DivergencePruner.wrapped_pruner",
            FutureWarning,
            stacklevel=2,
        )
        return self._wrapped_pruner

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        reason = self._chance(study, trial) or self._wrapped_reason(study, trial)
        self.last_reason = reason
        if reason is None:
            return False
        if trial.state == TrialState.RUNNING:
            # Through the storage, as a FrozenTrial cannot write; the dashboard shows user attrs.
            study._storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
        return True

    def _chance(self, study: Study, trial: FrozenTrial) -> str | None:
        directions = study.directions
        if len(directions) != 1 or directions[0] != StudyDirection.MAXIMIZE:
            return None  # "at chance level" means low accuracy; no meaning otherwise
        level = self._chance_level
        if level is None:
            level = _as_float(trial.user_attrs.get(CHANCE_ATTR))
            if level is None or not math.isfinite(level):
                return None
        values = trial.intermediate_values
        steps = sorted(values)[-self._chance_epochs :]
        if len(steps) < self._chance_epochs:
            return None
        recent = [values[s] for s in steps]
        if not all(v <= level + self._chance_margin for v in recent):
            return None
        epochs = f"{self._chance_epochs} epoch" + ("" if self._chance_epochs == 1 else "s")
        return (
            f"validation accuracy {_percent(max(recent))} stayed at chance level "
            f"({_percent(level)}) for {epochs}"
        )

    def _wrapped_reason(self, study: Study, trial: FrozenTrial) -> str | None:
        if self._wrapped_pruner is None or not self._wrapped_pruner.prune(study, trial):
            return None
        step = trial.last_step
        value = trial.intermediate_values.get(step) if step is not None else None
        detail = f" at step {step} (intermediate value {value:g})" if value is not None else ""
        return f"pruned by {type(self._wrapped_pruner).__name__}{detail}"


class IncumbentPruner(BasePruner):
    """Pruner that stops a trial whose learning curve is clearly behind the one it must beat.

    Made for searches that accept or reject each candidate against one earlier trial, such as
    :class:`~safs_optuna.samplers.LAHCSampler`: a candidate that is clearly behind the trial it
    would have to reach is rejected whether it is stopped now or later, so stopping it only saves
    epochs. It never uses an absolute threshold: at 99 % sparsity every network may sit at chance
    level for a while, and a candidate at chance is never stopped while the trial it is compared
    with is at chance too.

    After each reported epoch ``e`` the trial's best validation accuracy so far is compared with
    the reference trial's best over its epochs up to ``e`` (its last epoch if it has fewer). The
    trial is pruned when it trails by more than :func:`safs_optuna.ranking.behind_margin`
    (``BEHIND_Z`` standard errors of the difference of two accuracies measured on the validation
    split, whose size the trial records as the user attr ``"val_size"``; without it, 1 000
    images are assumed). The reason is stored as the user attr ``"pruned_reason"``.

    The reference is ``reference(study, trial)`` when given, else the study's sampler's
    ``threshold_trial(study, trial)`` when it has one (LAHC), else the best (by
    :func:`safs_optuna.ranking.trial_score`) of the completed trials numbered below ``trial``.
    With no reference (the first trial of a study) nothing is pruned.

    Example:

        .. code-block:: python

            import optuna
            from safs_optuna.pruners import IncumbentPruner
            from safs_optuna.samplers import LAHCSampler


            def objective(trial):
                slope = trial.suggest_categorical("x.left", ["relu", "tanh", "gelu"])
                rate = {"relu": 1.0, "tanh": 8.0, "gelu": 4.0}[slope]
                accuracy = 10.0
                for epoch in range(6):
                    accuracy = min(90.0, 10.0 + rate * epoch)
                    trial.report(accuracy, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                return accuracy


            study = optuna.create_study(
                direction="maximize", sampler=LAHCSampler(seed=0), pruner=IncumbentPruner()
            )
            study.optimize(objective, n_trials=3)

    Args:
        reference:
            Returns the finished trial to compare ``trial`` with, or :obj:`None`.
    """

    def __init__(
        self, reference: Callable[[Study, FrozenTrial], FrozenTrial | None] | None = None
    ) -> None:
        if reference is not None and not callable(reference):
            raise TypeError(f"reference must be callable or None, got {type(reference).__name__}")
        self._reference = reference

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        ref = self._reference_of(study, trial)
        if ref is None or ref.number == trial.number or not ref.intermediate_values:
            return False
        mine = max(v for s, v in trial.intermediate_values.items() if s <= step)
        steps = [s for s in ref.intermediate_values if s <= step] or list(ref.intermediate_values)
        theirs = max(ref.intermediate_values[s] for s in steps)
        n = int(trial.user_attrs.get(VAL_SIZE_ATTR) or _DEFAULT_VAL_SIZE)
        margin = behind_margin(mine, theirs, n)
        if theirs - mine <= margin:
            return False
        reason = (
            f"validation accuracy {_percent(mine)} by epoch {step + 1} is {theirs - mine:.1f} points "
            f"behind trial {ref.number} ({_percent(theirs)}), more than the {margin:.1f}-point noise "
            f"margin: it could not be accepted"
        )
        if trial.state == TrialState.RUNNING:
            study._storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
        return True

    def _reference_of(self, study: Study, trial: FrozenTrial) -> FrozenTrial | None:
        if self._reference is not None:
            return self._reference(study, trial)
        threshold = getattr(study.sampler, "threshold_trial", None)
        if threshold is not None:
            return threshold(study, trial)
        earlier = [t for t in study._storage.get_all_trials(study._study_id, deepcopy=False,
                                                            states=(TrialState.COMPLETE,))
                   if t.number < trial.number]
        return max(earlier, key=trial_score) if earlier else None


class HalvingPruner(BasePruner):
    """Successive halving on the ranking score: a cheap first look at every candidate.

    After a trial's ``r``-th epoch, for each ``r`` in ``rungs``, it is compared with every other
    trial of the study that has reported at least ``r`` epochs (running, stopped or completed;
    failed trials excepted), each cut to its first ``r`` epochs and scored by
    :func:`safs_optuna.ranking.curve_score_of` — validation accuracy, and validation loss where
    accuracy is at chance level, so candidates that all still guess are told apart. The trial goes
    on only if it is among the best ``1 / reduction_factor`` of them (at least the best one).
    With the defaults every candidate trains 1 epoch, the best third go on to 3, and the best
    third of those train in full: about a third of the epochs of training everyone in full.

    A rung stops nothing until ``min_trials`` trials (the one asked about included) have reached
    it, so the first candidates always go on and the rung has something to compare with. It works
    with any sampler; trials are compared as they arrive, as in asynchronous successive halving,
    so workers never wait for each other.

    Args:
        rungs: Epoch counts (from 1, increasing) at which trials are compared.
        reduction_factor: Keep the best ``1 / reduction_factor`` at each rung (at least 2).
        min_trials: Trials that must have reached a rung before it stops any (at least 1).
    """

    def __init__(self, rungs: tuple[int, ...] = (1, 3), reduction_factor: int = 3,
                 min_trials: int = 3) -> None:
        rungs = tuple(rungs)
        if not rungs or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in rungs) \
                or list(rungs) != sorted(set(rungs)):
            raise ValueError(f"rungs must be increasing epoch counts of at least 1, got {rungs!r}")
        if not isinstance(reduction_factor, int) or reduction_factor < 2:
            raise ValueError(f"reduction_factor must be an integer of at least 2, got {reduction_factor!r}")
        if not isinstance(min_trials, int) or min_trials < 1:
            raise ValueError(f"min_trials must be an integer of at least 1, got {min_trials!r}")
        self.rungs, self.reduction_factor, self.min_trials = rungs, reduction_factor, min_trials

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step + 1 not in self.rungs:
            return False
        rung = step + 1
        reached = [t for t in study.get_trials(deepcopy=False)
                   if t.number != trial.number and t.state != TrialState.FAIL
                   and sum(1 for s in t.intermediate_values if s < rung) >= rung]
        n = len(reached) + 1
        if n < self.min_trials:
            return False
        mine = curve_score_of(trial, rung)
        ahead = sum(1 for t in reached if curve_score_of(t, rung) > mine)
        keep = max(1, n // self.reduction_factor)
        if ahead < keep:
            return False
        reason = (f"after epoch {rung} its score ranks {ahead + 1} of the {n} trials that reached "
                  f"epoch {rung}; only the best {keep} go on")
        if trial.state == TrialState.RUNNING:
            optuna_private.storage_of(study).set_trial_user_attr(optuna_private.trial_id(trial),
                                                                  REASON_ATTR, reason)
        return True


def _is_finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _as_float(value: Any) -> float | None:
    """A user attr as a float (NaN survives JSON storages as float or as "nan"), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _percent(value: float) -> str:
    return f"{value:.1f}%"

