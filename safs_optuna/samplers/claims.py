"""How workers sharing one study keep out of each other's way, for any sampler whose draws are a
function of its seed and the storage: the study's trials as the storage holds them, claims of
proposals, and the wait for a first trial's parameters."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from safs_optuna import optuna_private

__all__ = [
    "CLAIM_ATTR",
    "FINISHED",
    "Proposes",
    "base_seed",
    "all_trials",
    "anchor",
    "claim_unseen",
    "default_key",
    "matches_partial",
    "pending_below",
    "running_below",
    "taken_keys",
    "value_score",
    "wait_for_anchor",
]

_logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_PENDING = (TrialState.RUNNING, TrialState.WAITING)
# System attr in which a trial claims its proposal before returning it, and how often a
# proposal that clashed with another worker's claim is replaced.
CLAIM_ATTR = "lahc:proposal"
_CLAIM_TRIES = 8
# Before any trial finished, a trial started beside the first one waits this long (polling every
# _ANCHOR_POLL_S) for the first one's parameters, so that it moves away from them instead of
# repeating the initial configuration; past it, it starts from a random configuration.
_ANCHOR_WAIT_S = 10.0
_ANCHOR_POLL_S = 0.02


class Proposes(Protocol):
    """What :func:`claim_unseen` draws proposals from."""

    space: Mapping[str, BaseDistribution]

    def propose(self, rng: np.random.Generator, taken: set[Hashable], retry: int = 0) -> dict[str, Any]:
        """A configuration of ``space`` whose key is not in ``taken`` (where one is left).

        ``retry`` counts the proposals of this trial that clashed with another worker's: a
        proposer whose choice is not random (e.g. the best predicted) should let ``rng`` pick
        among its near-best on a retry, or two workers that clashed clash again on the next best.
        """
        ...


def base_seed(seed: int | None) -> int:
    """The sampler's base seed: ``seed`` as SeedSequence wants it, or fresh entropy for None."""
    if seed is None:
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    return int(seed) % 2**64  # SeedSequence wants a non-negative int


def value_score(maximize: bool) -> Callable[[FrozenTrial], float]:
    """The default score: the objective value, negated when the study minimizes."""
    def score(t: FrozenTrial) -> float:
        if t.state != TrialState.COMPLETE or t.value is None:
            return -math.inf
        return t.value if maximize else -t.value
    return score


def all_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of the study, from the storage."""
    # The storage, not study.get_trials: a HyperbandPruner hands samplers a study filtered to one
    # bracket, but the chain is the whole study's (GridSampler does the same).
    storage = optuna_private.storage_of(study)
    return storage.get_all_trials(optuna_private.study_id(study), deepcopy=False)


def default_key(params: dict[str, Any]) -> Hashable:
    """A configuration's identity when no ``canonical_key`` is given: its sorted items."""
    return tuple(sorted(params.items(), key=lambda item: item[0]))


def pending_below(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> int:
    """RUNNING or WAITING trials numbered below ``trial``: two workers asking at once differ here."""
    return sum(1 for t in trials if t.state in _PENDING and t.number < trial.number)


def running_below(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> bool:
    """Whether a trial numbered below ``trial`` is running: it asked for its parameters first."""
    return any(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)


def matches_partial(trials: Sequence[FrozenTrial], proposal: Mapping[str, Any],
                    space: Mapping[str, BaseDistribution], number: int) -> bool:
    """Whether another live trial whose configuration is still partly unknown (it claimed a
    proposal for fewer parameters, from a first trial that was still being suggested, and takes
    the rest later) agrees with ``proposal`` on everything it has: it may end up equal to it."""
    for t in trials:
        if t.state not in _PENDING or t.number == number:
            continue
        known = {**t.system_attrs.get(CLAIM_ATTR, {}), **t.params}
        names = [n for n in space if n in known]
        if names and len(names) < len(space) and all(known[n] == proposal[n] for n in names):
            return True
    return False


def anchor(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> FrozenTrial | None:
    """Before any trial finished: the first other live trial with params (the initial one)."""
    for t in sorted(trials, key=lambda t: t.number):
        if t.state in _PENDING and t.number != trial.number and t.distributions:
            return t
    return None


def wait_for_anchor(study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
    """The study's trials, once ``trial`` has something to move from: a finished trial or an
    anchor (see :func:`anchor`). While it has neither but a trial numbered below it is running
    (that one takes the initial configuration), wait for that trial's parameters, at most
    ``_ANCHOR_WAIT_S``."""
    deadline = time.monotonic() + _ANCHOR_WAIT_S
    while True:
        trials = all_trials(study)
        if (any(t.state in FINISHED for t in trials) or anchor(trials, trial) is not None
                or not running_below(trials, trial) or time.monotonic() > deadline):
            return trials
        time.sleep(_ANCHOR_POLL_S)


def taken_keys(
    trials: Sequence[FrozenTrial],
    space: Mapping[str, BaseDistribution],
    number: int,
    key: Callable[[dict[str, Any]], Hashable],
) -> set[Hashable]:
    """Keys of every configuration the study holds or has queued (FAIL trials and trial
    ``number`` excepted)."""
    taken: set[Hashable] = set()
    for t in trials:
        if t.state == TrialState.FAIL or t.number == number:
            continue
        # What it evaluates or will: its params; those enqueued; else what it claimed.
        params = {**t.system_attrs.get(CLAIM_ATTR, {}), **optuna_private.enqueued_params(t), **t.params}
        if not all(name in params for name in space):
            continue  # another worker's trial still being suggested; its key is not known yet
        try:
            taken.add(key({name: params[name] for name in space}))
        except (KeyError, TypeError, ValueError) as err:
            # An enqueued trial with values canonical_key rejects cannot equal a valid candidate.
            _logger.debug("trial %d has no canonical key (%s); ignored for repeats", t.number, err)
    return taken


def claim_unseen(
    study: optuna.Study,
    trial: FrozenTrial,
    trials: Sequence[FrozenTrial],
    proposer: Proposes,
    key: Callable[[dict[str, Any]], Hashable],
    rng: np.random.Generator,
    seed: int,
    position: int,
) -> dict[str, Any]:
    """A proposal that no other trial (FAIL excepted) holds, claimed for ``trial`` in the storage.

    ``rng`` draws the first proposal; one that clashed with another worker's is replaced from a
    stream of ``seed``, the chain ``position`` and the trial's own number.
    """
    space = proposer.space
    proposal = proposer.propose(rng, taken_keys(trials, space, trial.number, key))
    storage = optuna_private.storage_of(study)
    trial_id = optuna_private.trial_id(trial)
    # Claim the proposal in the storage, then look again: of two workers proposing the same
    # configuration at once, at least one writes its claim before the other reads, so at
    # least one sees the clash, and whoever sees it proposes again, from a stream of its
    # own trial's (two workers at the same chain position may share the first stream), telling
    # the proposer it is a retry so that a deterministic choice does not repeat the clash.
    for attempt in range(_CLAIM_TRIES):
        storage.set_trial_system_attr(trial_id, CLAIM_ATTR, proposal)
        others = all_trials(study)
        taken = taken_keys(others, space, trial.number, key)
        if key(proposal) not in taken and not matches_partial(others, proposal, space, trial.number):
            return proposal
        rng = np.random.default_rng([seed, position, trial.number, attempt])
        proposal = proposer.propose(rng, taken, retry=attempt + 1)
    storage.set_trial_system_attr(trial_id, CLAIM_ATTR, proposal)
    _logger.debug("trial %d still clashed after %d claims", trial.number, _CLAIM_TRIES)
    return proposal
