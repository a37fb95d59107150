"""Every check a run can make before it writes anything, with one line for each failure.

The storage, the artifact folder, the data, the model source and its activation sites, the
model's output on one batch, the sizes of batches and search subsets, ``[sparsity] skip`` and
``min_density``, the user's checkpoints and the earlier winners of ``[activations] warm_start``.
A user's model, data or loop that cannot be imported or does not fit stops here, before the
first study is created.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..config import StudyConfig
from .resources import Resources
from .usercode import UserCode

__all__ = ["InputError", "preflight"]


class InputError(Exception):
    """Something a run was given cannot work; ``code`` is the exit status the CLI uses (2 for a
    bad input, 1 for a machine problem such as an unwritable folder)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def preflight(cfgs: Sequence[StudyConfig], code: UserCode | None = None,
              warn: Callable[[str], None] | None = None) -> None:
    """Check ``cfgs`` (one per seed, the first decides the inputs) before anything is written.

    Raises:
        InputError: The first problem, in one line.
        DatasetNotFoundError / DatasetFormatError: The data is not there or damaged.
    """
    from ..data import DatasetFormatError, DatasetNotFoundError
    from ..sources import SourceError, is_import_path
    from ..storage import check_storage

    cfg = cfgs[0]
    where = cfg.path or "<config>"
    for c in cfgs:
        check_storage(c.storage)  # a folder, an unwritable place or a damaged database: one line
    _check_artifacts(cfg, where)
    try:
        res = Resources(cfg, UserCode.from_config(cfg, code))
        splits = res.splits  # a missing dataset stops here, before anything is written
    except (DatasetNotFoundError, DatasetFormatError):
        raise
    except SourceError as exc:
        raise InputError(f"{where}: {exc}") from None
    except (ValueError, TypeError) as exc:  # data found, but unusable (shape, labels, sizes)
        # The user's own data that does not fit is a bad input; a damaged built-in set is not.
        yours = cfg.data.name.startswith("folder:") or is_import_path(cfg.data.name) or (code and code.data)
        raise InputError(f"{where}: [data] name {cfg.data.name!r}: {exc}", code=2 if yours else 1) from None
    model = _check_model(res, where)
    _check_sizes(cfg, len(splits.train), where)
    _check_sparsity(cfg, model, where)
    _check_checkpoints(cfg, res, where, warn)
    _check_warm_start(cfg, res, where)


def _check_warm_start(cfg: StudyConfig, res: Resources, where: object) -> None:
    """Every ``[activations] warm_start`` source can be read and fits this network and space."""
    from .warm_start import WarmStartError, warm_start_params

    if not cfg.activations.warm_start:
        return
    try:
        warm_start_params(cfg, cfg.storage, res.space, res.own_trees())
    except WarmStartError as exc:
        raise InputError(f"{where}: {exc}") from None


def _check_artifacts(cfg: StudyConfig, where: object) -> None:
    from ..object_store import is_bucket_url
    from ..storage import check_artifacts

    if is_bucket_url(cfg.artifacts):  # a small object is written and removed: one line if it cannot
        # Not waited out: a store out of reach when a worker starts stops it, as the database does.
        check_artifacts(cfg.artifacts, retry_seconds=0)
        return
    art = Path(cfg.artifacts)
    if art.exists() and not art.is_dir():
        raise InputError(f"{where}: artifacts: {art} is a file, not a folder; point artifacts at a folder", 1)
    parent = next(p for p in (art, *art.parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{where}: artifacts: cannot create {art}: {parent} is not a writable folder", 1)


def _check_model(res: Resources, where: object) -> nn.Module:
    """The network builds, has activation sites, and maps one batch to ``num_classes`` logits."""
    from ..models import make_searchable, require_sites
    from ..sources import SourceError

    cfg, splits = res.cfg, res.splits
    name = cfg.model.name
    try:
        model = res.build()
        require_sites(make_searchable(copy.deepcopy(model)), name)
    except SourceError as exc:
        raise InputError(f"{where}: {exc}") from None
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{where}: [model] name {name!r} does not fit the images of "
                         f"{cfg.data.name!r}: {exc}") from None
    x = torch.stack([splits.train[i][0] for i in range(min(2, len(splits.train)))])
    try:
        with torch.no_grad():
            out = copy.deepcopy(model).eval()(x)
    except Exception as exc:  # noqa: BLE001 - whatever the user's forward raises on this input
        raise InputError(f"{where}: [model] name {name!r} fails on a batch of {cfg.data.name!r} "
                         f"(input {tuple(x.shape)}): {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    if not isinstance(out, torch.Tensor) or out.shape != (len(x), splits.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{where}: [model] name {name!r} returns {shape} for a batch of {len(x)} images; "
                         f"a classifier of {cfg.data.name!r} must return ({len(x)}, {splits.num_classes}) "
                         "logits (set [data] num_classes, or the model's)")
    return model


def _check_sizes(cfg: StudyConfig, n: int, where: object) -> None:
    batch = cfg.protocol.batch_size
    if batch > n:
        raise InputError(f"{where}: [protocol] batch_size: {batch} is more than the {n} training images "
                         f"of {cfg.data.name!r}; use at most {n}")
    for stage in ("activations", "hpo"):
        fraction = getattr(cfg, stage).fraction
        size = max(1, round(fraction * n))
        if fraction < 1.0 and size < batch:
            raise InputError(f"{where}: [{stage}] fraction: {fraction:g} of the {n} training images is "
                             f"{size}, less than one batch ([protocol] batch_size = {batch}); use "
                             f"fraction >= {batch / n:.3g} or a smaller batch_size")


def _check_sparsity(cfg: StudyConfig, model: nn.Module, where: object) -> None:
    from ..sparsity import magnitude_prune, prunable_modules

    layers = list(prunable_modules(model))
    # A path skips the layer of that name, or every layer below it (as magnitude_prune reads it).
    valid = [m for m, _ in model.named_modules() if m and any(n == m or n.startswith(m + ".") for n in layers)]
    for path in cfg.sparsity.skip:
        if path not in valid:
            raise InputError(f"{where}: [sparsity] skip: {path!r} is not a module of {cfg.model.name!r} "
                             f"that holds weights to prune; valid: {', '.join(valid)}")
    if cfg.sparsity.min_density and cfg.sparsity.checkpoint is None:
        sp = cfg.sparsity  # globs that match nothing, a ratio the minimums make unreachable
        try:
            magnitude_prune(copy.deepcopy(model), sp.ratio, scope=sp.scope, skip=sp.skip,
                            min_density=sp.min_density)
        except ValueError as exc:
            raise InputError(f"{where}: [sparsity] min_density: {exc}") from None


def _check_checkpoints(cfg: StudyConfig, res: Resources, where: object,
                       warn: Callable[[str], None] | None) -> None:
    """Read the user's checkpoints as the stages will; a pruned one's sparsity is compared with
    ``[sparsity] ratio`` (which it replaces)."""
    from ..checkpoint import CheckpointError, load_dense_weights
    from ..sparsity import sparsity_report
    from .studies import PipelineError

    if cfg.dense.checkpoint and cfg.sparsity.checkpoint is None:
        try:
            load_dense_weights(res.build(), cfg.dense.checkpoint, name=cfg.model.name)
        except CheckpointError as exc:  # a file that cannot be used, as the dense stage would say
            raise InputError(f"{where}: {exc}", code=1) from None
    if cfg.sparsity.checkpoint:
        try:
            model = res.pruned_model()
        except PipelineError as exc:
            raise InputError(f"{where}: {exc}") from None
        measured = sparsity_report(model).ratio
        if abs(measured - cfg.sparsity.ratio) > 0.0005 and warn is not None:
            warn(f"{where}: [sparsity] checkpoint {cfg.sparsity.checkpoint} has sparsity "
                 f"{100 * measured:.2f} %, not [sparsity] ratio {cfg.sparsity.ratio:g}; the checkpoint's "
                 "masks are used as they are")
