"""What a worker prints: its lines, each naming the study and the worker, and the per-epoch lines."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..config import TrainingConfig
from ..training import EpochStats

__all__ = ["WorkerLog", "epoch_line", "gradual_epoch_line", "shown"]


class WorkerLog:
    """A worker's log: ``log(msg)`` writes ``[<study> w<worker>] msg`` to ``sink`` (default: stderr).

    Args:
        study: The study's name.
        worker: This worker's number (1 is the process that started a run; 0 one started alone).
        sink: Where the lines go.
    """

    def __init__(self, study: str, worker: int, sink: Callable[[str], None] | None = None) -> None:
        self.study = study
        self.worker = worker
        self.sink = sink or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def __call__(self, msg: str) -> None:
        self.sink(f"[{self.study} w{self.worker}] {msg}")


def shown(training: TrainingConfig, value: float) -> str:
    """A validation value as the log shows it: accuracy in percent, a user metric by name."""
    return f"{value:.2f}%" if training.is_accuracy else f"{training.metric} {value:.4g}"


def epoch_line(log: Callable[[str], None], label: str, epochs: int, training: TrainingConfig,
               user_fit: bool) -> Callable[[EpochStats], None]:
    """The ``on_epoch`` of a fine-tune: one line per epoch (the user's loop reports its own metric)."""
    def on_epoch(stats: EpochStats) -> None:
        if not user_fit:
            log(f"{label} epoch {stats.epoch + 1}/{epochs} loss {stats.train_loss:.3f} "
                f"val {stats.val_accuracy:.2f}% ({stats.seconds:.1f}s)")
        else:
            log(f"{label} epoch {stats.epoch + 1}/{epochs} {training.metric} {stats.val_accuracy:.4g} "
                f"val loss {stats.val_loss:.4g} ({stats.seconds:.1f}s)")
    return on_epoch


def gradual_epoch_line(log: Callable[[str], None], stage: str, epoch: int, epochs: int,
                       sparsity: float) -> Callable[[EpochStats], None]:
    """The ``on_epoch`` of one epoch of gradual pruning: the sparsity it trained at, too."""
    def on_epoch(stats: EpochStats) -> None:
        log(f"{stage} epoch {epoch + 1}/{epochs} sparsity {100 * sparsity:.2f}% loss "
            f"{stats.train_loss:.3f} val {stats.val_accuracy:.2f}% ({stats.seconds:.1f}s)")
    return on_epoch
