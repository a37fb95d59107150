"""Moves of the LAHC chain: neighbours of the current configuration, an unseen one among them,
the SAFS code's re-draw-and-swap move, and the first trial's values."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from safs_optuna import optuna_private
from safs_optuna.samplers.values import from_unit, random_value, snap, to_unit

__all__ = ["Proposer", "initial_value"]

_logger = logging.getLogger(__name__)

# Random neighbours tried before the neighbourhood is enumerated: cheap, and enough while most
# neighbours are unseen; enumeration only pays off once the neighbourhood is nearly used up.
_RANDOM_TRIES = 16
# A numeric neighbour moves by a Gaussian step of this fraction of the (log) range.
_STEP_FRACTION = 0.1
# Largest finite space enumerated for an unseen configuration once every neighbour is taken.
_MAX_ENUMERATED_SPACE = 100_000
# Categorical choices preferred for the first trial, in order: the dense network's activation and
# the binary operator that makes a tree unary, so the search starts from the all-ReLU baseline.
_PREFERRED_CHOICES = ("relu", "left")


class Proposer:
    """Neighbours of one configuration, and the choice of an unseen one.

    Parameters are grouped by site, the part of the name before the last ``"."``; a move
    changes one parameter of one site, or swaps all parameters of two sites alike in names and
    distributions.
    """

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

    @property
    def space(self) -> dict[str, BaseDistribution]:
        """The parameters that moves change, with their distributions."""
        return self._space

    def propose(self, rng: np.random.Generator, taken: set[Hashable], retry: int = 0) -> dict[str, Any]:
        """A neighbour whose key is not in ``taken``: random ones first, then every one-node
        neighbour and swap, then two-step moves, then any unseen configuration. (Every draw is
        from ``rng`` already, so a retry needs nothing else.)"""
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

    def redraw_and_swap(self, rng: np.random.Generator) -> dict[str, Any]:
        """The SAFS code's move (``optimization_lib.py:185-190``): re-draw one random site's
        parameters, then swap two random sites. Both may leave the configuration unchanged,
        and nothing is checked against earlier trials: repeats are evaluated again."""
        sites = sorted(self._sites)
        params = dict(self._current)
        for name in self._sites[sites[rng.integers(len(sites))]].values():
            params[name] = random_value(rng, self._space[name])
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
            params = {n: random_value(rng, self._space[n]) for n in names}
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



def _same_choice(choice: Any, value: Any) -> bool:
    # 1 == True in Python; a choice only matches a value of its own type.
    return type(choice) is type(value) and choice == value


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return ", ".join(repr(c) for c in dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        step = f" step {dist.step}" if dist.step is not None else ""
        return f"{dist.low} .. {dist.high}{step}{' (log)' if dist.log else ''}"
    return repr(dist)


def initial_value(name: str, dist: BaseDistribution, initial_params: Mapping[str, Any]) -> Any:
    """The first trial's value of ``name``: ``initial_params[name]`` when given, else ``"relu"``,
    else ``"left"``, else the first choice; the midpoint of a numeric (log) range."""
    if name in initial_params:
        value = initial_params[name]
        if not optuna_private.contains(dist, value):
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
        low, high = to_unit(dist, dist.low), to_unit(dist, dist.high)
        return snap(dist, from_unit(dist, (low + high) / 2))
    raise ValueError(f"unsupported distribution {dist!r} for {name!r}")


def _numeric_neighbour(
    rng: np.random.Generator, dist: IntDistribution | FloatDistribution, value: float
) -> int | float:
    low, high = to_unit(dist, dist.low), to_unit(dist, dist.high)
    x = to_unit(dist, value)
    y = x + rng.normal(0.0, _STEP_FRACTION * (high - low))
    # Reflect rather than clip, so that a value sitting on a bound still moves inward.
    if y > high:
        y = high - (y - high)
    if y < low:
        y = low + (low - y)
    new = snap(dist, from_unit(dist, y))
    if new == value:  # the step was finer than the grid: take one grid step that way
        new = _grid_step(dist, value, 1 if y >= x else -1)
    return new


def _grid_step(dist: IntDistribution | FloatDistribution, value: float, direction: int) -> int | float:
    step = dist.step if dist.step is not None else _STEP_FRACTION * (dist.high - dist.low)
    for sign in (direction, -direction):
        new = snap(dist, value + sign * step)
        if new != value:
            return new
    return snap(dist, value)


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
            candidates += [snap(dist, value - d * dist.step), snap(dist, value + d * dist.step)]
    else:
        low, high = to_unit(dist, dist.low), to_unit(dist, dist.high)
        x = to_unit(dist, value)
        for fraction in (0.05, 0.1, 0.2):
            for y in (x - fraction * (high - low), x + fraction * (high - low)):
                candidates.append(snap(dist, from_unit(dist, min(max(y, low), high))))
    return list(dict.fromkeys(c for c in candidates if c != value))


def _all_values(dist: BaseDistribution) -> list[Any] | None:
    """Every value of a finite distribution; None for a continuous one."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None:
        n_grid = int(round((dist.high - dist.low) / dist.step)) + 1
        if n_grid > _MAX_ENUMERATED_SPACE:
            return None
        return list(dict.fromkeys(snap(dist, dist.low + i * dist.step) for i in range(n_grid)))
    return None
