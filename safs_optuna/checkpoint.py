"""Checkpoints of searchable sparse models, and their export to plain PyTorch.

A checkpoint is a ``torch.save``'d dict of plain values — architecture arguments, one formula
per activation site, the state dict (with its sparsity masks) — so it loads with
``torch.load(weights_only=True)`` and rebuilds without pickled code.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .activation import OperatorTree, TreeActivation
from .models import build_model, make_searchable, set_module, sites
from .sparsity import finalize, restore_masks

FORMAT = "safs-optuna/1"


def set_trees(model: nn.Module, trees: Mapping[str, OperatorTree], learn_scale: bool = False) -> None:
    """Put a new ``TreeActivation`` with each tree into its site (any site of ``sites(model)``)."""
    known = set(sites(model))
    for site, tree in trees.items():
        if site not in known:
            raise ValueError(f"model has no activation site {site!r}; sites: {', '.join(sorted(known))}")
        old = model.get_submodule(site)
        new = TreeActivation(tree, learn_scale=learn_scale)
        ref = next(old.parameters(), None)
        if ref is not None:
            new.to(device=ref.device, dtype=ref.dtype)
        set_module(model, site, new)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    arch: Mapping[str, Any],
    *,
    learn_scale: bool = False,
    **extra: Any,
) -> None:
    """Save ``model`` (searchable, possibly sparse) with what rebuilds it: ``arch`` holds the
    keyword arguments of :func:`safs_optuna.models.build_model`, ``extra`` any plain values."""
    formulas = {site: model.get_submodule(site).tree.formula for site in sites(model)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": FORMAT,
            "arch": dict(arch),
            "formulas": formulas,
            "learn_scale": learn_scale,
            "state_dict": state,
            **extra,
        },
        path,
    )


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint`; returns it (on CPU) and the dict."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a safs-optuna checkpoint (format {FORMAT})")
    model = make_searchable(build_model(**ckpt["arch"]))
    trees = {site: OperatorTree.parse(f) for site, f in ckpt["formulas"].items()}
    set_trees(model, trees, learn_scale=ckpt["learn_scale"])
    restore_masks(model, ckpt["state_dict"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt


def export_program(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Write ``model`` with permanent zeros as a ``torch.export`` program file.

    The file loads with ``torch.export.load(path).module()`` in plain PyTorch: every operator is
    a core ATen op, so neither safs_optuna nor its classes are needed to run it.
    """
    plain = finalize(copy.deepcopy(model).cpu()).eval()
    for p in plain.parameters():
        p.requires_grad_(False)
    # The batch dimension stays dynamic so the file serves any batch size, not the example's.
    batch = torch.export.Dim.DYNAMIC
    program = torch.export.export(plain, (example.cpu(),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def program_accuracy(module: Callable[[torch.Tensor], torch.Tensor], dataset: TensorDataset,
                     batch_size: int = 1000) -> float:
    """Top-1 accuracy (%) of any callable, e.g. a loaded export program, which has no ``eval()``."""
    images, labels = dataset.tensors
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch_size):
            correct += int((module(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
    return 100.0 * correct / max(1, len(labels))
