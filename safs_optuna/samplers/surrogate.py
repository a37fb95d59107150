"""SurrogateSampler: proposes the unseen configuration a nearest-neighbour regression predicts best."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.search_space import intersection_search_space
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from safs_optuna.samplers.claims import (
    FINISHED,
    all_trials,
    anchor,
    base_seed,
    claim_unseen,
    default_key,
    pending_below,
    value_score,
)
from safs_optuna.samplers.values import random_value, to_unit

__all__ = ["SurrogateSampler"]

# On a retry after a clash, how many of the best-predicted configurations a proposal is drawn from.
_RETRY_CHOICES = 4

Describe = Callable[[dict[str, Any]], Sequence[float]]


class SurrogateSampler(BaseSampler):
    """Sampler that fits a k-nearest-neighbour regression on the study's finished trials and
    proposes the unseen configuration it predicts to score best.

    Each configuration is a vector: a one-hot block per categorical parameter, a numeric one
    mapped to [0, 1] (in log scale for a log range), and, when ``describe`` is given, the numbers
    it returns for the configuration (e.g. zero-cost features of :mod:`safs_optuna.zero_cost`),
    standardised over the trials and the pool. A trial's target is its score's rank among the
    finished trials (pruned and failed ones lowest), so any ``score`` that orders trials works.
    For each new trial, ``pool_size`` random configurations no other trial holds are drawn and
    the one whose ``k`` nearest finished trials rank highest (weighted by closeness) is proposed.
    Until ``n_startup_trials`` trials have finished, a random unseen configuration is proposed.

    Like :class:`~safs_optuna.samplers.LAHCSampler` it keeps no state in the process: its random
    draws are a function of ``seed`` and of what the storage holds, so a resumed study proposes
    what an uninterrupted one would; workers sharing a study claim a proposal in the storage
    before returning it, so no two propose the same configuration.

    Example:

        .. code-block:: python

            import optuna
            from safs_optuna.samplers import SurrogateSampler

            def objective(trial):
                a = trial.suggest_categorical("site.left", ["relu", "tanh", "elu", "swish"])
                b = trial.suggest_categorical("site2.left", ["relu", "tanh", "elu", "swish"])
                return {"relu": 1, "tanh": 2, "elu": 3, "swish": 4}[a] + (b == "elu")

            study = optuna.create_study(direction="maximize", sampler=SurrogateSampler(seed=0))
            study.optimize(objective, n_trials=10)

    Args:
        seed: Seed of the study's draws.
        n_startup_trials: Finished trials before the regression proposes.
        pool_size: Random unseen configurations scored per proposal.
        k: Neighbours the prediction averages over.
        describe: Numbers describing a configuration beyond its parameters (called with the
            parameters of the search space; the same configuration must get the same numbers).
        canonical_key: Maps parameters to a hashable identity; configurations with the same key
            are one candidate, drawn once. Default: the sorted items.
        score: How trials are ranked (larger is better), e.g.
            :func:`safs_optuna.ranking.trial_score`. Default: the value, negated when the study
            minimizes.
    """

    def __init__(
        self,
        seed: int | None = None,
        n_startup_trials: int = 5,
        pool_size: int = 256,
        k: int = 3,
        describe: Describe | None = None,
        canonical_key: Callable[[dict[str, Any]], Hashable] | None = None,
        score: Callable[[FrozenTrial], Any] | None = None,
    ) -> None:
        for name, value, low in (("n_startup_trials", n_startup_trials, 0), ("pool_size", pool_size, 1),
                                 ("k", k, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self._seed = base_seed(seed)
        self._startup = n_startup_trials
        self._pool = pool_size
        self._k = k
        self._describe = describe
        self._key = canonical_key or default_key
        self._score = score
        self._described: dict[Hashable, np.ndarray] = {}  # a cache only: describe is a function

    def reseed_rng(self) -> None:
        self._seed = base_seed(None)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._raise_error_if_multi_objective(study)
        trials = all_trials(study)
        finished = [t for t in trials if t.state in FINISHED]
        if finished:
            space = intersection_search_space(finished, include_pruned=True)
        else:  # beside a first trial: its parameters, so that the two claim distinct proposals
            first = anchor(trials, trial)
            space = dict(first.distributions) if first is not None else {}
        return {name: dist for name, dist in sorted(space.items()) if not dist.single()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        trials = all_trials(study)
        finished = [t for t in trials if t.state in FINISHED and all(n in t.params for n in search_space)]
        position = len(finished)
        rng = np.random.default_rng([self._seed, position, pending_below(trials, trial)])
        score = self._score or value_score(study.direction == StudyDirection.MAXIMIZE)
        proposer = _Proposer(self, search_space, finished, score)
        return claim_unseen(study, trial, trials, proposer, self._key, rng, self._seed, position)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # Before any trial finished (and for parameters outside the shared space): at random,
        # from a stream of the trial's position, so a resumed study draws the same.
        trials = all_trials(study)
        finished = sum(t.state in FINISHED for t in trials)
        stream = [self._seed, finished, pending_below(trials, trial), *param_name.encode()]
        return random_value(np.random.default_rng(stream), param_distribution)

    # ------------------------------------------------------------------ the regression
    def _vector(self, space: dict[str, BaseDistribution], params: dict[str, Any]) -> np.ndarray:
        parts: list[float] = []
        for name, dist in space.items():
            value = params[name]
            if isinstance(dist, CategoricalDistribution):
                parts += [float(c == value and type(c) is type(value)) for c in dist.choices]
            else:
                low, high = to_unit(dist, dist.low), to_unit(dist, dist.high)
                parts.append((to_unit(dist, value) - low) / (high - low) if high > low else 0.0)
        return np.asarray(parts, dtype=float)

    def _features(self, params: dict[str, Any]) -> np.ndarray:
        key = self._key(params)
        if key not in self._described:
            self._described[key] = np.asarray(self._describe(params), dtype=float)  # type: ignore[misc]
        return self._described[key]

    def predict(self, space: dict[str, BaseDistribution], known: Sequence[dict[str, Any]],
                targets: Sequence[float], candidates: Sequence[dict[str, Any]]) -> np.ndarray:
        """The predicted target of each of ``candidates`` from ``known`` configurations and their
        ``targets``: the closeness-weighted mean over its ``k`` nearest known configurations."""
        x_known = np.stack([self._vector(space, p) for p in known])
        x_cand = np.stack([self._vector(space, p) for p in candidates])
        if self._describe is not None:
            f_known = np.stack([self._features(p) for p in known])
            f_cand = np.stack([self._features(p) for p in candidates])
            both = np.concatenate([f_known, f_cand])
            mean, std = np.nanmean(both, axis=0), np.nanstd(both, axis=0)
            std[~(std > 0)] = 1.0
            # A feature a configuration lacks (it failed there) is put at the mean: no pull either way.
            x_known = np.hstack([x_known, np.nan_to_num((f_known - mean) / std)])
            x_cand = np.hstack([x_cand, np.nan_to_num((f_cand - mean) / std)])
        y = np.asarray(targets, dtype=float)
        dist = np.sqrt(((x_cand[:, None, :] - x_known[None, :, :]) ** 2).sum(-1))
        k = min(self._k, len(known))
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
        weights = 1.0 / (1.0 + np.take_along_axis(dist, nearest, axis=1))
        return (weights * y[nearest]).sum(1) / weights.sum(1)


def _rank_targets(scores: Sequence[Any]) -> list[float]:
    """Each score's rank among ``scores`` in [0, 1] (ties at their mean rank; 1 is the best)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 / max(len(scores) - 1, 1)
        i = j + 1
    return ranks


class _Proposer:
    """What :func:`claim_unseen` asks for a proposal: the best predicted of a random unseen pool."""

    def __init__(self, sampler: SurrogateSampler, space: dict[str, BaseDistribution],
                 finished: Sequence[FrozenTrial], score: Callable[[FrozenTrial], Any]) -> None:
        self._sampler = sampler
        self.space = space
        self._known = [{n: t.params[n] for n in space} for t in finished]
        self._targets = _rank_targets([score(t) for t in finished])

    def propose(self, rng: np.random.Generator, taken: set[Hashable], retry: int = 0) -> dict[str, Any]:
        s = self._sampler
        pool: list[dict[str, Any]] = []
        seen = set(taken)
        for _ in range(20 * s._pool):  # a small space may hold fewer unseen configurations
            params = {n: random_value(rng, d) for n, d in self.space.items()}
            key = s._key(params)
            if key not in seen:
                seen.add(key)
                pool.append(params)
                if len(pool) == s._pool:
                    break
        if not pool:  # every configuration was tried: repeat one at random
            return {n: random_value(rng, d) for n, d in self.space.items()}
        if len(self._known) < max(s._startup, 1):
            return pool[0]
        predicted = s.predict(self.space, self._known, self._targets, pool)
        if retry:
            # Another worker claimed the same best at the same moment; in a small space both
            # pools hold every unseen configuration, so the argmax would clash again. Each
            # trial's own retry stream picks among the few best predicted instead.
            best = np.argsort(-predicted, kind="stable")[:_RETRY_CHOICES]
            return pool[int(best[rng.integers(len(best))])]
        return pool[int(np.argmax(predicted))]  # the first of ties: the pool's order is seeded
