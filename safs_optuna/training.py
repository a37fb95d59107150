"""Fine-tuning loop: optimizers, learning-rate schedules, intermediate reports, divergence.

``fit`` trains a model on the ``train`` split of a :class:`safs_optuna.data.Splits` (any object
with ``train``/``val`` ``TensorDataset`` fields and ``num_classes`` works), scores every epoch on
``val``, reports the validation accuracy to an Optuna trial so that its pruner can stop it, and
keeps the weights of the best epoch. ``evaluate`` scores a model on any dataset or loader.

Epochs are numbered from 0 everywhere (history, trial steps, errors), as Optuna pruners expect
their steps to start at zero. Accuracy is in percent (0..100).
"""

from __future__ import annotations

import math
import numbers
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .ranking import CHANCE_ATTR, DIRECTION_ATTR, VAL_LOSS_ATTR, VAL_SIZE_ATTR

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "HParams",
    "DivergedError",
    "EpochStats",
    "FitResult",
    "Evaluation",
    "FitFunction",
    "UserFitError",
    "fit",
    "fit_with",
    "evaluate",
    "fused_optimizer",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step", "linear_warmup", "plateau")

# Augmentation (random crop + flip) only makes sense for natural images such as CIFAR; for
# 28 px digits/clothes a horizontal flip changes the class meaning (digits) and the paper does
# not augment them, so smaller images are left untouched.
AUGMENT_MIN_SIZE = 32
_AUGMENT_PAD = 4

# ReduceLROnPlateau settings: fine-tuning budgets here are a handful of epochs, so torch's
# default patience of 10 would never fire; a second epoch in a row without improvement
# divides the LR by 10.
_PLATEAU_FACTOR = 0.1
_PLATEAU_PATIENCE = 1


def _choices(valid: tuple[str, ...]) -> str:
    return ", ".join(valid)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class HParams:
    """The fine-tuning protocol: optimizer, learning rate and its schedule, batch size.

    Args:
        optimizer: One of :data:`OPTIMIZERS`.
        lr: Initial (peak, for ``linear_warmup``) learning rate, > 0.
        momentum: Momentum of ``sgd`` only, in [0, 1). The other optimizers keep torch's
            defaults (Adam's betas, RMSprop without momentum), matching the stage-2 search
            space, which suggests a momentum for SGD alone.
        weight_decay: L2 penalty (decoupled for ``adamw``), >= 0.
        schedule: One of :data:`SCHEDULES`:

            - ``constant``: ``lr`` throughout.
            - ``cosine``: cosine decay from ``lr`` to 0 over the whole run, stepped per batch.
            - ``step``: ``lr`` times 0.1 from 50 % and times 0.01 from 75 % of the run, counted
              in optimizer steps (per batch) so that it also works for runs of one epoch; with a
              number of epochs divisible by 4 this is exactly MultiStepLR at 50 % and 75 %.
            - ``linear_warmup``: linear warm-up from ``lr / warmup_steps`` to ``lr`` over the
              first epoch (but never more than a fifth of the run), then cosine decay to 0,
              both per batch.
            - ``plateau``: ReduceLROnPlateau on the validation accuracy (mode ``max``),
              factor 0.1 after two epochs in a row without improvement (patience 1),
              stepped once per epoch.
        batch_size: Training batch size, >= 1.
        nesterov: Nesterov momentum; needs ``optimizer="sgd"`` and ``momentum > 0``.
        augment: Random crop (4 px zero padding) and horizontal flip of training batches;
            applied only to images of at least 32 px (CIFAR-like), ignored with a warning for
            smaller ones such as MNIST.

    Example:

        .. code-block:: python

            from safs_optuna.training import HParams

            hp = HParams(optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine")
            HParams(optimizer="lbfgs")  # ValueError: unknown optimizer 'lbfgs'; valid: sgd, ...
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    batch_size: int = 128
    nesterov: bool = False
    augment: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; valid: {_choices(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {_choices(SCHEDULES)}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            # Integers from TOML files or Optuna params are fine; store them as floats.
            object.__setattr__(self, name, float(value))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if (
            not isinstance(self.batch_size, numbers.Integral)
            or isinstance(self.batch_size, bool)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        object.__setattr__(self, "batch_size", int(self.batch_size))
        for name in ("nesterov", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0.0):
            raise ValueError(
                "nesterov=True needs optimizer 'sgd' with momentum > 0, got "
                f"optimizer {self.optimizer!r} and momentum {self.momentum!r}"
            )


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss.

    ``Diverged``, its earlier name, is kept as a deprecated alias of this class.

    Attributes:
        epoch: Epoch (from 0) in which the loss went non-finite.
        loss: The non-finite batch loss.
        batch: Batch (from 0) within that epoch, when known.
    """

    def __init__(self, epoch: int, loss: float, batch: int | None = None) -> None:
        # All fields go to args so the exception pickles (worker processes send it back).
        super().__init__(epoch, loss, batch)
        self.epoch = epoch
        self.loss = loss
        self.batch = batch

    def __str__(self) -> str:
        where = f"epoch {self.epoch}" + (f", batch {self.batch}" if self.batch is not None else "")
        return f"training diverged at {where}: loss {self.loss}"


# Deprecated alias (the same class object, so ``except Diverged`` still catches every
# DivergedError); new code should use DivergedError.
Diverged = DivergedError


@dataclass
class EpochStats:
    """One epoch of :func:`fit`: mean training loss, validation scores, LR, wall time."""

    epoch: int
    train_loss: float
    val_accuracy: float
    val_loss: float
    lr: float  # the learning rate of the epoch's last optimizer step
    seconds: float


@dataclass
class FitResult:
    """Outcome of :func:`fit`: best validation accuracy (percent), its epoch, all epochs."""

    best_val_accuracy: float
    best_epoch: int
    history: list[EpochStats] = field(default_factory=list)


class Evaluation(NamedTuple):
    """Accuracy in percent and mean cross-entropy loss of a model on a dataset."""

    accuracy: float
    loss: float


# --------------------------------------------------------------------------- evaluation


def _batches(data: Dataset | DataLoader, batch_size: int, loader_workers: int = 0,
             pin_memory: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, TensorDataset):
        x, y = data.tensors[0], data.tensors[1]
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, num_workers=loader_workers, pin_memory=pin_memory)
    for batch in loader:
        yield batch[0], batch[1]


def _train_batches(train: Dataset, order: Tensor, batch_size: int, steps: int, device: torch.device,
                   loader_workers: int) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch's training batches in the order ``order`` (the same for both paths).

    A ``TensorDataset`` is sliced directly: no per-sample overhead, the fast path for data held
    in memory. Any other map-style dataset is read through a ``DataLoader`` that takes exactly
    those index batches, with ``loader_workers`` worker processes and pinned memory on CUDA.
    """
    chunks = [order[b * batch_size : (b + 1) * batch_size] for b in range(steps)]
    if isinstance(train, TensorDataset):
        x, y = train.tensors[0], train.tensors[1]
        for idx in chunks:
            yield x[idx], y[idx]
        return
    loader = DataLoader(train, batch_sampler=[c.tolist() for c in chunks], num_workers=loader_workers,
                        pin_memory=device.type == "cuda")
    for batch in loader:
        yield batch[0], batch[1]


@torch.no_grad()
def _score(
    model: nn.Module, data: Dataset | DataLoader, device: torch.device, batch_size: int,
    loader_workers: int = 0,
) -> Evaluation:
    correct = 0
    total = 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in _batches(data, batch_size, loader_workers, device.type == "cuda"):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += int((logits.argmax(dim=1) == y).sum())
        total += len(y)
    if total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return Evaluation(accuracy=100.0 * correct / total, loss=float(loss_sum) / total)


def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
    loader_workers: int = 0,
) -> Evaluation:
    """Accuracy (percent) and mean cross-entropy of ``model`` on ``data``.

    Args:
        model: A classifier returning logits; moved to ``device``.
        data: A ``TensorDataset`` (sliced directly, no per-sample overhead), any other map-style
            ``Dataset`` of ``(input, label)`` pairs, or a ``DataLoader`` (used as is).
        device: Where to run.
        batch_size: Batch size for datasets (a loader keeps its own).
        loader_workers: ``DataLoader`` worker processes for a dataset that is not a
            ``TensorDataset``.

    The model runs in eval mode without gradients; every submodule's training flag is restored
    afterwards, so a model that was training keeps training.
    """
    device = torch.device(device)
    model.to(device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return _score(model, data, device, batch_size, loader_workers)
    finally:
        for module, mode in modes:
            module.training = mode


# --------------------------------------------------------------------------- optimization


def _make_optimizer(params: list[nn.Parameter], hp: HParams) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return fused_optimizer(
            torch.optim.SGD, params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
            nesterov=hp.nesterov,
        )
    if hp.optimizer == "adam":
        return fused_optimizer(torch.optim.Adam, params, lr=hp.lr, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return fused_optimizer(torch.optim.AdamW, params, lr=hp.lr, weight_decay=hp.weight_decay)
    return torch.optim.RMSprop(params, lr=hp.lr, weight_decay=hp.weight_decay, foreach=True)


# Devices with a fused step for SGD, Adam and AdamW (CPUs since torch 2.4; 2.5 to be safe).
_FUSED_DEVICES = ("cpu", "cuda") if torch.torch_version.TorchVersion(torch.__version__) >= "2.5" else ()


def fused_optimizer(cls: type[torch.optim.Optimizer], params: list[nn.Parameter],
                    **kwargs: Any) -> torch.optim.Optimizer:
    """``cls`` with its fused step where this torch has one for the parameters' device, else with
    its multi-tensor (foreach) step.

    The default step on a CPU takes one parameter after another, a dozen small ops each: the
    learnable operators add many 0-dim parameters, and LeNet-5's optimizer step took about a
    tenth of its train step that way. The fused step computes the same update up to float rounding.
    """
    if params and all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params):
        return cls(params, fused=True, **kwargs)
    return cls(params, foreach=True, **kwargs)


def _lr_factor(schedule: str, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """LR multiplier for optimizer step ``t`` (0-based) of a per-batch schedule."""

    def cosine(t: int, start: int = 0) -> float:
        span = max(1, total_steps - start)
        return 0.5 * (1.0 + math.cos(math.pi * min(t - start, span) / span))

    if schedule == "cosine":
        return cosine
    if schedule == "step":
        return lambda t: 0.1 ** ((t >= 0.5 * total_steps) + (t >= 0.75 * total_steps))
    if schedule == "linear_warmup":
        warmup = max(1, min(steps_per_epoch, total_steps // 5))
        return lambda t: (t + 1) / warmup if t < warmup else cosine(t, warmup)
    raise AssertionError(schedule)  # constant and plateau have no per-batch schedule


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop with 4 px zero padding and random horizontal flip, per sample."""
    n, _, h, w = x.shape
    pad = _AUGMENT_PAD
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (n, c, h, w)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, out.flip(3), out).contiguous()


def majority_accuracy(data: Dataset) -> float:
    """Accuracy (%) of always predicting the most common label of ``data``: the chance level."""
    from .data import labels_of

    labels = labels_of(data)
    if len(labels) == 0:
        return 0.0
    return 100.0 * float(torch.bincount(labels.long()).max()) / len(labels)


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_snapshot(model: nn.Module, state: dict[str, Tensor]) -> None:
    model.load_state_dict(state)
    # torch.nn.utils.prune keeps `weight` as a plain attribute recomputed from weight_orig *
    # weight_mask before each forward; recompute it now so it matches the loaded weights.
    from torch.nn.utils.prune import BasePruningMethod

    # Without autograd: a weight with a grad_fn would make the model impossible to deep-copy,
    # and the next forward recomputes it with autograd anyway.
    with torch.no_grad():
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, BasePruningMethod):
                    hook(module, ())


def _progress_bar(progress: bool | None, total: int, desc: str) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr)


# How many batch losses to collect before checking them for NaN/inf. On CPU a check is free;
# on an accelerator each check synchronises the device, so it looks every few batches instead
# (training goes on for at most that many batches after a divergence, then stops).
_LOSS_CHECK_EVERY_CPU = 1
_LOSS_CHECK_EVERY_ACCELERATOR = 16


def fit(
    model: nn.Module,
    splits: Any,
    hparams: HParams,
    epochs: int,
    trial: optuna.trial.BaseTrial | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    until: Callable[[Sequence[EpochStats]], bool] | None = None,
    on_batch: Callable[[], object] | None = None,
    loader_workers: int = 0,
) -> FitResult:
    """Train ``model`` on ``splits.train``, score each epoch on ``splits.val``, keep the best.

    Args:
        model: A classifier returning logits. Only parameters with ``requires_grad`` are
            optimised (frozen α/β of activations stay frozen); modules sparsified with
            ``torch.nn.utils.prune`` keep their masks. Moved to ``device``.
        splits: A :class:`safs_optuna.data.Splits`, or any object with ``train`` and ``val``
            fields: map-style datasets of ``(input, label)`` pairs. A ``TensorDataset`` is
            sliced in memory; any other dataset is read through a ``DataLoader``.
        hparams: The protocol (optimizer, LR, schedule, batch size, augmentation).
        epochs: Number of epochs, >= 1.
        trial: An Optuna trial. At the start its user attrs ``chance_accuracy`` (the accuracy,
            in percent, of always predicting the most common validation class) and ``val_size``
            are set; after each epoch ``val_loss`` (the list of validation losses so far) and
            ``train_loss`` are set (before the report,
            so that :class:`~safs_optuna.pruners.DivergencePruner` sees it), the validation
            accuracy is reported with the epoch as step, and ``optuna.TrialPruned`` is raised
            when ``trial.should_prune()`` says so.
        device: Where to train.
        seed: Seeds the batch order, the augmentation and the global torch RNG (dropout) inside
            this call; the caller's global RNG state is restored afterwards. The same seed gives
            the same numbers twice on CPU.
        progress: Show a tqdm bar on stderr; ``None`` shows it only on an interactive terminal.
        on_epoch: Called with each epoch's :class:`EpochStats` (e.g. for progress lines).
        until: Called after each epoch with the epochs so far; training stops early when it
            returns True (``epochs`` is then a ceiling).
        on_batch: Called after each optimizer step, in the training thread (e.g. to change the
            number of torch threads while training).
        loader_workers: ``DataLoader`` worker processes for datasets that are not a
            ``TensorDataset`` (0: read in the training process).

    Returns:
        The best validation accuracy (percent), its epoch (from 0) and the per-epoch history.
        The model holds the weights of the best epoch, also when training stops early with
        :class:`DivergedError` or ``optuna.TrialPruned`` (if at least one epoch finished).

    Raises:
        DivergedError: A batch loss was NaN or infinite; names the epoch and batch.
        optuna.TrialPruned: The trial's pruner stopped the trial.

    Notes:
        A trailing batch of a single sample is skipped (a different sample each epoch, as the
        order is shuffled), because batch norm cannot train on one sample.
    """
    if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not isinstance(hparams, HParams):
        raise TypeError(f"hparams must be a safs_optuna.training.HParams, got {type(hparams)}")
    for name in ("train", "val"):
        split = getattr(splits, name, None)
        if not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
            raise TypeError(f"splits.{name} must be a map-style torch Dataset, got {type(split).__name__}")
    device = torch.device(device)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        return _fit(model, splits, hparams, int(epochs), trial, device, seed, progress, on_epoch, until, on_batch,
                    loader_workers)


def _fit(
    model: nn.Module,
    splits: Any,
    hp: HParams,
    epochs: int,
    trial: Any,
    device: torch.device,
    seed: int,
    progress: bool | None,
    on_epoch: Callable[[EpochStats], None] | None,
    until: Callable[[Sequence[EpochStats]], bool] | None = None,
    on_batch: Callable[[], object] | None = None,
    loader_workers: int = 0,
) -> FitResult:
    train = splits.train
    n = len(train)
    if n == 0:
        raise ValueError("the training split is empty")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True to train")
    optimizer = _make_optimizer(params, hp)

    steps_per_epoch = math.ceil(n / hp.batch_size)
    if n % hp.batch_size == 1 and n > 1:
        steps_per_epoch -= 1  # no trailing batch of one sample (see Notes)
    scheduler: Any = None
    if hp.schedule in ("cosine", "step", "linear_warmup"):
        factor = _lr_factor(hp.schedule, epochs * steps_per_epoch, steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    elif hp.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=_PLATEAU_FACTOR, patience=_PLATEAU_PATIENCE
        )

    shape = tuple(train.tensors[0].shape[1:]) if isinstance(train, TensorDataset) else tuple(train[0][0].shape)
    augment = hp.augment and len(shape) == 3 and shape[-1] >= AUGMENT_MIN_SIZE
    if hp.augment and not augment:
        warnings.warn(
            f"augment=True ignored: augmentation needs 4-D images of at least "
            f"{AUGMENT_MIN_SIZE} px, got shape {shape}",
            stacklevel=3,
        )
    generator = torch.Generator().manual_seed(seed)
    check_every = _LOSS_CHECK_EVERY_CPU if device.type == "cpu" else _LOSS_CHECK_EVERY_ACCELERATOR

    if trial is not None:
        # What the comparison of trials needs (safs_optuna.ranking): the accuracy of always
        # predicting the most common validation class, and how many images measure accuracy.
        trial.set_user_attr(CHANCE_ATTR, majority_accuracy(splits.val))
        trial.set_user_attr(VAL_SIZE_ATTR, len(splits.val))

    history: list[EpochStats] = []
    best_state: dict[str, Tensor] | None = None
    best_acc, best_epoch = -math.inf, -1
    bar = _progress_bar(progress, epochs * steps_per_epoch, desc="fit")
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=generator)
            pending: list[Tensor] = []  # batch losses not yet checked for NaN/inf
            sizes: list[int] = []
            loss_sum, seen = 0.0, 0
            lr = optimizer.param_groups[0]["lr"]
            batches = _train_batches(train, order, hp.batch_size, steps_per_epoch, device, loader_workers)
            for batch, (x, y) in enumerate(batches):
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if augment:
                    x = _augment(x, generator)
                loss = F.cross_entropy(model(x), y)
                pending.append(loss.detach())
                sizes.append(len(y))
                if len(pending) == check_every or batch == steps_per_epoch - 1:
                    loss_sum += _check_losses(pending, sizes, epoch, batch, trial)
                    seen += sum(sizes)
                    pending, sizes = [], []
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                if scheduler is not None and hp.schedule != "plateau":
                    scheduler.step()
                if on_batch is not None:
                    on_batch()
                if bar is not None:
                    bar.update(1)
            train_loss = loss_sum / seen
            val = _score_eval(model, splits.val, device, loader_workers)
            if hp.schedule == "plateau":
                scheduler.step(val.accuracy)
            stats = EpochStats(
                epoch=epoch,
                train_loss=train_loss,
                val_accuracy=val.accuracy,
                val_loss=val.loss,
                lr=lr,
                seconds=time.perf_counter() - start,
            )
            history.append(stats)
            if trial is not None:
                trial.set_user_attr(VAL_LOSS_ATTR, [round(h.val_loss, 6) for h in history])
            if val.accuracy > best_acc:
                best_acc, best_epoch = val.accuracy, epoch
                best_state = _snapshot(model)
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{val.accuracy:.2f}%")
            if on_epoch is not None:
                on_epoch(stats)
            if trial is not None:
                _report(trial, stats)
            if until is not None and until(history):
                break
    finally:
        if bar is not None:
            bar.close()
        # Leave the best weights in the model even when stopping early (pruned, diverged).
        if best_state is not None:
            _load_snapshot(model, best_state)
    return FitResult(best_val_accuracy=best_acc, best_epoch=best_epoch, history=history)


def _score_eval(model: nn.Module, data: Dataset, device: torch.device, loader_workers: int = 0) -> Evaluation:
    model.eval()
    try:
        return _score(model, data, device, batch_size=1024, loader_workers=loader_workers)
    finally:
        model.train()


def _check_losses(
    pending: list[Tensor], sizes: list[int], epoch: int, last_batch: int, trial: Any
) -> float:
    """Sum of the pending batch losses weighted by batch size; raises DivergedError on NaN/inf."""
    losses = torch.stack(pending)
    # One device sync for all pending batches; float64 so that large finite losses times the
    # batch size do not overflow into a false divergence.
    weights = torch.tensor(sizes, dtype=torch.float64, device=losses.device)
    total = float((losses.double() * weights).sum())
    if math.isfinite(total):
        return total
    bad = int((~torch.isfinite(losses)).nonzero()[0, 0])
    batch = last_batch - len(pending) + 1 + bad
    loss = float(losses[bad])
    if trial is not None:
        trial.set_user_attr("train_loss", loss)
    raise DivergedError(epoch, loss, batch)


def _report(trial: Any, stats: EpochStats) -> None:
    import optuna

    trial.set_user_attr("train_loss", stats.train_loss)
    trial.report(stats.val_accuracy, stats.epoch)
    if trial.should_prune():
        raise optuna.TrialPruned(
            f"pruned at epoch {stats.epoch} with validation accuracy {stats.val_accuracy:.2f}%"
        )


# --------------------------------------------------------------------------- your own loop


class UserFitError(RuntimeError):
    """A user's training function raised; the message is its exception in one line."""


class _StopTraining(Exception):
    """Raised by ``report`` when the caller has seen enough epochs (``until``)."""


Report = Callable[..., None]
"""``report(epoch, metric, loss=None)``: what a training function calls after every epoch."""

FitFunction = Callable[[nn.Module, Any, HParams, int, Report], Any]
"""The training-loop contract: ``fit(model, splits, hparams, epochs, report)``.

- ``model``: the sparse network on the study's device, its activations in place. Train it in
  place; masks of sparse layers stay fixed by themselves (:mod:`torch.nn.utils.prune` hooks), so
  any optimizer works. Move batches to ``next(model.parameters()).device``.
- ``splits``: :class:`safs_optuna.data.Splits` — ``train``, ``val``, ``test`` datasets and
  ``num_classes``. Never select on ``test``.
- ``hparams``: the protocol to train with (:class:`HParams`: optimizer, lr, momentum,
  weight_decay, schedule, batch_size, …); stage 2 searches it, so honour what you can.
- ``epochs``: how many epochs to train.
- ``report(epoch, metric, loss=None)``: call it after every epoch (epochs from 0) with the
  validation metric (``[training] metric``; the built-in one is accuracy in percent) and,
  where you have it, the validation loss. It raises ``optuna.TrialPruned`` when the pruner stops
  the trial (let it propagate), and stops the loop early when the pipeline has seen enough.

The return value is ignored: the pipeline keeps what ``report`` was told and restores the
weights of the best reported epoch afterwards. :func:`fit` is the built-in loop; it meets the
same contract.
"""


def fit_with(
    fit_fn: FitFunction,
    model: nn.Module,
    splits: Any,
    hparams: HParams,
    epochs: int,
    trial: optuna.trial.BaseTrial | None = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    maximize: bool = True,
    accuracy: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
    until: Callable[[Sequence[EpochStats]], bool] | None = None,
) -> FitResult:
    """Run a user training function (see :data:`FitFunction`) as :func:`fit` runs the built-in one.

    The trial sees what :func:`fit` gives it: every reported metric as an intermediate value,
    the validation losses as the user attr ``val_loss`` and, for an ``accuracy`` metric, the
    chance level of the validation split, so that ranking and pruners work unchanged. The model
    ends with the weights of its best reported epoch (by ``maximize``).

    Returns:
        A :class:`FitResult` whose ``best_val_accuracy`` holds the best reported metric.

    Raises:
        UserFitError: ``fit_fn`` raised, or reported nothing.
        DivergedError: A reported metric or loss is NaN or infinite.
        optuna.TrialPruned: The trial's pruner stopped it.
    """
    import optuna

    device = torch.device(device)
    model.to(device)
    history: list[EpochStats] = []
    best: dict[str, Any] = {"value": None, "epoch": -1, "state": None}
    started = [time.perf_counter()]
    if trial is not None:
        if accuracy:
            trial.set_user_attr(CHANCE_ATTR, majority_accuracy(splits.val))
            trial.set_user_attr(VAL_SIZE_ATTR, len(splits.val))
        if not (accuracy and maximize):  # how ranking reads a metric without a chance level
            trial.set_user_attr(DIRECTION_ATTR, "maximize" if maximize else "minimize")

    def report(epoch: int, metric: float, loss: float | None = None) -> None:
        if not isinstance(epoch, numbers.Integral) or isinstance(epoch, bool) or epoch != len(history):
            raise UserFitError(f"report(epoch={epoch!r}, …): epochs are reported in order from 0; "
                               f"expected {len(history)}")
        value = float(metric)
        val_loss = float(loss) if loss is not None else math.nan
        if not math.isfinite(value) or (loss is not None and not math.isfinite(val_loss)):
            raise DivergedError(epoch, val_loss if loss is not None else value)
        now = time.perf_counter()
        stats = EpochStats(epoch=epoch, train_loss=math.nan, val_accuracy=value, val_loss=val_loss,
                           lr=math.nan, seconds=now - started[0])
        started[0] = now
        history.append(stats)
        if best["value"] is None or (value > best["value"] if maximize else value < best["value"]):
            best.update(value=value, epoch=epoch, state=_snapshot(model))
        if on_epoch is not None:
            on_epoch(stats)
        if trial is not None:
            if all(math.isfinite(h.val_loss) for h in history):
                trial.set_user_attr(VAL_LOSS_ATTR, [round(h.val_loss, 6) for h in history])
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} with validation metric {value:.4g}")
        if until is not None and until(history):
            raise _StopTraining

    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            try:
                fit_fn(model, splits, hparams, epochs, report)
            except (_StopTraining, optuna.TrialPruned, DivergedError, UserFitError):
                raise
            except Exception as exc:  # noqa: BLE001 - the user's loop may raise anything
                text = " ".join(str(exc).split())
                raise UserFitError(f"[training] fit raised {type(exc).__name__}"
                                   + (f": {text}" if text else "")) from exc
    except _StopTraining:
        pass
    finally:
        if best["state"] is not None:
            _load_snapshot(model, best["state"])
    if not history:
        raise UserFitError("[training] fit returned without calling report(epoch, metric, loss) once; "
                           "call it after every epoch")
    return FitResult(best_val_accuracy=best["value"], best_epoch=best["epoch"], history=history)
