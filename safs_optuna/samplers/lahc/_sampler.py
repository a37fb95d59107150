"""LAHCSampler: the Optuna hooks, which replay the chain from the storage and move from it."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.search_space import intersection_search_space
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from safs_optuna import optuna_private
from safs_optuna.samplers.claims import (
    FINISHED,
    all_trials,
    anchor,
    base_seed,
    claim_unseen,
    default_key,
    pending_below,
    running_below,
    wait_for_anchor,
)
from safs_optuna.samplers.lahc._chain import Chain, replay, rules_of, value_score
from safs_optuna.samplers.lahc._moves import Proposer, initial_value
from safs_optuna.samplers.values import random_value

__all__ = ["LAHCSampler"]


class LAHCSampler(BaseSampler):
    """Sampler using Late-Acceptance Hill Climbing (LAHC, Burke & Bykov 2017).

    LAHC keeps one current solution and a history of its last ``history_length`` (L) values. A
    neighbour of the current solution is accepted when it is at least as good as the value L
    iterations ago or as the current one, so the climb can leave shallow local optima. The
    direction (maximize or minimize) is the study's.

    - **State is the storage.** Every proposal replays the study's COMPLETE and PRUNED trials in
      trial-number order (PRUNED ones are rejected candidates, FAIL ones are ignored). Parallel
      workers and a resumed study continue one chain, and the same ``seed`` and stored trials
      give the same proposal in every process.
    - **Moves per site.** Parameters named ``<site>.<name>`` (``"features.3.left"``) belong to
      one site. A move changes one parameter of one site (a categorical to another choice, a
      number by a Gaussian step of 10 % of its (log) range) or, with probability
      ``swap_probability``, swaps the parameters of two alike sites.
    - **No repeats.** A configuration that a trial holds, runs or has queued (FAIL excepted) is not
      proposed while an unseen neighbour exists, across workers too: each trial claims its
      proposal in the storage (system attr ``"lahc:proposal"``).
    - **First trial.** ``initial_params[name]``, else ``"relu"``, else ``"left"``, else the first
      choice; the midpoint of a numeric (log) range: the all-ReLU baseline. An enqueued trial
      keeps its parameters and joins the chain like any other.

    ``variant="paper-code"`` follows the rules of the SAFS paper's code instead (strict late
    acceptance, a history that only improves, re-draw-and-swap moves with repeats, a random
    start). docs/lahc.md ("LAHC and its paper-code variant") states every rule of both variants,
    with the lines of the original code they follow.

    Example:

        .. code-block:: python

            import optuna
            from safs_optuna.samplers import LAHCSampler

            ops = ["relu", "tanh", "swish", "gelu"]
            score = {"relu": 0.0, "tanh": 0.3, "swish": 1.0, "gelu": 0.8}


            def objective(trial):
                return sum(
                    score[trial.suggest_categorical(f"layer{i}.left", ops)] for i in range(3)
                )


            study = optuna.create_study(direction="maximize", sampler=LAHCSampler(seed=0))
            study.optimize(objective, n_trials=30)
            assert study.trials[0].params == {f"layer{i}.left": "relu" for i in range(3)}
            assert study.best_value == 3.0

    Args:
        history_length:
            Length L of the late-acceptance history (3 in the SAFS paper). 1 is a plain hill
            climber that also accepts equal values.
        seed:
            Seed for the proposals. With the same seed and the same stored trials, every process
            proposes the same candidate.
        canonical_key:
            Maps a parameter dict to a hashable identity, equal for equivalent configurations
            (e.g. :meth:`safs_optuna.space.ActivationSpace.canonical_key`). Defaults to the
            sorted parameter items.
        initial_params:
            Values for the first trial's parameters, by name; see above for the others.
        swap_probability:
            Probability that a move swaps two sites' parameters instead of changing one.
        score:
            Maps a COMPLETE trial to a comparable score, larger is better, used by the acceptance
            test instead of the objective value (e.g. :func:`safs_optuna.ranking.trial_score`,
            which breaks accuracy ties at chance level by validation loss). Default: the value,
            negated when the study minimizes.
        variant:
            The rule set, one of :data:`VARIANTS`: ``"textbook"`` or ``"paper-code"``.
    """

    def __init__(
        self,
        history_length: int = 3,
        seed: int | None = None,
        canonical_key: Callable[[dict[str, Any]], Hashable] | None = None,
        initial_params: Mapping[str, Any] | None = None,
        swap_probability: float = 0.2,
        score: Callable[[FrozenTrial], Any] | None = None,
        variant: str = "textbook",
    ) -> None:
        if not isinstance(history_length, int) or isinstance(history_length, bool) or history_length < 1:
            raise ValueError(f"history_length must be an int >= 1, got {history_length!r}")
        if not 0.0 <= swap_probability <= 1.0:
            raise ValueError(f"swap_probability must be in [0, 1], got {swap_probability!r}")
        self._rules = rules_of(variant)  # a ValueError listing the valid names
        self._history_length = history_length
        self._seed = base_seed(seed)
        self._key = canonical_key if canonical_key is not None else default_key
        self._initial_params = dict(initial_params or {})
        self._swap_probability = float(swap_probability)
        self._score = score
        self._intersection = _IncrementalIntersection()

    def _chain(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> Chain:
        score = self._score or value_score(study.direction == StudyDirection.MAXIMIZE)
        return replay(trials, self._history_length, score, self._rules)

    @property
    def variant(self) -> str:
        """The rule set, one of :data:`VARIANTS`."""
        return self._rules.name

    def threshold_trial(self, study: optuna.Study, trial: FrozenTrial) -> FrozenTrial | None:
        """The finished trial that ``trial`` must score at least as well as to be accepted.

        The chain is replayed over the finished trials numbered below ``trial``; the result is
        the worse of the history entry ``trial`` is compared with and the current solution, or
        :obj:`None` while no trial has finished (the first trial is never compared). In the
        ``paper-code`` variant a tie with the history entry is not enough: when the result is
        that entry's trial (it is worse than the current solution), ``trial`` must score strictly
        better; when it is the current solution, a tie suffices in both variants. A pruner can
        stop a candidate whose learning curve is clearly behind this trial's (see
        :class:`safs_optuna.pruners.IncumbentPruner`): rejected either way, it loses nothing.
        """
        trials = [t for t in all_trials(study) if t.number < trial.number]
        return self._chain(study, trials).threshold()

    def lahc_package_would_stop(
        self, study: optuna.Study, steps_minimum: int = 20, idle_fraction: float = 0.02
    ) -> bool:
        """Whether the ``lahc`` package's loop would stop after the study's finished trials.

        It stops once more than ``steps_minimum`` candidates (finished trials after the first)
        were evaluated and the number of consecutive candidates not strictly better than the
        current solution exceeds ``idle_fraction`` of them (``lahc/_lahc.py:107-114, 148-151``).
        The defaults are the SAFS code's (``--activ_search_steps`` 20), where it means at least
        22 finished trials. For a callback that stops a study the way that code does, e.g.
        ``lambda study, trial: sampler.lahc_package_would_stop(study) and study.stop()``.
        """
        chain = self._chain(study, all_trials(study))
        steps = max(chain.position - 1, 0)
        return steps > steps_minimum and chain.idle > steps * idle_fraction

    def reseed_rng(self) -> None:
        # Distinct proposals across workers do not depend on this (the trial's position does);
        # like Optuna's samplers, reseeding just draws a fresh base seed.
        self._seed = base_seed(None)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._raise_error_if_multi_objective(study)
        trials = wait_for_anchor(study, trial)
        finished = [t for t in trials if t.state in FINISHED]
        if finished:
            space = self._intersection.calculate(
                optuna_private.storage_of(study), optuna_private.study_id(study), finished
            )
        else:
            first = anchor(trials, trial)
            space = dict(sorted(first.distributions.items())) if first is not None else {}
        # Single-valued distributions never move; Optuna fills them in without asking.
        return {name: dist for name, dist in space.items() if not dist.single()}

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        self._raise_error_if_multi_objective(study)
        trials = all_trials(study)
        chain = self._chain(study, trials)
        base = chain.current if chain.current is not None else anchor(trials, trial)
        if base is None:
            return {}
        # A first trial still being suggested may lack some params; move only the known ones.
        space = {n: d for n, d in search_space.items() if n in base.params}
        current = {n: base.params[n] for n in space}
        rng = np.random.default_rng([self._seed, chain.position, pending_below(trials, trial)])
        proposer = Proposer(space, current, self._swap_probability, self._key)
        if self._rules.redraw_and_swap:
            return proposer.redraw_and_swap(rng)
        return claim_unseen(study, trial, trials, proposer, self._key, rng, self._seed, chain.position)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._raise_error_if_multi_objective(study)
        trials = all_trials(study)
        chain = self._chain(study, trials)
        base = chain.current if chain.current is not None else anchor(trials, trial)
        if base is not None and param_name in base.params:
            value = base.params[param_name]
            if optuna_private.contains(param_distribution, value):
                return value
        # A trial beside a first one whose parameters never showed up (see wait_for_anchor)
        # starts from a random configuration rather than repeat the initial one.
        beside_first = base is None and chain.current is None and running_below(trials, trial)
        if beside_first or (self._rules.random_start and param_name not in self._initial_params):
            # The random start: a stream of its own per parameter name (crc32, not hash(), which
            # differs between processes), so the order of suggestions does not matter.
            name_key = zlib.crc32(param_name.encode())
            stream = trial.number if beside_first else pending_below(trials, trial)
            rng = np.random.default_rng([self._seed, chain.position, stream, name_key])
            return random_value(rng, param_distribution)
        return initial_value(param_name, param_distribution, self._initial_params)


class _IncrementalIntersection:
    """``intersection_search_space`` of the finished trials, folding in only the new ones.

    Equivalent to recomputing it every time: a finished trial's distributions never change,
    finished trials are never removed, and the intersection does not depend on the order in which
    trials are folded in. So a per-process cache keyed by the storage object and study id, holding
    the ids of the trials already folded in, cannot go stale across processes. (Comparing
    distributions is the cost of a proposal in long studies; this keeps it O(new trials).) The
    cache is one tuple replaced at once, so threads sharing the sampler see a consistent state.
    """

    def __init__(self) -> None:
        # (storage, study id, ids of the trials folded in, their intersection or None if none)
        self._state: tuple[object, int, frozenset[int], dict[str, BaseDistribution] | None] | None = None

    def calculate(
        self, storage: object, study_id: int, finished: Sequence[FrozenTrial]
    ) -> dict[str, BaseDistribution]:
        state = self._state
        if state is None or state[0] is not storage or state[1] != study_id:
            state = (storage, study_id, frozenset(), None)
        _, _, folded, space = state
        new = [t for t in finished if optuna_private.trial_id(t) not in folded]
        if new:
            partial = intersection_search_space(new, include_pruned=True)
            if space is not None:
                partial = {n: d for n, d in partial.items() if space.get(n) == d}
            space = partial
            self._state = (storage, study_id, folded | {optuna_private.trial_id(t) for t in new}, space)
        return dict(sorted((space or {}).items()))

