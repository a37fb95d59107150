"""How two trials are compared: validation accuracy first, validation loss at chance level.

At 99 % sparsity a network often predicts one class for several epochs: its validation accuracy
is the share of that class and says nothing about which candidate is closer to reviving. Its
validation loss still moves (a little, and before the accuracy does). So a trial's **score** is
the pair

    (max(best validation accuracy, top of the chance band), -lowest validation loss)

compared lexicographically (larger is better):

* above the chance band, accuracy decides, and an exact accuracy tie goes to the lower loss;
* at or below the top of the chance band, all accuracies count as equal and the lower loss wins.

The **chance band** is the accuracy of always predicting the validation split's most common
class, plus ``CHANCE_Z`` binomial standard errors of an accuracy measured on that many images:
a network inside it cannot be told from one that guesses. Both numbers come from the trial
(:func:`safs_optuna.training.fit` records ``chance_accuracy`` and ``val_size``), so nothing here is
tuned to a dataset.

Everything is computed from what a trial stored — its reported validation accuracies (the
intermediate values, one per epoch) and its ``val_loss`` curve — optionally cut to the first
``epochs`` epochs, so trials trained for different numbers of epochs can be compared at the same
one. The same rule ranks trials in the LAHC acceptance test, picks a stage's best trial and tells
whether a search found anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "CHANCE_Z",
    "BEHIND_Z",
    "Score",
    "chance_band",
    "curve",
    "curve_score",
    "curve_score_of",
    "trial_score",
    "left_chance",
    "first_move",
    "behind_margin",
]

CHANCE_Z = 2.0
"""Standard errors above the majority-class accuracy that still count as chance level."""

BEHIND_Z = 3.0
"""Standard errors of a difference of two accuracies by which a curve must trail to be 'clearly behind'."""

CHANCE_ATTR = "chance_accuracy"
VAL_SIZE_ATTR = "val_size"
VAL_LOSS_ATTR = "val_loss"
DIRECTION_ATTR = "direction"
"""User attr ``"minimize"`` of a trial whose metric is better when lower (a user's own metric)."""

Score = tuple[float, float]
WORST: Score = (-math.inf, -math.inf)


def _standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error, in percentage points, of an accuracy (%) measured on n images."""
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(max(p * (1.0 - p), 1e-12) / max(n, 1))


def chance_band(chance: float, val_size: int) -> float:
    """Top of the chance band (%): the majority-class accuracy plus ``CHANCE_Z`` standard errors."""
    return chance + CHANCE_Z * _standard_error(chance, val_size)


def behind_margin(a: float, b: float, val_size: int) -> float:
    """Points by which accuracy ``b`` must exceed ``a`` to be clearly better (``BEHIND_Z`` SEs)."""
    se = math.hypot(_standard_error(a, val_size), _standard_error(b, val_size))
    return BEHIND_Z * se


def curve(trial: FrozenTrial, epochs: int | None = None) -> tuple[list[float], list[float]]:
    """The trial's per-epoch validation accuracies and losses, cut to the first ``epochs``."""
    steps = sorted(s for s in trial.intermediate_values if epochs is None or s < epochs)
    accs = [float(trial.intermediate_values[s]) for s in steps]
    losses = [float(x) for x in (trial.user_attrs.get(VAL_LOSS_ATTR) or [])]
    return accs, losses[: len(accs)] if epochs is not None else losses


def curve_score(accuracies: Sequence[float], losses: Sequence[float], band: float) -> Score:
    """The score of one learning curve (see the module docstring)."""
    if not accuracies:
        return WORST
    finite = [x for x in losses if math.isfinite(x)]
    return (max(max(accuracies), band), -min(finite) if finite else -math.inf)


def _band(trial: FrozenTrial) -> float | None:
    chance, n = trial.user_attrs.get(CHANCE_ATTR), trial.user_attrs.get(VAL_SIZE_ATTR)
    if chance is None or n is None:
        return None
    return chance_band(float(chance), int(n))


def trial_score(trial: FrozenTrial, epochs: int | None = None) -> Score:
    """A finished trial's score; PRUNED and FAIL trials score worst.

    A trial without a recorded curve (e.g. made outside :func:`~safs_optuna.training.fit`) scores
    by its value alone.
    """
    if trial.state != TrialState.COMPLETE:
        return WORST
    return curve_score_of(trial, epochs)


def curve_score_of(trial: FrozenTrial, epochs: int | None = None) -> Score:
    """The score of the curve a trial has reported so far, whatever its state (a running trial's
    too): what a pruner compares at an epoch. :func:`trial_score` is this for completed trials."""
    band = _band(trial)
    accs, losses = curve(trial, epochs)
    sign = -1.0 if trial.user_attrs.get(DIRECTION_ATTR) == "minimize" else 1.0
    if not accs:
        value = trial.value if trial.value is not None else -math.inf * sign
        return (sign * float(value), 0.0)
    if band is None:  # a metric that is not accuracy has no chance level: the metric, then the loss
        finite = [x for x in losses if math.isfinite(x)]
        return (max(sign * a for a in accs), -min(finite) if finite else -math.inf)
    return curve_score(accs, losses, band)


def left_chance(trial: FrozenTrial, epochs: int | None = None) -> bool:
    """Whether the trial's validation accuracy ever rose above the chance band (always true for a
    trial whose metric has no chance level: one that is not accuracy)."""
    if _band(trial) is None and trial.user_attrs.get(DIRECTION_ATTR) is not None:
        return True
    return first_move(trial, epochs) is not None


def first_move(trial: FrozenTrial | Any, epochs: int | None = None) -> int | None:
    """The first epoch (from 0) whose validation accuracy is above the chance band, or None."""
    band = _band(trial)
    if band is None:
        return None
    accs, _ = curve(trial, epochs)
    return next((e for e, a in enumerate(accs) if a > band), None)
