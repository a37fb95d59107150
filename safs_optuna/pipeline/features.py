"""Zero-cost features of stage-1 candidates for the surrogate sampler, and their report.

With ``[activations] surrogate_features`` set, the surrogate sampler describes every candidate
it weighs by those features (:mod:`safs_optuna.zero_cost`), measured on the pruned network and
one batch of the search's training images; each trained candidate records its own as the user
attr ``zero_cost``, and a feature that failed for it is logged and left out, never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from torch import nn

from ..config import StudyConfig
from ..zero_cost import Measured, measure

if TYPE_CHECKING:
    from .resources import Resources
    from .worker import Pipeline

__all__ = ["FEATURES_ATTR", "describer", "record_features"]

FEATURES_ATTR = "zero_cost"
"""User attr of a stage-1 trial: its zero-cost features, by name."""


def _measure(cfg: StudyConfig, res: Resources, model: nn.Module) -> Measured:
    return measure(model.to(cfg.device), res.probe(), cfg.protocol.hparams(), cfg.activations.surrogate_features)


def describer(cfg: StudyConfig, res: Resources) -> Callable[[dict[str, Any]], Sequence[float]] | None:
    """The surrogate sampler's ``describe``: the configured features of a candidate's params (NaN
    for one that failed), or None where no feature is configured."""
    names = cfg.activations.surrogate_features
    if not names:
        return None
    def describe(params: dict[str, Any]) -> list[float]:
        values = _measure(cfg, res, res.fresh(res.space.decode(params))).values
        return [values.get(n, math.nan) for n in names]

    return describe


def record_features(pipe: Pipeline, trial: optuna.Trial, model: nn.Module, label: str) -> None:
    """Record the configured features of the candidate ``model`` on ``trial``; log the failed ones."""
    if not pipe.cfg.activations.surrogate_features:
        return
    measured = _measure(pipe.cfg, pipe.res, model)
    trial.set_user_attr(FEATURES_ATTR, {k: round(v, 6) for k, v in measured.values.items()})
    for where, error in measured.errors.items():
        pipe.log(f"{label}: zero-cost feature failed ({where}: {error}); the surrogate goes on without it")
