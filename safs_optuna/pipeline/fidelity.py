"""How long a search stage's trials train: the configured epochs, ``"final"`` or ``"auto"``.

``"final"`` is the full fine-tune's epochs. ``"auto"`` is measured by the stage's start trial
(the network's own activations, or the default protocol) as it trains, and recorded on the
study, so every worker and every later run uses the same number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from ..config import FINAL, StudyConfig
from ..ranking import chance_band
from ..training import EpochStats, FitResult, majority_accuracy
from .stages import Stage

__all__ = ["AUTO_FLOOR", "FIDELITY_ATTR", "FIDELITY_WHY_ATTR", "auto_epochs", "configured_epochs", "known_epochs",
           "record_auto_epochs", "trial_epochs"]

AUTO_FLOOR = 2
"""Fewest epochs per candidate that ``epochs = "auto"`` chooses."""
FIDELITY_ATTR = "epochs"  # study user attr: epochs per trial of a search stage, once known
FIDELITY_WHY_ATTR = "epochs_reason"
START_ATTR = "start"  # user attr of a search stage's start trial
WAIT_SECONDS = 0.5
"""How often a trial claimed beside the running start trial looks whether it has measured the epochs."""


def configured_epochs(cfg: StudyConfig, stage: Stage) -> int | str:
    """A search stage's epochs per trial as configured: a number (``"final"``: the full
    fine-tune's) or ``"auto"``."""
    epochs = getattr(cfg, stage.section).epochs
    return cfg.final.epochs if epochs == FINAL else epochs


def known_epochs(cfg: StudyConfig, stage: Stage, study: optuna.Study) -> tuple[int | None, str | None]:
    """A search stage's epochs per trial and why: the configured number, or the one that
    ``"auto"`` recorded on ``study`` (None until its start trial has measured it)."""
    configured = configured_epochs(cfg, stage)
    if configured != "auto":
        return int(configured), None
    attrs = study.user_attrs
    return attrs.get(FIDELITY_ATTR), attrs.get(FIDELITY_WHY_ATTR)


def auto_epochs(history: Sequence[float], band: float, ceiling: int) -> tuple[int | None, str]:
    """``epochs = "auto"``: how long candidates train, from the start trial's accuracies so far.

    The start point is the network's own activation, the one a candidate must beat. Candidates
    train until the epoch in which the start point left the chance band, plus one: long enough
    for a candidate that revives sooner than the start point to be ahead of it, and to see who is
    ahead once both have revived. At least ``AUTO_FLOOR`` epochs, at most ``ceiling`` (a full
    fine-tune). Returns ``(None, "")`` while that is not yet known, i.e. while the start point is
    at chance and below the ceiling.
    """
    move = next((e for e, a in enumerate(history) if a > band), None)
    if move is not None:
        epochs = min(ceiling, max(AUTO_FLOOR, move + 2))
        return epochs, (f"auto: the start point left chance level in epoch {move + 1}; candidates "
                        f"train {move + 1} + 1 epochs (floor {AUTO_FLOOR}, ceiling {ceiling})")
    if len(history) >= ceiling:
        return ceiling, (f"auto: the start point stayed at chance level for {ceiling} epochs; candidates "
                         f"train the ceiling, {ceiling} (the full fine-tune's epochs)")
    return None, ""


def _band(val: Any) -> float:
    """Top of the chance band of ``val``, the split a search stage's trials are scored on."""
    return chance_band(majority_accuracy(val), len(val))


def trial_epochs(cfg: StudyConfig, stage: Stage, study: optuna.Study, trial: optuna.Trial, val: Any,
                 log: Callable[[str], None]) -> tuple[int, Callable[[Sequence[EpochStats]], bool] | None]:
    """Epochs of a search trial, and with ``"auto"`` for the start trial the rule that stops it
    once they are known (``until``); ``val`` is the split its trials are scored on."""
    epochs, _ = known_epochs(cfg, stage, study)
    if epochs is not None:
        return epochs, None
    ceiling = cfg.final.epochs
    if not trial.user_attrs.get(START_ATTR):
        # Claimed beside a running start trial (a rare race): wait for its measurement.
        log(f"{stage.name} #{trial.number}: waiting for the start trial to measure the epochs")
        while epochs is None:
            time.sleep(WAIT_SECONDS)
            epochs, _ = known_epochs(cfg, stage, study)
        return epochs, None
    band = _band(val)

    def until(history: Sequence[EpochStats]) -> bool:
        known, _ = auto_epochs([h.val_accuracy for h in history], band, ceiling)
        return known is not None and len(history) >= known
    return ceiling, until


def record_auto_epochs(cfg: StudyConfig, stage: Stage, study: optuna.Study, result: FitResult, val: Any,
                       log: Callable[[str], None]) -> None:
    """Store on ``study`` the epochs that the start trial's ``result`` measured, for every worker."""
    epochs, reason = auto_epochs([h.val_accuracy for h in result.history], _band(val), cfg.final.epochs)
    if epochs is None:  # cannot happen: fit ran to the ceiling or until epochs were known
        epochs, reason = len(result.history), "auto: the start trial's epochs"
    study.set_user_attr(FIDELITY_ATTR, int(epochs))
    study.set_user_attr(FIDELITY_WHY_ATTR, reason)
    log(f"{stage.name}: {epochs} epochs per candidate ({reason})")
