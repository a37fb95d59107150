"""What a worker loads once and reuses for every trial: data splits, search subsets, checkpoints,
the sparse model every fine-tune starts from."""

from __future__ import annotations

import copy
import os
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from torch import nn

from .. import data as data_mod
from ..activation import OperatorTree
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import StudyConfig
from ..models import make_searchable, sites
from ..space import ActivationSpace
from ..sparsity import magnitude_prune
from ..sources import call_accepting
from ..storage import make_artifact_store, read_failure, staging
from ..zero_cost import Probe, probe_batch
from .stages import STAGES, Body
from .usercode import NetworkBuilder, UserCode

if TYPE_CHECKING:
    from .status import StatusReader

__all__ = ["Resources", "load_splits", "default_threads", "set_threads"]


def load_splits(cfg: StudyConfig, code: UserCode | None = None) -> data_mod.Splits:
    """The config's dataset (or the user's data), split into train / val / test with the study's seed."""
    d = cfg.data
    if code is not None and code.data is not None:
        value = code.data
        if callable(value) and not isinstance(value, data_mod.Splits):
            value = call_accepting(value, {"root": d.root, "seed": cfg.seed}, {}, f"[data] name {d.name!r}")
        return data_mod.as_splits(value, d.name, val_size=d.val_size, seed=cfg.seed, num_classes=d.num_classes)
    return data_mod.load(d.name, root=d.root, val_size=d.val_size, seed=cfg.seed, download=d.download,
                         image_size=d.image_size, channels=d.channels, num_classes=d.num_classes,
                         search_dir=cfg.path.parent if cfg.path is not None else None)


def default_threads(workers: int) -> int:
    """Torch threads per worker when the config says 0: the cores split evenly."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def set_threads(threads: int) -> None:
    torch.set_num_threads(max(1, threads))


class Resources:
    """One worker's cache of the study's data and models.

    Args:
        cfg: The study config.
        code: The user's model, data, loop and test metric (imported or given), if any.
        trials: Where the stages stand, to find the checkpoint a finished "once" stage stored;
            ``None`` where no stage has run (checks before anything is written).
    """

    def __init__(self, cfg: StudyConfig, code: UserCode | None = None, trials: StatusReader | None = None) -> None:
        self.cfg = cfg
        self.code = code or UserCode()
        self.artifacts = make_artifact_store(cfg.artifacts, cfg.storage_retry_seconds)
        self._trials = trials
        self._splits: data_mod.Splits | None = None
        self._subsets: dict[float, data_mod.Splits] = {}
        self._probe: Probe | None = None
        self._sparse: nn.Module | None = None
        self._space: ActivationSpace | None = None
        self._own: dict[str, OperatorTree] | None = None
        self._build: NetworkBuilder | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="safs-optuna-")

    @property
    def splits(self) -> data_mod.Splits:
        if self._splits is None:
            self._splits = load_splits(self.cfg, self.code)
        return self._splits

    def search_splits(self, fraction: float) -> data_mod.Splits:
        if fraction >= 1.0:
            return self.splits
        if fraction not in self._subsets:  # the same subset for every trial: made once per worker
            self._subsets[fraction] = self.splits.search_subset(fraction, seed=self.cfg.seed)
        return self._subsets[fraction]

    def probe(self) -> Probe:
        """The batch of the search's training images that zero-cost features are measured on (made
        once, from the seed: the same for every worker)."""
        if self._probe is None:
            train = self.search_splits(self.cfg.activations.fraction).train
            self._probe = probe_batch(train, seed=self.cfg.seed)
        return self._probe

    @property
    def arch(self) -> dict[str, Any]:
        """What builds the network: the model source and the data's shape (stored in checkpoints)."""
        s = self.splits
        arch = {"name": self.cfg.model.name, "num_classes": s.num_classes,
                "in_channels": s.in_channels, "image_size": s.image_size}
        if self.cfg.model.kwargs:
            arch["kwargs"] = dict(self.cfg.model.kwargs)
        return arch

    @property
    def build(self) -> NetworkBuilder:
        """``res.build()`` is a new network from the config's model source, with plain activations
        (a builder of its own, which checkpoints also rebuild with)."""
        if self._build is None:
            self._build = NetworkBuilder(self.cfg, self.code, self.arch)
        return self._build

    @property
    def space(self) -> ActivationSpace:
        if self._space is None:
            a = self.cfg.activations
            base = ActivationSpace.preset(a.preset)
            if a.unary or a.binary:
                base = ActivationSpace(a.unary or base.unary, a.binary or base.binary, name="custom")
            self._space = base
        return self._space

    def own_trees(self) -> dict[str, OperatorTree]:
        """The network's own activation at every site (ReLU for most, Swish for EfficientNet-B0):
        the baseline's, the ablations' and the activation search's start point."""
        if self._own is None:  # built once per worker: every trial and stage asks for it
            model = make_searchable(self.build())
            self._own = {site: model.get_submodule(site).tree for site in sites(model)}
        return dict(self._own)

    def checkpoint_of(self, stage_name: str) -> Path:
        """Download (once per worker) the checkpoint that a finished "once" stage stored."""
        from .studies import PipelineError

        dest = Path(self.tmp.name) / f"{stage_name}.pt"
        if not dest.exists():
            best = self._trials.status(stage_name).best_trial if self._trials is not None else None
            if best is None:
                raise PipelineError(f"stage {stage_name!r} has no finished trial yet")
            artifact_id = best.user_attrs["checkpoint"]
            try:
                optuna.artifacts.download_artifact(artifact_store=self.artifacts, artifact_id=artifact_id,
                                                   file_path=str(dest))
            except Exception as exc:  # the store raises different types for a missing file
                dest.unlink(missing_ok=True)  # a partial copy must not pass for the checkpoint later
                raise PipelineError(
                    f"the checkpoint of stage {stage_name!r} (artifact {artifact_id} in {self.cfg.artifacts}) "
                    f"cannot be read ({read_failure(exc)}); restore that folder, or run the stage again "
                    f"with `safs-optuna run {self.cfg.path or 'CONFIG'} --rerun {stage_name}`") from None
        return dest

    def load(self, stage_name: str) -> tuple[nn.Module, dict[str, Any]]:
        """The model a finished "once" stage stored; a damaged file names the stage and the fix."""
        from ..checkpoint import CheckpointError
        from .studies import PipelineError

        try:
            return load_checkpoint(self.checkpoint_of(stage_name), build=self.build)
        except CheckpointError as exc:
            raise PipelineError(f"stage {stage_name!r}: {exc}; run the stage again with "
                                f"`safs-optuna run {self.cfg.path or 'CONFIG'} --rerun {stage_name}`") from None

    def pruned_model(self) -> nn.Module:
        """The user's already-sparse network (``[sparsity] checkpoint``), searchable, masks fixed."""
        from ..checkpoint import CheckpointError, load_pruned_weights
        from .studies import PipelineError

        model = self.build()
        try:
            load_pruned_weights(model, self.cfg.sparsity.checkpoint, name=self.cfg.model.name)
        except CheckpointError as exc:
            raise PipelineError(str(exc)) from None
        return make_searchable(model)

    def dense_model(self) -> nn.Module:
        """A fresh copy of the network the dense stage stored."""
        model, _ = self.load(next(s.name for s in STAGES if s.body == Body.DENSE))
        return model

    def save_progress(self, model: nn.Module, epoch: int) -> str:
        """Store ``model`` after ``epoch`` epochs of a resumable stage; returns its artifact id.

        A new id every time, so a worker killed while writing never damages the file that the
        trial's progress attr still names (the caller drops the older file once it names this one).
        """
        path = Path(self.tmp.name) / "progress.pt"
        with staging(self.artifacts, path.name, path.parent):
            save_checkpoint(path, model, self.arch, epoch=epoch)
        artifact_id = f"progress-{uuid.uuid4()}.pt"
        with open(path, "rb") as f:
            self.artifacts.write(artifact_id, f)
        return artifact_id

    def load_progress(self, artifact_id: str) -> tuple[nn.Module, int]:
        """The model and epoch count that :meth:`save_progress` stored.

        Raises:
            CheckpointError: The file is missing or damaged (the stage then starts over).
        """
        from ..checkpoint import CheckpointError

        dest = Path(self.tmp.name) / "resume.pt"
        try:
            optuna.artifacts.download_artifact(artifact_store=self.artifacts, artifact_id=artifact_id,
                                               file_path=str(dest))
        except Exception as exc:  # the store raises different types for a missing file
            dest.unlink(missing_ok=True)
            raise CheckpointError(f"{artifact_id} in {self.cfg.artifacts} cannot be read "
                                  f"({read_failure(exc)})") from None
        try:
            model, ckpt = load_checkpoint(dest, build=self.build)
        finally:
            dest.unlink(missing_ok=True)
        if not isinstance(ckpt.get("epoch"), int):
            raise CheckpointError(f"{artifact_id} in {self.cfg.artifacts} holds no epoch count")
        return model, ckpt["epoch"]

    def drop_progress(self, artifact_id: str | None) -> None:
        """Delete a progress file that a newer one (or the stage's result) replaced."""
        if artifact_id is None:
            return
        try:
            self.artifacts.remove(artifact_id)
        except (optuna.artifacts.exceptions.ArtifactNotFound, OSError):
            pass  # already gone (an earlier try removed it): nothing to free

    def prune(self, model: nn.Module, ratio: float) -> None:
        """Raise ``model``'s sparsity to ``ratio`` with the config's allocation (masks only grow)."""
        sp = self.cfg.sparsity
        try:
            magnitude_prune(model, ratio, scope=sp.scope, skip=sp.skip, min_density=sp.min_density)
        except ValueError as exc:  # e.g. a [sparsity] skip that names no layer of this model
            from .studies import PipelineError

            raise PipelineError(f"[sparsity] of {self.cfg.path or 'the config'}: {exc}") from None

    @property
    def sparse_model(self) -> nn.Module:
        """The network the sparsify stage stored: the start of every fine-tune (copied)."""
        if self._sparse is None:
            self._sparse, _ = self.load(next(s.name for s in STAGES if s.body == Body.SPARSIFY))
        return self._sparse

    def fresh(self, trees: Mapping[str, OperatorTree], learn_scale: bool = False) -> nn.Module:
        """A copy of the sparse model with ``trees`` at their sites."""
        model = copy.deepcopy(self.sparse_model)
        self.space.apply(model, trees, learn_scale=learn_scale)
        return model
