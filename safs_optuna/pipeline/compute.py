"""What each stage and each report column cost: epochs, images and wall time, from the storage.

Every trial records how many training images one of its epochs saw (``train_images``), and a
"once" trial how many epochs it trained (``trained_epochs``; a search trial's are its reported
epochs). A column costs its own stage plus the search stages whose winners it trains with — what
SAFS spends to fill it (the same-compute baseline waits for the searches but uses none of them) —
and is shown in multiples of one fine-tune: the baseline's images (its epochs, for studies stored
before images were recorded).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from ..report import COLUMNS
from .stages import Kind, Stage

if TYPE_CHECKING:
    from .worker import Pipeline

__all__ = ["TRAINED_EPOCHS_ATTR", "TRAIN_IMAGES_ATTR", "Compute", "column_compute", "compute_line",
           "searched_epochs", "stage_compute", "trial_compute"]

TRAIN_IMAGES_ATTR = "train_images"  # user attr: training images one epoch of the trial saw
TRAINED_EPOCHS_ATTR = "trained_epochs"  # user attr of a "once" trial: the epochs it trained


@dataclass(frozen=True)
class Compute:
    """Training spent: epochs, images (epochs × images per epoch; 0 where not recorded), seconds."""

    epochs: int = 0
    images: int = 0
    seconds: float = 0.0

    def __add__(self, other: Compute) -> Compute:
        return Compute(self.epochs + other.epochs, self.images + other.images, self.seconds + other.seconds)

    def fine_tunes(self, unit: Compute) -> float | None:
        """This in multiples of ``unit`` (one fine-tune): by images where both have them, else epochs."""
        if self.images and unit.images:
            return self.images / unit.images
        return self.epochs / unit.epochs if unit.epochs else None


def trial_compute(trial: FrozenTrial) -> Compute:
    """What one trial trained, in any state (a running trial's wall time runs to now)."""
    epochs = int(trial.user_attrs.get(TRAINED_EPOCHS_ATTR, len(trial.intermediate_values)))
    images = epochs * int(trial.user_attrs.get(TRAIN_IMAGES_ATTR, 0))
    seconds = 0.0
    if trial.datetime_start is not None:
        end = trial.datetime_complete or datetime.datetime.now()
        seconds = max(0.0, (end - trial.datetime_start).total_seconds())
    return Compute(epochs, images, seconds)


def _total(trials: Iterable[FrozenTrial]) -> Compute:
    return sum((trial_compute(t) for t in trials), Compute())


def _stage_trials(pipe: Pipeline, stage: Stage) -> list[FrozenTrial]:
    """Every trial of ``stage``'s study (none before it is created)."""
    try:
        study = optuna.load_study(study_name=pipe.cfg.study_name(stage.name), storage=pipe.studies.storage)
    except KeyError:  # not created yet
        return []
    return study.get_trials(deepcopy=False)


def stage_compute(pipe: Pipeline, stage: Stage) -> Compute:
    """Everything ``stage``'s study trained, its failed and stopped trials included."""
    return _total(_stage_trials(pipe, stage))


def _upstream_searches(stage: Stage, stages: Sequence[Stage], by_results: bool = False) -> list[Stage]:
    """The search stages ``stage`` needs, directly or through others; with ``by_results``, only
    those whose winners it trains with (``trees_from``, ``protocol_from``), directly or through others."""
    by_name = {s.name: s for s in stages}

    def before(s: Stage) -> list[str]:
        return [n for n in (s.trees_from, s.protocol_from) if n] if by_results else list(s.needs)

    seen: dict[str, Stage] = {}
    todo = before(stage)
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen[name] = by_name[name]
        todo.extend(before(by_name[name]))
    return [s for s in seen.values() if s.kind == Kind.SEARCH]


def searched_epochs(pipe: Pipeline, stage: Stage, train_images: int) -> int:
    """Full-data epochs (of ``train_images`` images each) that train as many images as the search
    stages ``stage`` needs trained together, every trial counted (pruned and failed ones too); a
    trial that recorded no image count is taken to have seen ``train_images`` per epoch."""
    images = sum(trial_compute(t).epochs * int(t.user_attrs.get(TRAIN_IMAGES_ATTR, train_images))
                 for search in _upstream_searches(stage, pipe.stages) for t in _stage_trials(pipe, search))
    return max(1, round(images / train_images))


def column_compute(pipe: Pipeline) -> dict[str, Compute]:
    """Compute per report column (its stage and the searches whose winners it trains with), and ``"total"``:
    every stage of the study."""
    spent = {s.name: stage_compute(pipe, s) for s in pipe.stages}
    out = {}
    for stage in sorted((s for s in pipe.stages if s.column), key=lambda s: COLUMNS.index(s.column)):
        parts = [stage, *_upstream_searches(stage, pipe.stages, by_results=True)]
        out[stage.column] = sum((spent[s.name] for s in parts), Compute())
    out["total"] = sum(spent.values(), Compute())
    return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def compute_line(pipe: Pipeline) -> str:
    """One line: each column's compute in fine-tunes, epochs and wall time, then the total."""
    columns = column_compute(pipe)
    unit = columns.get("magnitude pruning", Compute())
    if not unit.epochs:
        unit = Compute(epochs=pipe.cfg.final.epochs)  # the baseline has not trained yet

    def cell(name: str, c: Compute) -> str:
        times = c.fine_tunes(unit)
        shown = f"{times:.1f} fine-tunes, " if times is not None else ""
        return f"{name} {shown}{c.epochs} epoch{'s' if c.epochs != 1 else ''}, {_duration(c.seconds)}"

    return "Compute (the column's stage and the searches it uses; a fine-tune is the baseline's): " + \
        "; ".join(cell(name, c) for name, c in columns.items() if c.epochs or c.seconds) + "."
