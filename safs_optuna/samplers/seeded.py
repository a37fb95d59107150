"""A sampler wrapper whose randomness is a function of what the storage holds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


def position_seed(seed: int, *parts: int) -> int:
    """A 32-bit seed mixed from ``seed`` and integers, the same in every process."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "little")


class PositionSeededSampler(BaseSampler):
    """Re-seed a sampler for every trial from the study's stored state.

    Optuna's samplers keep their random state in the process, so a study resumed in a new
    process (or continued by another worker) draws different parameters than one that never
    stopped. This wrapper builds a fresh inner sampler for each trial, seeded from ``seed``,
    the number of finished (complete or pruned) trials and the number of trials in flight —
    the same numbers in every process — so an interrupted single-worker study proposes exactly
    the trials an uninterrupted one would. Samplers without cross-trial state besides their
    random generator (RandomSampler, TPESampler) are safe to wrap.

    Example:

        .. code::

            sampler = PositionSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s), seed=0)
            study = optuna.create_study(sampler=sampler, storage="sqlite:///x.db")
    """

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int = 0) -> None:
        self._factory = factory
        self._seed = seed
        self._inner: dict[int, BaseSampler] = {}

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        inner = self._inner.get(trial._trial_id)
        if inner is None:  # a trial that reached us without before_trial (e.g. study.tell paths)
            inner = self._factory(position_seed(self._seed, trial.number))
            self._inner[trial._trial_id] = inner
        return inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        in_flight = sum(
            t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number != trial.number
            for t in trials
        )
        inner = self._factory(position_seed(self._seed, finished, in_flight))
        self._inner[trial._trial_id] = inner
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
        inner = self._inner.pop(trial._trial_id, None)
        if inner is not None:
            inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # Seeds are derived from the storage on purpose; there is no process state to reseed.
        pass
