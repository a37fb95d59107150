"""Checkpoints of searchable sparse models, and their export to plain PyTorch.

A checkpoint is a ``torch.save``'d dict of plain values — architecture arguments, one formula
per activation site, the state dict (with its sparsity masks) — so it loads with
``torch.load(weights_only=True)`` and rebuilds without pickled code.

An exported program (:func:`export_program`) is a ``torch.export`` archive whose members are
deflate-compressed where that makes them smaller. A sparse network's weights are mostly runs of
zeros, which deflate stores in a few bytes, so the file costs about what its nonzero weights
cost, while ``torch.export.load`` reads it as any archive and rebuilds dense weights: nothing
but PyTorch is needed to run it.
"""

from __future__ import annotations

import copy
import os
import pickle
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .activation import OperatorTree
from .models import build_model, make_searchable, set_trees, sites
from .sources import is_import_path
from .sparsity import finalize, prunable_modules, restore_masks

FORMAT = "safs-optuna/1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged or of another kind; the message names it."""


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


def load_checkpoint(path: str | os.PathLike[str], build: Callable[[], nn.Module] | None = None
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint`; returns it (on CPU) and the dict.

    Args:
        path: The file.
        build: Returns the network with plain activations, as the study's config builds it. Needed
            for a network from user code (``"<module>:<callable>"``): the file's own ``arch`` is
            never imported, so a file cannot make this process run code. Without it, ``arch``
            must name a built-in, torchvision or timm model.

    Raises:
        CheckpointError: The file is missing, damaged, truncated, or not a safs-optuna
            checkpoint; the one-line message names the file.
    """
    again = "write it again by re-running the stage that saved it"
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); {again}")
    try:
        _verify_archive(Path(path))
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False, i.e. running the file's code: never that.
        raise CheckpointError(f"{path} is not a safs-optuna checkpoint (format {FORMAT}): it holds "
                              "objects other than plain values and tensors") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = _first_line(exc).split(". ")[0]  # torch goes on for paragraphs
        raise CheckpointError(f"checkpoint {path} is damaged or truncated ({reason}); "
                              f"{again}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a safs-optuna checkpoint (format {FORMAT})")
    if build is None and is_import_path(str(ckpt.get("arch", {}).get("name", ""))):
        raise CheckpointError(f"{path} holds a network from user code ({ckpt['arch']['name']}); load it "
                              "with load_checkpoint(path, build=<the function that builds it>)")
    try:
        model = make_searchable(build() if build is not None else build_model(**ckpt["arch"]))
        trees = {site: OperatorTree.parse(f) for site, f in ckpt["formulas"].items()}
        set_trees(model, trees, learn_scale=ckpt["learn_scale"])
        restore_masks(model, ckpt["state_dict"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be rebuilt ({type(exc).__name__}: "
                              f"{_first_line(exc)}); {again}") from None
    return model, ckpt


def _verify_archive(path: Path) -> None:
    """Check every member's CRC: torch.load itself does not, and would load torn weights."""
    if not zipfile.is_zipfile(path):
        return  # not an archive at all: torch.load says what it is
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"member {bad} fails its checksum")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def export_program(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Write ``model`` with permanent zeros as a ``torch.export`` program file.

    The file loads with ``torch.export.load(path).module()`` in plain PyTorch: every operator is
    a core ATen op, so neither safs_optuna nor its classes are needed to run it. It keeps one
    image of ``example`` as its sample input, and its members are compressed (see the module
    docstring), so a sparse network's file is about the size of its nonzero weights.
    """
    plain = finalize(copy.deepcopy(model).cpu()).eval()
    for p in plain.parameters():
        p.requires_grad_(False)
    # Copies: a slice of a whole split shares its storage, which torch.export would store whole.
    example = example.detach().cpu()
    # torch.export fixes a batch dimension of size 1 to exactly 1: trace with two images.
    trace = example[:2].clone() if len(example) >= 2 else example[:1].repeat(2, *[1] * (example.dim() - 1))
    # The batch dimension stays dynamic so the file serves any batch size, not the example's.
    batch = torch.export.Dim.DYNAMIC
    program = torch.export.export(plain, (trace,), dynamic_shapes=({0: batch},))
    try:
        program.example_inputs = ((example[:1].clone(),), {})
    except (AttributeError, ValueError):  # no setter in older PyTorch: keep the two images
        pass
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        torch.export.save(program, tmp)
        _compress_archive(Path(tmp), path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _compress_archive(src: Path, dst: Path) -> None:
    """Copy the zip archive ``src`` to ``dst``, deflating each member that shrinks by it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            packed = len(zlib.compress(data, 9)) < len(data)
            zout.writestr(info.filename, data,
                          compress_type=zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED,
                          compresslevel=9 if packed else None)


def program_accuracy(module: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset,
                     batch_size: int = 1000) -> float:
    """Top-1 accuracy (%) of any callable, e.g. a loaded export program, which has no ``eval()``."""
    from .training import _batches

    correct = total = 0
    with torch.no_grad():
        for images, labels in _batches(dataset, batch_size):
            correct += int((module(images).argmax(1) == labels).sum())
            total += len(labels)
    return 100.0 * correct / max(1, total)


def load_dense_weights(model: nn.Module, path: str | os.PathLike[str], name: str | None = None) -> None:
    """Load a user's dense weights into ``model``: a ``state_dict`` saved with
    ``torch.save(model.state_dict(), path)``, or a dict holding one under ``"state_dict"``.

    ``name`` is how the message names the model (default: its class).

    Raises:
        CheckpointError: one line naming the file: unreadable (torch's advice to load it with
            ``weights_only=False`` is left out: that would run code from the file) or not
            fitting the model.
    """
    state = _read_state_dict(path, "[dense] checkpoint")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__  # torch's message spans lines
        raise CheckpointError(f"[dense] checkpoint {path} does not fit model "
                              f"{name or type(model).__name__!r}: {text}") from None


def _read_state_dict(path: str | os.PathLike[str], key: str) -> dict[str, torch.Tensor]:
    """A ``state_dict`` from a file the user wrote (plain tensors only: nothing is executed)."""
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        text = str(exc)
        cause = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text else ""
        why = f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__
        raise CheckpointError(f"{key} {path}: cannot be read as a state_dict saved with "
                              f"torch.save(model.state_dict(), path) ({why})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{key} {path}: not a state_dict (a dict of tensors)")
    return state


def _fit_error(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """Missing, unexpected and mis-shaped keys of ``state`` for ``model``, in a few words."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{what}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts) or None


def load_pruned_weights(model: nn.Module, path: str | os.PathLike[str], name: str | None = None) -> None:
    """Load a user's already-sparse network into ``model`` (plain activations), masks fixed.

    The file is a ``state_dict`` (or a dict holding one under ``"state_dict"``) either of a
    network pruned with :mod:`torch.nn.utils.prune` — ``weight_orig``/``weight_mask`` pairs, whose
    masks are taken exactly — or of a plain network whose zeros are the pruned weights: every
    Conv and Linear weight with zeros gets the mask ``weight != 0``. Either way the masks then
    stay fixed through every later fine-tune, as after :func:`~safs_optuna.sparsity.magnitude_prune`.

    Raises:
        CheckpointError: one line naming the file: unreadable, or keys missing, unexpected or
            mis-shaped for the model.
    """
    from torch.nn.utils import prune

    from .sparsity import _keep_copyable

    state = _read_state_dict(path, "[sparsity] checkpoint")
    label = name or type(model).__name__
    try:
        restore_masks(model, state)
    except ValueError as exc:
        raise CheckpointError(f"[sparsity] checkpoint {path} does not fit model {label!r}: {exc}") from None
    problem = _fit_error(model, state)
    if problem is not None:
        raise CheckpointError(f"[sparsity] checkpoint {path} does not fit model {label!r}: {problem}")
    model.load_state_dict(state)
    pruned = {k[: -len("_mask")] for k in state if k.endswith("_mask") and f"{k[:-5]}_orig" in state}
    for path_, module in prunable_modules(model).items():
        if f"{path_}.weight" in pruned:
            continue
        weight = module.weight.detach()
        if bool((weight == 0).any()):
            prune.custom_from_mask(module, "weight", mask=(weight != 0).to(weight.dtype))
            _keep_copyable(module)
