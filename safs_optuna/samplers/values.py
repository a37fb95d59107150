"""Values of Optuna distributions as the samplers draw them: uniform draws, and the coordinates
numeric values move in, independent of Optuna's private transform."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

__all__ = ["from_unit", "random_value", "snap", "to_unit"]


# Numbers move in the coordinates below: the value, or its log for a log distribution, snapped
# back with Python's round. Optuna's own transform (``optuna._transform._SearchSpaceTransform``)
# maps the same coordinates, but it is private and its way back changed between releases: an int
# halfway between two steps goes to the even one in Optuna 4.0 (as here) and up in 5.x
# (IntDistribution(0, 5)'s midpoint becomes 3), and a float range's upper bound is excluded.
# Through it the same seed would draw different trials per Optuna version, so a study resumed
# after an upgrade would leave its chain.
def to_unit(dist: IntDistribution | FloatDistribution, value: float) -> float:
    """The coordinate a numeric value moves in: itself, or its log for a log distribution."""
    return math.log(value) if dist.log else float(value)


def from_unit(dist: IntDistribution | FloatDistribution, y: float) -> float:
    """The value at coordinate ``y`` (the inverse of :func:`to_unit`, before snapping)."""
    return math.exp(y) if dist.log else y


def snap(dist: IntDistribution | FloatDistribution, value: float) -> int | float:
    """Clip to the range and round to the step grid, in the distribution's type."""
    value = min(max(value, dist.low), dist.high)
    if dist.step is not None:
        value = dist.low + round((value - dist.low) / dist.step) * dist.step
        value = min(max(value, dist.low), dist.high)
    return int(round(value)) if isinstance(dist, IntDistribution) else float(value)


def random_value(rng: np.random.Generator, dist: BaseDistribution) -> Any:
    """A uniformly random value of ``dist`` (uniform in the log range for a log one)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[rng.integers(len(dist.choices))]
    assert isinstance(dist, (IntDistribution, FloatDistribution))
    low, high = to_unit(dist, dist.low), to_unit(dist, dist.high)
    return snap(dist, from_unit(dist, rng.uniform(low, high)))
