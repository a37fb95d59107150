"""The LAHC chain replayed from stored trials, under one of two rule sets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from safs_optuna.samplers.claims import FINISHED, value_score

__all__ = [
    "PAPER_CODE", "RULES", "TEXTBOOK", "VARIANTS", "Chain", "Rules", "replay", "rules_of", "value_score",
]


@dataclass(frozen=True)
class Rules:
    """One LAHC rule set, named by :class:`LAHCSampler`'s ``variant``.

    Line numbers cite ``lahc/_lahc.py`` of the ``lahc`` package 1.0.5 and
    ``safs/optimization/optimization_lib.py`` of the SAFS code (see docs/lahc.md).
    """

    name: str
    """The ``variant`` value that selects these rules."""
    strict_late: bool
    """A candidate must be strictly better than its history entry (a tie with the current
    solution still suffices, ``_lahc.py:155``); else at least as good as either."""
    history_only_improves: bool
    """The history slot takes the current solution's value only when it is strictly better
    (``_lahc.py:169-171``); else always."""
    redraw_and_swap: bool
    """A move re-draws one site at random and then swaps two random sites, repeats allowed and
    evaluated again (``optimization_lib.py:185-190``); else one site changes by one step, or two
    sites swap, and no configuration is proposed twice while an unseen neighbour exists."""
    random_start: bool
    """The first trial draws each parameter not in ``initial_params`` uniformly at random
    (``optimization_lib.py:66-68``); else it starts at ``"relu"`` / ``"left"`` / the midpoint."""

    def accepts(self, value: Any, late: Any, current: Any) -> bool:
        """Whether a candidate scoring ``value`` replaces the current solution (scoring
        ``current``) when its history entry scores ``late``; larger is better."""
        beats_late = value > late if self.strict_late else value >= late
        return beats_late or value >= current

    def overwrites_history(self, current: Any, late: Any) -> bool:
        """Whether the history slot scoring ``late`` takes the current solution's score."""
        return current > late if self.history_only_improves else True


TEXTBOOK = Rules("textbook", strict_late=False, history_only_improves=False, redraw_and_swap=False,
                 random_start=False)
"""Burke & Bykov's LAHC, with local moves and no repeats."""
PAPER_CODE = Rules("paper-code", strict_late=True, history_only_improves=True, redraw_and_swap=True,
                   random_start=True)
"""The ``lahc`` package as the SAFS paper's code runs it."""
RULES: dict[str, Rules] = {r.name: r for r in (TEXTBOOK, PAPER_CODE)}

VARIANTS: tuple[str, ...] = tuple(RULES)
"""Rule sets of :class:`LAHCSampler`: ``textbook`` (Burke & Bykov) and ``paper-code`` (the
``lahc`` package as the SAFS paper's code runs it)."""


def rules_of(variant: str | Rules) -> Rules:
    """The rule set named ``variant``; a :class:`Rules` is returned as it is."""
    if isinstance(variant, Rules):
        return variant
    try:
        return RULES[variant]
    except (KeyError, TypeError):
        valid = ", ".join(map(repr, VARIANTS))
        raise ValueError(f"unknown LAHC variant {variant!r}; valid: {valid}") from None


@dataclass
class Chain:
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


def replay(
    trials: Sequence[FrozenTrial],
    history_length: int,
    score: Callable[[FrozenTrial], Any],
    variant: str | Rules = TEXTBOOK,
) -> Chain:
    """The LAHC loop over stored trials: the first finished trial is the initial solution; each
    later one is a candidate; PRUNED candidates are always rejected. ``variant`` (a name of
    :data:`VARIANTS` or a :class:`Rules`) picks the acceptance and history rules."""
    rules = rules_of(variant)
    chain = Chain()
    for t in sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number):
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
                if rules.accepts(value, late, chain.value):
                    chain.current, chain.value = t, value
            chain.idle = 0 if improved else chain.idle + 1
            if rules.overwrites_history(chain.value, late):
                chain.history[slot] = (chain.value, chain.current)
        chain.position += 1
    return chain
