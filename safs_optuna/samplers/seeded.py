"""A sampler wrapper whose randomness is a function of what the storage holds."""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from safs_optuna import optuna_private

__all__ = ["PositionSeededSampler", "position_seed"]


def position_seed(seed: int, *parts: int) -> int:
    """A 32-bit seed mixed from ``seed`` and integers, the same in every process."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "little")


class PositionSeededSampler(BaseSampler):
    """Sampler wrapper that makes any seeded sampler resume a study exactly.

    Optuna's samplers keep their random state in the process, so a study resumed in a new
    process (or continued by another worker) draws different parameters than one that never
    stopped. This wrapper builds a fresh sampler with ``factory(s)`` for each trial, where the
    seed ``s`` is mixed from ``seed``, the number of finished (complete or pruned) trials and the
    number of other trials in flight — numbers every process reads alike from the storage — so an
    interrupted single-worker study proposes exactly the trials an uninterrupted one would, and a
    trial that starts while another one runs gets a seed of its own.

    Wrap samplers whose only cross-trial state besides the stored trials is their random
    generator, such as :class:`~optuna.samplers.RandomSampler` and
    :class:`~optuna.samplers.TPESampler`. A sampler that keeps other state in the process
    (:class:`~optuna.samplers.CmaEsSampler`'s restarts, for one) gains nothing from it.

    Example:

        .. code-block:: python

            import optuna
            from safs_optuna.samplers import PositionSeededSampler


            def objective(trial):
                x = trial.suggest_float("x", -10, 10)
                return (x - 2) ** 2


            def make_sampler():
                return PositionSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s), seed=0)


            storage = optuna.storages.InMemoryStorage()
            study = optuna.create_study(storage=storage, study_name="x", sampler=make_sampler())
            study.optimize(objective, n_trials=5)
            # A new sampler instance, as in a new process, continues where the first one stopped:
            study = optuna.load_study(storage=storage, study_name="x", sampler=make_sampler())
            study.optimize(objective, n_trials=5)

    Args:
        factory:
            Builds the sampler for one trial from a 32-bit seed, e.g.
            ``lambda s: optuna.samplers.TPESampler(seed=s)``.
        seed:
            Seed of the whole study; studies with different seeds draw different trials.
    """

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int = 0) -> None:
        if not callable(factory):
            raise TypeError(
                f"factory must be a callable that builds a sampler from a seed, got {type(factory).__name__}"
            )
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self._factory = factory
        self._seed = int(seed)
        self._inner: dict[int, BaseSampler] = {}

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        trial_id = optuna_private.trial_id(trial)
        inner = self._inner.get(trial_id)
        if inner is None:  # a trial that reached us without before_trial (e.g. study.tell paths)
            inner = self._factory(position_seed(self._seed, trial.number))
            self._inner[trial_id] = inner
        return inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        in_flight = sum(
            t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number != trial.number
            for t in trials
        )
        inner = self._factory(position_seed(self._seed, finished, in_flight))
        self._inner[optuna_private.trial_id(trial)] = inner
        inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        inner = self._inner.pop(optuna_private.trial_id(trial), None)
        if inner is not None:
            inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # Seeds are derived from the storage on purpose; there is no process state to reseed.
        pass
