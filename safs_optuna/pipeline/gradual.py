"""Gradual magnitude pruning (Zhu & Gupta 2017) as the sparsify stage does it, resumable by epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
from torch import nn

from ..checkpoint import CheckpointError
from ..samplers.seeded import position_seed
from ..sparsity import cubic_sparsity, sparsity_report
from ..training import DivergedError, EpochStats, HParams, fit
from .logs import gradual_epoch_line
from .stages import Stage
from .studies import PROGRESS_ATTR, PipelineError

if TYPE_CHECKING:
    from .worker import Pipeline

__all__ = ["prune_gradually"]


def prune_gradually(pipe: Pipeline, stage: Stage, trial: optuna.Trial, hp: HParams, epochs: int
                    ) -> tuple[nn.Module, float, str | None]:
    """Before epoch ``e`` the sparsity rises to ``cubic_sparsity(e + 1, epochs)``, then one epoch
    of the default protocol; the last epoch ends at the config's ratio. After each epoch the
    model is stored with the epoch count, so a worker killed on the way is resumed from its last
    finished epoch. Returns the model, its validation accuracy after the last epoch and the
    artifact id of the last progress file."""
    res = pipe.res
    model, done, schedule, previous = _start(pipe, stage)
    for epoch in range(done, epochs):
        ratio = cubic_sparsity(epoch + 1, epochs, final=pipe.cfg.sparsity.ratio)
        res.prune(model, ratio)
        stats = _epoch(pipe, stage, model, hp, epoch, epochs)
        schedule.append([round(100 * sparsity_report(model).ratio, 3), round(stats.val_accuracy, 4)])
        checkpoint = res.save_progress(model, epoch + 1)
        trial.set_user_attr(PROGRESS_ATTR, {"epoch": epoch + 1, "checkpoint": checkpoint, "schedule": schedule})
        res.drop_progress(previous)  # only now: the attr names the newer file
        previous = checkpoint
    trial.set_user_attr("schedule", schedule)
    return model, schedule[-1][1], previous


def _start(pipe: Pipeline, stage: Stage) -> tuple[nn.Module, int, list[list[float]], str | None]:
    """Where gradual pruning starts: the last epoch stored by an earlier try of the stage
    (its model, epochs done, per-epoch record, progress file), else the dense network."""
    found = pipe.studies.progress(stage)
    if found is not None:
        number, progress = found
        try:
            model, done = pipe.res.load_progress(progress["checkpoint"])
        except CheckpointError as exc:
            pipe.log(f"{stage.name}: the progress stored by trial {number} cannot be used ({exc}); "
                     "starting gradual pruning over")
        else:
            epochs = pipe.cfg.sparsity.gradual_epochs
            pipe.log(f"{stage.name}: resuming gradual pruning at epoch {done + 1}/{epochs} "
                     f"(epochs 1-{done} done by trial {number})")
            return model, done, list(progress["schedule"])[:done], progress["checkpoint"]
    return pipe.res.dense_model(), 0, [], None


def _epoch(pipe: Pipeline, stage: Stage, model: nn.Module, hp: HParams, epoch: int, epochs: int) -> EpochStats:
    """One epoch of gradual pruning's fine-tuning: a fresh optimizer, as the masks just grew;
    seeded by the epoch, so a resumed run trains exactly as one that never stopped."""
    cfg = pipe.cfg
    on_epoch = gradual_epoch_line(pipe.log, stage.name, epoch, epochs, sparsity_report(model).ratio)
    on_batch = pipe.cores.refresh if pipe.cores is not None else None  # follow the threads lent to this worker
    try:
        result = fit(model, pipe.res.splits, hp, 1, device=cfg.device, seed=position_seed(cfg.seed, epoch),
                     progress=False, on_epoch=on_epoch, on_batch=on_batch)
    except DivergedError as exc:
        raise PipelineError(f"{stage.name}: fine-tuning diverged in epoch {epoch + 1} ({exc})") from exc
    return result.history[-1]
