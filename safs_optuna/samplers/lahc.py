"""Late-Acceptance Hill Climbing as an Optuna sampler whose state is the storage: Burke & Bykov's
rules, or those of the SAFS paper's code."""

from __future__ import annotations

import itertools
import logging
import math
import time
import zlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.search_space import intersection_search_space
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["VARIANTS", "LAHCSampler"]

VARIANTS: tuple[str, ...] = ("textbook", "paper-code")
"""Rule sets of :class:`LAHCSampler`: ``textbook`` (Burke & Bykov) and ``paper-code`` (the
``lahc`` package as the SAFS paper's code runs it)."""

_logger = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_PENDING = (TrialState.RUNNING, TrialState.WAITING)
# Random neighbours tried before the neighbourhood is enumerated: cheap, and enough while most
# neighbours are unseen; enumeration only pays off once the neighbourhood is nearly used up.
_RANDOM_TRIES = 16
# System attr in which a trial claims its proposal before returning it, and how often a
# proposal that clashed with another worker's claim is replaced.
_CLAIM_ATTR = "lahc:proposal"
_CLAIM_TRIES = 8
# Before any trial finished, a trial started beside the first one waits this long (polling every
# _ANCHOR_POLL_S) for the first one's parameters, so that it moves away from them instead of
# repeating the initial configuration; past it, it starts from a random configuration.
_ANCHOR_WAIT_S = 10.0
_ANCHOR_POLL_S = 0.02
# A numeric neighbour moves by a Gaussian step of this fraction of the (log) range.
_STEP_FRACTION = 0.1
# Largest finite space enumerated for an unseen configuration once every neighbour is taken.
_MAX_ENUMERATED_SPACE = 100_000
# Categorical choices preferred for the first trial, in order: the dense network's activation and
# the binary operator that makes a tree unary, so the search starts from the all-ReLU baseline.
_PREFERRED_CHOICES = ("relu", "left")


class LAHCSampler(BaseSampler):
    """Sampler using Late-Acceptance Hill Climbing (LAHC, Burke & Bykov 2017).

    LAHC keeps one current solution and a history list of ``history_length`` (L) values, all
    set to the initial solution's value. At iteration ``k`` a neighbour of the current solution is
    evaluated and accepted when its value is at least as good as ``history[k mod L]`` or as the
    current value; then ``history[k mod L]`` becomes the current value. Worse candidates can thus be
    accepted for a while, which lets the climb leave shallow local optima. The direction
    (maximize or minimize) is the study's.

    **All state comes from the storage.** For every proposal the sampler replays the study's
    COMPLETE and PRUNED trials in trial-number order to get the current solution and the history;
    nothing is kept in the process. Several workers in parallel (each its own process and
    sampler) and a resumed study therefore continue one and the same chain. PRUNED trials are
    iterations that are always rejected; FAIL trials are ignored (a retry of one is a
    new trial). The randomness of a proposal is a function of ``seed``, the chain position (the
    number of finished trials replayed) and the number of RUNNING or WAITING trials numbered below
    the trial being sampled, so a study run in one go and one interrupted and continued by a new
    process propose the same trials, and two workers proposing at once draw different candidates.

    **Moves.** Parameters are grouped by *site*, the part of the name before the last ``"."``
    (``"features.3.left"`` belongs to site ``"features.3"``; a name without a dot is its own site).
    A move picks a site, then one of its parameters with more than one possible value, and changes
    it: a categorical to a different choice, an int or float by a Gaussian step of 10% of its
    (log) range, reflected at the bounds and snapped to the step grid. With probability
    ``swap_probability`` the move instead swaps all parameters of two sites that have the same
    parameter names and distributions and different values, like the SAFS paper's move.

    **No repeats.** A candidate whose canonical key (``canonical_key(params)`` over the searched
    parameters, else the parameters themselves) belongs to any trial of the study that is not FAIL
    (finished, running or waiting) is not proposed while an unseen neighbour exists: a few random
    neighbours are tried, then every one-node neighbour and swap in a seeded order. Only when all are
    taken does the sampler fall back to two-step moves, then to any unseen configuration (enumerated
    when the space is finite and small, else drawn at random), and log this at debug level.
    This holds across workers too: a trial claims its proposal in the storage (system attr
    ``"lahc:proposal"``) and checks it against the other trials' claims before returning it.

    **First trial.** Every parameter gets ``initial_params[name]`` when given, else ``"relu"`` when it
    is a choice, else ``"left"`` when it is a choice, else the first choice; an int or float gets
    the midpoint of its (log) range, snapped to its step. So the search starts from the all-ReLU
    baseline. A trial the user enqueued (:meth:`optuna.study.Study.enqueue_trial`) keeps its
    parameters and, once finished, is part of the chain like any other trial.

    The relative search space is the intersection of the finished trials' distributions (before
    any trial finished: the first running trial's, so a second worker moves away from the initial
    configuration instead of repeating it; a trial asked before that one has parameters waits for
    them up to 10 s, and past that draws a random configuration). Parameters outside it (dynamic
    ones) keep the current solution's value, else follow the first-trial rule.

    **Variants.** The above is ``variant="textbook"``. ``variant="paper-code"`` follows the rules
    of the SAFS paper's code (github.com/automl/SAFS at commit ac03fa1: ``optimization_lib.py``
    is ``safs/optimization/optimization_lib.py``, ``settings.py`` and ``main.py`` are in
    ``safs/``), which subclasses ``LateAcceptanceHillClimber`` of the ``lahc`` package (version
    1.0.5, pinned in that repository's ``setup.py:60``; ``_lahc.py`` is ``lahc/_lahc.py`` of
    its wheel). That code minimizes the energy 1/accuracy (``optimization_lib.py:236``); here
    "better" is the larger score, which orders candidates the same way. ``v = k mod L`` is the
    history slot of the ``k``-th candidate (``_lahc.py:153``):

    ==============  ===================================  ===========================================
    rule            textbook                             paper-code
    ==============  ===================================  ===========================================
    acceptance      at least as good as ``history[v]``   strictly better than ``history[v]``, or at
                    or as the current solution           least as good as the current solution
                                                         (``_lahc.py:155``)
    history update  ``history[v]`` := current, always    ``history[v]`` := current only when the
                                                         current is strictly better than it
                                                         (``_lahc.py:169-171``)
    move            one site changed by one step, or     one site re-drawn at random, *and then* two
                    (``swap_probability``) two sites     sites drawn at random swapped
                    swapped                              (``optimization_lib.py:185-190``); either
                                                         may be a no-op
    repeats         never, while an unseen neighbour     allowed and evaluated again: nothing is
                    exists                               cached (``_lahc.py:145-146``)
    first trial     ``"relu"`` / ``"left"`` / midpoint   a uniformly random value per parameter
                                                         (``optimization_lib.py:66-68``)
    ==============  ===================================  ===========================================

    In the paper-code move a site is drawn uniformly among all searched sites and each of its
    parameters gets a uniformly random value (a categorical's choices, an int's or float's
    (log) range), possibly the one it had, as ``random.choice`` over the candidate activations
    does; the swap's first site is drawn uniformly, the second uniformly among the sites with
    the same parameter names and distributions, the first included (in the SAFS space, every
    site: two independent ``random.randint``, as in the code). ``swap_probability`` is not
    used. ``initial_params`` and an enqueued first trial override the random start in both
    variants: the pipeline enqueues the network's own activations, so for the paper's random
    start it must not.

    Two rules of the ``lahc`` package stay with the caller, since the number of trials is the
    study's: the search evaluates the start and then candidates until more than
    ``steps_minimum`` candidates were tried and the number of consecutive ones not strictly
    better than the current solution exceeds 2 % of them (``_lahc.py:107-114, 148-151``;
    :meth:`lahc_package_would_stop` tells); the SAFS code sets ``steps_minimum`` to
    ``--activ_search_steps``, 20 by default
    (``settings.py:103-107``, ``main.py:31-34``), so it evaluates at least 22 activation
    assignments (the start and 21 candidates), and it returns the best state seen, not the last
    current one (``_lahc.py:187-192``, ``optimization_lib.py:77-78``), as ``study.best_trial``
    does. ``score`` replaces the energy in either variant.

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
            The rule set, one of :data:`VARIANTS`: ``"textbook"`` or ``"paper-code"`` (see
            above).
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
        if variant not in VARIANTS:
            raise ValueError(f"unknown LAHC variant {variant!r}; valid: {', '.join(map(repr, VARIANTS))}")
        self._history_length = history_length
        self._seed = _base_seed(seed)
        self._canonical_key = canonical_key
        self._initial_params = dict(initial_params or {})
        self._swap_probability = float(swap_probability)
        self._score = score
        self._variant = variant
        self._intersection = _IncrementalIntersection()

    def _chain(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> _Chain:
        score = self._score or _value_score(study.direction == StudyDirection.MAXIMIZE)
        return _replay(trials, self._history_length, score, self._variant)

    @property
    def variant(self) -> str:
        """The rule set, one of :data:`VARIANTS`."""
        return self._variant

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
        trials = [t for t in _all_trials(study) if t.number < trial.number]
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
        chain = self._chain(study, _all_trials(study))
        steps = max(chain.position - 1, 0)
        return steps > steps_minimum and chain.idle > steps * idle_fraction

    def reseed_rng(self) -> None:
        # Distinct proposals across workers do not depend on this (the trial's position does);
        # like Optuna's samplers, reseeding just draws a fresh base seed.
        self._seed = _base_seed(None)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._raise_error_if_multi_objective(study)
        trials = self._wait_for_anchor(study, trial)
        finished = [t for t in trials if t.state in _FINISHED]
        if finished:
            space = self._intersection.calculate(study._storage, study._study_id, finished)
        else:
            anchor = _anchor(trials, trial)
            space = dict(sorted(anchor.distributions.items())) if anchor is not None else {}
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
        trials = _all_trials(study)
        chain = self._chain(study, trials)
        base = chain.current if chain.current is not None else _anchor(trials, trial)
        if base is None:
            return {}
        # A first trial still being suggested may lack some params; move only the known ones.
        space = {n: d for n, d in search_space.items() if n in base.params}
        current = {n: base.params[n] for n in space}
        rng = np.random.default_rng([self._seed, chain.position, _pending_below(trials, trial)])
        proposer = _Proposer(space, current, self._swap_probability, self._key)
        if self._variant == "paper-code":
            return proposer.reassign_and_swap(rng)
        taken = self._taken_keys(trials, space, trial.number)
        proposal = proposer.propose(rng, taken)
        # Claim the proposal in the storage, then look again: of two workers proposing the same
        # configuration at once, at least one writes its claim before the other reads, so at
        # least one sees the clash, and whoever sees it proposes again, from a stream of its
        # own trial's (two workers at the same chain position may share the first stream).
        for attempt in range(_CLAIM_TRIES):
            study._storage.set_trial_system_attr(trial._trial_id, _CLAIM_ATTR, proposal)
            others = _all_trials(study)
            taken = self._taken_keys(others, space, trial.number)
            if self._key(proposal) not in taken and not _matches_partial(others, proposal, space, trial.number):
                return proposal
            rng = np.random.default_rng([self._seed, chain.position, trial.number, attempt])
            proposal = proposer.propose(rng, taken)
        study._storage.set_trial_system_attr(trial._trial_id, _CLAIM_ATTR, proposal)
        _logger.debug("LAHC: trial %d still clashed after %d claims", trial.number, _CLAIM_TRIES)
        return proposal

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._raise_error_if_multi_objective(study)
        trials = _all_trials(study)
        chain = self._chain(study, trials)
        base = chain.current if chain.current is not None else _anchor(trials, trial)
        if base is not None and param_name in base.params:
            value = base.params[param_name]
            if _contains(param_distribution, value):
                return value
        # A trial beside a first one whose parameters never showed up (see _wait_for_anchor)
        # starts from a random configuration rather than repeat the initial one.
        beside_first = base is None and chain.current is None and _running_below(trials, trial)
        if beside_first or (self._variant == "paper-code" and param_name not in self._initial_params):
            # The random start: a stream of its own per parameter name (crc32, not hash(), which
            # differs between processes), so the order of suggestions does not matter.
            name_key = zlib.crc32(param_name.encode())
            stream = trial.number if beside_first else _pending_below(trials, trial)
            rng = np.random.default_rng([self._seed, chain.position, stream, name_key])
            return _random_value(rng, param_distribution)
        return self._initial_value(param_name, param_distribution)

    def _wait_for_anchor(self, study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
        """The study's trials, once ``trial`` has something to move from: a finished trial or an
        anchor (see :func:`_anchor`). While it has neither but a trial numbered below it is
        running (that one takes the initial configuration), wait for that trial's parameters,
        at most ``_ANCHOR_WAIT_S``."""
        deadline = time.monotonic() + _ANCHOR_WAIT_S
        while True:
            trials = _all_trials(study)
            if (any(t.state in _FINISHED for t in trials) or _anchor(trials, trial) is not None
                    or not _running_below(trials, trial) or time.monotonic() > deadline):
                return trials
            time.sleep(_ANCHOR_POLL_S)

    def _initial_value(self, name: str, dist: BaseDistribution) -> Any:
        if name in self._initial_params:
            value = self._initial_params[name]
            if not _contains(dist, value):
                raise ValueError(
                    f"initial_params[{name!r}] = {value!r} is not a value of {name!r}; "
                    f"valid: {_describe(dist)}"
                )
            return value
        if isinstance(dist, CategoricalDistribution):
            for preferred in _PREFERRED_CHOICES:
                if any(_same_choice(c, preferred) for c in dist.choices):
                    return preferred
            return dist.choices[0]
        if isinstance(dist, (IntDistribution, FloatDistribution)):
            low, high = _to_unit(dist, dist.low), _to_unit(dist, dist.high)
            return _snap(dist, _from_unit(dist, (low + high) / 2))
        raise ValueError(f"unsupported distribution {dist!r} for {name!r}")

    def _key(self, params: dict[str, Any]) -> Hashable:
        if self._canonical_key is not None:
            return self._canonical_key(params)
        return tuple(sorted(params.items(), key=lambda item: item[0]))

    def _taken_keys(
        self, trials: Sequence[FrozenTrial], space: Mapping[str, BaseDistribution], number: int
    ) -> set[Hashable]:
        """Keys of every configuration the study holds or has queued (FAIL trials excepted)."""
        taken: set[Hashable] = set()
        for t in trials:
            if t.state == TrialState.FAIL or t.number == number:
                continue
            # What it evaluates or will: its params; those enqueued; else what it claimed.
            params = {**t.system_attrs.get(_CLAIM_ATTR, {}), **t.system_attrs.get("fixed_params", {}),
                      **t.params}
            if not all(name in params for name in space):
                continue  # another worker's trial still being suggested; its key is not known yet
            try:
                taken.add(self._key({name: params[name] for name in space}))
            except (KeyError, TypeError, ValueError) as err:
                # An enqueued trial with values canonical_key rejects cannot equal a valid candidate.
                _logger.debug("trial %d has no canonical key (%s); ignored for repeats", t.number, err)
        return taken


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
        new = [t for t in finished if t._trial_id not in folded]
        if new:
            partial = intersection_search_space(new, include_pruned=True)
            if space is not None:
                partial = {n: d for n, d in partial.items() if space.get(n) == d}
            space = partial
            self._state = (storage, study_id, folded | {t._trial_id for t in new}, space)
        return dict(sorted((space or {}).items()))


@dataclass
class _Chain:
    """LAHC state after replaying the finished trials in trial-number order."""

    current: FrozenTrial | None = None  # None until a trial finished
    value: Any = None  # the current solution's score
    history: list[tuple[Any, FrozenTrial]] = field(default_factory=list)  # (score, trial) per slot
    position: int = 0  # finished trials replayed; the candidate after them is iteration position-1
    # consecutive candidates, up to now, not strictly better than the solution they were compared
    # with (the lahc package's step_idle, which its stopping rule uses)
    idle: int = 0

    def threshold(self) -> FrozenTrial | None:
        """The trial a candidate at the next position must reach to be accepted: the worse of
        the history entry it is compared with and the current solution (either suffices)."""
        if self.current is None:
            return None
        score, trial = self.history[(self.position - 1) % len(self.history)]
        return trial if score < self.value else self.current


def _replay(
    trials: Sequence[FrozenTrial],
    history_length: int,
    score: Callable[[FrozenTrial], Any],
    variant: str = "textbook",
) -> _Chain:
    """The LAHC loop over stored trials: the first finished trial is the initial solution; each
    later one is a candidate; PRUNED candidates are always rejected. ``variant`` picks the
    acceptance and history rules (see :class:`LAHCSampler`)."""
    paper = variant == "paper-code"
    chain = _Chain()
    for t in sorted((t for t in trials if t.state in _FINISHED), key=lambda t: t.number):
        if chain.current is None:
            value = score(t)
            chain.current, chain.value, chain.history = t, value, [(value, t)] * history_length
        else:
            slot = (chain.position - 1) % history_length
            late = chain.history[slot][0]
            improved = False
            if t.state == TrialState.COMPLETE:
                value = score(t)
                improved = value > chain.value
                # lahc/_lahc.py:155 (energies, lower is better): E < Ev or E <= prev_energy
                if (value > late if paper else value >= late) or value >= chain.value:
                    chain.current, chain.value = t, value
            chain.idle = 0 if improved else chain.idle + 1
            # lahc/_lahc.py:169-171: the history slot only ever improves
            if not paper or chain.value > late:
                chain.history[slot] = (chain.value, chain.current)
        chain.position += 1
    return chain


def _value_score(maximize: bool) -> Callable[[FrozenTrial], float]:
    """The default score: the objective value, negated when the study minimizes."""
    def score(t: FrozenTrial) -> float:
        if t.state != TrialState.COMPLETE or t.value is None:
            return -math.inf
        return t.value if maximize else -t.value
    return score


def _all_trials(study: optuna.Study) -> list[FrozenTrial]:
    # The storage, not study.get_trials: a HyperbandPruner hands samplers a study filtered to one
    # bracket, but the chain is the whole study's (GridSampler does the same).
    return study._storage.get_all_trials(study._study_id, deepcopy=False)


def _pending_below(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> int:
    """RUNNING or WAITING trials numbered below ``trial``: two workers asking at once differ here."""
    return sum(1 for t in trials if t.state in _PENDING and t.number < trial.number)


def _running_below(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> bool:
    """Whether a trial numbered below ``trial`` is running: it asked for its parameters first."""
    return any(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)


def _matches_partial(trials: Sequence[FrozenTrial], proposal: Mapping[str, Any],
                     space: Mapping[str, BaseDistribution], number: int) -> bool:
    """Whether another live trial whose configuration is still partly unknown (it claimed a
    proposal for fewer parameters, from a first trial that was still being suggested, and takes
    the rest later) agrees with ``proposal`` on everything it has: it may end up equal to it."""
    for t in trials:
        if t.state not in _PENDING or t.number == number:
            continue
        known = {**t.system_attrs.get(_CLAIM_ATTR, {}), **t.params}
        names = [n for n in space if n in known]
        if names and len(names) < len(space) and all(known[n] == proposal[n] for n in names):
            return True
    return False


def _anchor(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> FrozenTrial | None:
    """Before any trial finished: the first other live trial with params (the initial one)."""
    for t in sorted(trials, key=lambda t: t.number):
        if t.state in _PENDING and t.number != trial.number and t.distributions:
            return t
    return None


class _Proposer:
    """Neighbours of one configuration, and the choice of an unseen one."""

    def __init__(
        self,
        space: Mapping[str, BaseDistribution],
        current: Mapping[str, Any],
        swap_probability: float,
        key: Callable[[dict[str, Any]], Hashable],
    ) -> None:
        self._space = dict(space)
        self._current = dict(current)
        self._swap_probability = swap_probability
        self._key = key
        # site -> {name relative to the site: full name}; sorted so that order is process-independent
        self._sites: dict[str, dict[str, str]] = {}
        for name in sorted(space):
            site, rel = _split_name(name)
            self._sites.setdefault(site, {})[rel] = name
        # site -> its params that can change (sites with none are never picked)
        self._movable: dict[str, list[str]] = {}
        for site, names in self._sites.items():
            movable = [n for n in names.values() if _movable(space[n])]
            if movable:
                self._movable[site] = movable
        self._pairs = self._swap_pairs()

    def propose(self, rng: np.random.Generator, taken: set[Hashable]) -> dict[str, Any]:
        def unseen(params: dict[str, Any]) -> bool:
            return self._key(params) not in taken

        if self._movable:
            for _ in range(_RANDOM_TRIES):
                candidate = self._random_move(rng)
                if unseen(candidate):
                    return candidate
            moves = self._all_moves()
            for i in rng.permutation(len(moves)):
                if unseen(moves[i]):
                    return moves[i]
            _logger.debug("LAHC: every neighbour of the current solution was tried; two-step move")
            for _ in range(_RANDOM_TRIES):
                candidate = self._one_node(rng, self._one_node(rng, self._current))
                if unseen(candidate):
                    return candidate
        _logger.debug("LAHC: no unseen two-step neighbour; proposing any unseen configuration")
        candidate = self._any_unseen(rng, unseen)
        if candidate is None:
            _logger.debug("LAHC: every configuration of the search space was tried; repeating one")
            candidate = self._random_move(rng) if self._movable else dict(self._current)
        return candidate

    def reassign_and_swap(self, rng: np.random.Generator) -> dict[str, Any]:
        """The SAFS code's move (``optimization_lib.py:185-190``): re-draw one random site's
        parameters, then swap two random sites. Both may leave the configuration unchanged,
        and nothing is checked against earlier trials: repeats are evaluated again."""
        sites = sorted(self._sites)
        params = dict(self._current)
        for name in self._sites[sites[rng.integers(len(sites))]].values():
            params[name] = _random_value(rng, self._space[name])
        a = sites[rng.integers(len(sites))]
        partners = [b for b in sites if self._compatible(a, b)]  # a itself included
        b = partners[rng.integers(len(partners))]
        swapped = dict(params)
        for rel, name_a in self._sites[a].items():
            name_b = self._sites[b][rel]
            swapped[name_a], swapped[name_b] = params[name_b], params[name_a]
        return swapped

    def _compatible(self, a: str, b: str) -> bool:
        """Sites whose parameters can be swapped: the same names, with the same distributions."""
        names_a, names_b = self._sites[a], self._sites[b]
        return names_a.keys() == names_b.keys() and all(
            self._space[names_a[r]] == self._space[names_b[r]] for r in names_a
        )

    def _random_move(self, rng: np.random.Generator) -> dict[str, Any]:
        if self._pairs and rng.random() < self._swap_probability:
            a, b = self._pairs[rng.integers(len(self._pairs))]
            return self._swap(a, b)
        return self._one_node(rng, self._current)

    def _one_node(self, rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, Any]:
        sites = list(self._movable)
        names = self._movable[sites[rng.integers(len(sites))]]
        name = names[rng.integers(len(names))]
        dist = self._space[name]
        if isinstance(dist, CategoricalDistribution):
            index = dist.to_internal_repr(params[name])
            others = [i for i in range(len(dist.choices)) if i != index]
            value = dist.choices[others[rng.integers(len(others))]]
        else:
            value = _numeric_neighbour(rng, dist, params[name])
        return {**params, name: value}

    def _swap_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for a, b in itertools.combinations(sorted(self._sites), 2):
            if not self._compatible(a, b):
                continue
            names_a, names_b = self._sites[a], self._sites[b]
            if any(self._current[names_a[r]] != self._current[names_b[r]] for r in names_a):
                pairs.append((a, b))
        return pairs

    def _swap(self, a: str, b: str) -> dict[str, Any]:
        params = dict(self._current)
        for rel, name_a in self._sites[a].items():
            name_b = self._sites[b][rel]
            params[name_a], params[name_b] = self._current[name_b], self._current[name_a]
        return params

    def _all_moves(self) -> list[dict[str, Any]]:
        moves = [
            {**self._current, name: value}
            for names in self._movable.values()
            for name in names
            for value in _neighbour_values(self._space[name], self._current[name])
        ]
        return moves + [self._swap(a, b) for a, b in self._pairs]

    def _any_unseen(
        self, rng: np.random.Generator, unseen: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        names = sorted(self._space)
        values = [_all_values(self._space[n]) for n in names]
        if all(v is not None for v in values):
            sizes = [len(v) for v in values]  # type: ignore[arg-type]
            total = math.prod(sizes)
            if total <= _MAX_ENUMERATED_SPACE:
                for index in rng.permutation(total):
                    params = {}
                    for name, options, size in zip(names, values, sizes):
                        index, digit = divmod(int(index), size)
                        params[name] = options[digit]  # type: ignore[index]
                    if unseen(params):
                        return params
                return None
        for _ in range(_RANDOM_TRIES):
            params = {n: _random_value(rng, self._space[n]) for n in names}
            if unseen(params):
                return params
        return None


def _split_name(name: str) -> tuple[str, str]:
    """``"features.3.left"`` -> (``"features.3"``, ``"left"``); a dotless name is its own site."""
    site, dot, rel = name.rpartition(".")
    return (site, rel) if dot and site else (name, name)


def _movable(dist: BaseDistribution) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices) > 1
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        return dist.low < dist.high
    return False


def _base_seed(seed: int | None) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    return int(seed) % 2**64  # SeedSequence wants a non-negative int


def _same_choice(choice: Any, value: Any) -> bool:
    # 1 == True in Python; a choice only matches a value of its own type.
    return type(choice) is type(value) and choice == value


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return ", ".join(repr(c) for c in dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        step = f" step {dist.step}" if dist.step is not None else ""
        return f"{dist.low} .. {dist.high}{step}{' (log)' if dist.log else ''}"
    return repr(dist)


def _to_unit(dist: IntDistribution | FloatDistribution, value: float) -> float:
    return math.log(value) if dist.log else float(value)


def _from_unit(dist: IntDistribution | FloatDistribution, y: float) -> float:
    return math.exp(y) if dist.log else y


def _snap(dist: IntDistribution | FloatDistribution, value: float) -> int | float:
    """Clip to the range and round to the step grid, in the distribution's type."""
    value = min(max(value, dist.low), dist.high)
    if dist.step is not None:
        value = dist.low + round((value - dist.low) / dist.step) * dist.step
        value = min(max(value, dist.low), dist.high)
    return int(round(value)) if isinstance(dist, IntDistribution) else float(value)


def _numeric_neighbour(
    rng: np.random.Generator, dist: IntDistribution | FloatDistribution, value: float
) -> int | float:
    low, high = _to_unit(dist, dist.low), _to_unit(dist, dist.high)
    x = _to_unit(dist, value)
    y = x + rng.normal(0.0, _STEP_FRACTION * (high - low))
    # Reflect rather than clip, so that a value sitting on a bound still moves inward.
    if y > high:
        y = high - (y - high)
    if y < low:
        y = low + (low - y)
    new = _snap(dist, _from_unit(dist, y))
    if new == value:  # the step was finer than the grid: take one grid step that way
        new = _grid_step(dist, value, 1 if y >= x else -1)
    return new


def _grid_step(dist: IntDistribution | FloatDistribution, value: float, direction: int) -> int | float:
    step = dist.step if dist.step is not None else _STEP_FRACTION * (dist.high - dist.low)
    for sign in (direction, -direction):
        new = _snap(dist, value + sign * step)
        if new != value:
            return new
    return _snap(dist, value)


def _neighbour_values(dist: BaseDistribution, value: Any) -> list[Any]:
    """The one-node neighbourhood of one parameter, for exhaustive enumeration."""
    if isinstance(dist, CategoricalDistribution):
        index = dist.to_internal_repr(value)
        return [c for i, c in enumerate(dist.choices) if i != index]
    assert isinstance(dist, (IntDistribution, FloatDistribution))
    candidates: list[int | float] = []
    if dist.step is not None:
        n_grid = int(round((dist.high - dist.low) / dist.step)) + 1
        reach = min(10, max(1, round(_STEP_FRACTION * n_grid)))
        for d in range(1, reach + 1):
            candidates += [_snap(dist, value - d * dist.step), _snap(dist, value + d * dist.step)]
    else:
        low, high = _to_unit(dist, dist.low), _to_unit(dist, dist.high)
        x = _to_unit(dist, value)
        for fraction in (0.05, 0.1, 0.2):
            for y in (x - fraction * (high - low), x + fraction * (high - low)):
                candidates.append(_snap(dist, _from_unit(dist, min(max(y, low), high))))
    return list(dict.fromkeys(c for c in candidates if c != value))


def _all_values(dist: BaseDistribution) -> list[Any] | None:
    """Every value of a finite distribution; None for a continuous one."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None:
        n_grid = int(round((dist.high - dist.low) / dist.step)) + 1
        if n_grid > _MAX_ENUMERATED_SPACE:
            return None
        return list(dict.fromkeys(_snap(dist, dist.low + i * dist.step) for i in range(n_grid)))
    return None


def _random_value(rng: np.random.Generator, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[rng.integers(len(dist.choices))]
    assert isinstance(dist, (IntDistribution, FloatDistribution))
    low, high = _to_unit(dist, dist.low), _to_unit(dist, dist.high)
    return _snap(dist, _from_unit(dist, rng.uniform(low, high)))
