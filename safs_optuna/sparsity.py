"""Magnitude pruning of Conv and Linear weights with fixed masks ("sparsity"), and its report.

Built on :mod:`torch.nn.utils.prune` rather than on masks of our own, because it already gives
everything the SAFS method needs from a mask:

* the mask is a buffer (``weight_mask``) and the trainable tensor is ``weight_orig``; a forward
  pre-hook recomputes ``weight = weight_orig * weight_mask`` before every forward, so pruned
  weights stay exactly zero under any optimizer — momentum, Adam's moments and weight decay may
  move ``weight_orig`` at pruned positions, but never the weight the network computes with;
* ``copy.deepcopy`` and ``state_dict`` carry masks along (every trial starts from a deep copy of
  the same sparse network, and checkpoints keep their masks);
* pruning an already-pruned module combines the masks (``PruningContainer``), and
  ``prune.remove`` turns the reparametrisation back into a plain parameter, which is
  :func:`finalize`.

One addition: the pre-hook caches ``weight`` on the module as a non-leaf tensor (it has a
``grad_fn``), and ``copy.deepcopy`` refuses non-leaf tensors (pytorch/pytorch#37322). The modules
pruned here therefore also get a forward hook that replaces the cached value by a detached one
after each forward (the autograd graph of that forward already holds what backward needs). So,
outside its own forward, a pruned module's ``weight`` is a snapshot without gradient; code that
needs the differentiable weight there uses ``weight_orig * weight_mask``.

Words: this module is about *sparsity* (removing weights). Optuna's early stopping of trials is a
*pruner* and lives in :mod:`safs_optuna.pruners`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Real

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import prune

__all__ = [
    "SCOPES",
    "LayerSparsity",
    "SparsityReport",
    "finalize",
    "magnitude_prune",
    "prunable_modules",
    "restore_masks",
    "sparsity_report",
]

SCOPES: tuple[str, ...] = ("layer", "global")
_PRUNABLE = (_ConvNd, nn.Linear)  # every Conv1d/2d/3d (transposed too) and Linear


@dataclass(frozen=True)
class LayerSparsity:
    """Weight counts of one prunable layer."""

    name: str
    total: int
    zeros: int

    @property
    def ratio(self) -> float:
        """Fraction of this layer's weights that are zero."""
        return self.zeros / self.total if self.total else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Zero weights per prunable layer (Conv and Linear weights; biases are not counted).

    Example:

        .. code::

            import safs_optuna as so

            report = so.magnitude_prune(model, ratio=0.99, scope="layer")
            print(report.ratio)  # 0.99 (up to rounding per layer)
            print(report)  # a table: layer, weights, zeros, sparsity
    """

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of prunable weights."""
        return sum(layer.total for layer in self.layers)

    @property
    def zeros(self) -> int:
        """Number of prunable weights that are zero."""
        return sum(layer.zeros for layer in self.layers)

    @property
    def ratio(self) -> float:
        """Fraction of the prunable weights that are zero."""
        return self.zeros / self.total if self.total else 0.0

    def __str__(self) -> str:
        rows = [(layer.name or "(model)", layer.total, layer.zeros, layer.ratio) for layer in self.layers]
        rows.append(("total", self.total, self.zeros, self.ratio))
        width = max(len("layer"), *(len(r[0]) for r in rows))
        lines = [f"{'layer':<{width}}  {'weights':>10}  {'zeros':>10}  {'sparsity':>8}"]
        for i, (name, total, zeros, ratio) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("-" * len(lines[0]))
            lines.append(f"{name:<{width}}  {total:>10}  {zeros:>10}  {ratio:>8.2%}")
        return "\n".join(lines)


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv and Linear module by module path, in model order (a shared module once)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _PRUNABLE)}


def magnitude_prune(
    model: nn.Module,
    ratio: float,
    scope: str = "layer",
    skip: Iterable[str] = (),
) -> SparsityReport:
    """Zero the smallest-magnitude weights of every Conv and Linear layer, with fixed masks.

    First and last layers are pruned too, as in the SAFS paper. The masks stay fixed through any
    later training; see the module docstring.

    ``ratio`` is the *target* sparsity: on a model that is already pruned, the existing masks are
    kept (a pruned weight never comes back) and just enough further weights are masked to reach
    ``ratio``; a model already sparser than ``ratio`` is left as it is.

    Args:
        model: The network, modified in place.
        ratio: Fraction of the weights to zero, in ``[0, 1)``.
        scope: ``"layer"``: every layer loses the same fraction (layer-wise magnitude pruning,
            L1 per layer). ``"global"``: the smallest weights of all layers together, so layers
            end up with different sparsities.
        skip: Module paths to keep dense; a path also skips every module below it (``"classifier"``
            skips ``classifier.0`` and ``classifier.3``). ``ratio`` then applies to the rest.

    Returns:
        The :class:`SparsityReport` after pruning (over all prunable layers, skipped ones included).
    """
    if isinstance(ratio, bool) or not isinstance(ratio, Real):
        raise TypeError(f"ratio must be a number in [0, 1), got {ratio!r}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}")
    if scope not in SCOPES:
        raise ValueError(f"unknown sparsity scope {scope!r}; valid: {', '.join(SCOPES)}")
    modules = prunable_modules(model)
    if not modules:
        raise ValueError("the model has no Conv or Linear layer to prune")
    skip = [skip] if isinstance(skip, str) else list(skip)
    for path in skip:
        if not any(_under(name, path) for name in modules):
            raise ValueError(
                f"skip path {path!r} matches no prunable module; valid: {', '.join(modules)}"
            )
    targets = {
        name: m for name, m in modules.items() if not any(_under(name, path) for path in skip)
    }
    if scope == "layer":
        for module in targets.values():
            # An int amount counts weights among those still unmasked (torch combines masks).
            amount = _still_to_prune(ratio, [module])
            prune.l1_unstructured(
                module, "weight", amount=amount, importance_scores=_effective_weight(module)
            )
    elif targets:
        parameters = [(module, "weight") for module in targets.values()]
        prune.global_unstructured(
            parameters,
            pruning_method=prune.L1Unstructured,
            importance_scores={(m, "weight"): _effective_weight(m) for m in targets.values()},
            amount=_still_to_prune(ratio, list(targets.values())),
        )
    for module in targets.values():
        _keep_copyable(module)
    return sparsity_report(model)


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Per-layer and total counts of zero weights over every Conv and Linear weight."""
    layers = []
    for name, module in prunable_modules(model).items():
        weight = _effective_weight(module)
        layers.append(LayerSparsity(name, weight.numel(), int((weight == 0).sum())))
    return SparsityReport(layers)


def finalize(model: nn.Module) -> nn.Module:
    """Make the zeros permanent: remove every pruning reparametrisation (``prune.remove``).

    Afterwards each pruned tensor is a plain ``nn.Parameter`` holding zeros where it was masked,
    with no ``*_orig``/``*_mask`` entries and no hooks, ready for export (``torch.export``,
    ``torch.jit.trace``, a state_dict that loads into an unpruned model). Training it further
    no longer keeps those zeros. Returns ``model`` (modified in place).
    """
    for module in model.modules():
        for name in _pruned_tensor_names(module):
            prune.remove(module, name)
        for key in [k for k, h in module._forward_hooks.items() if isinstance(h, _DetachCachedWeights)]:
            del module._forward_hooks[key]
    return model


def restore_masks(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Re-create the mask reparametrisation a sparse checkpoint needs, so that it loads.

    A pruned model's state_dict has ``<path>.weight_orig`` and ``<path>.weight_mask`` instead of
    ``<path>.weight``; a fresh model has neither. For every ``<path>.<tensor>_mask`` entry this
    applies ``prune.custom_from_mask`` to that module, after which
    ``model.load_state_dict(state_dict)`` works and the masks stay fixed as after
    :func:`magnitude_prune`. Tensors already pruned in ``model`` are left alone (loading
    overwrites their mask).
    """
    for key, mask in state_dict.items():
        if not key.endswith("_mask"):
            continue
        path, _, tensor = key[: -len("_mask")].rpartition(".")
        if f"{key[: -len('_mask')]}_orig" not in state_dict:
            continue  # a buffer that merely ends in "_mask", not a pruning mask
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"state_dict entry {key!r}: the model has no module {path!r}") from None
        if tensor in _pruned_tensor_names(module):
            continue
        param = getattr(module, tensor, None)
        if not isinstance(param, torch.Tensor):
            raise ValueError(f"state_dict entry {key!r}: module {path!r} has no tensor {tensor!r}")
        if param.shape != mask.shape:
            raise ValueError(
                f"state_dict entry {key!r}: mask shape {tuple(mask.shape)} does not match "
                f"{path}.{tensor} of shape {tuple(param.shape)}"
            )
        prune.custom_from_mask(module, tensor, mask=mask.to(device=param.device))
        _keep_copyable(module)


class _DetachCachedWeights:
    """Forward hook: swap the pre-hook's cached masked tensors for detached ones (deepcopy-able)."""

    def __call__(self, module: nn.Module, args: object, output: object) -> None:
        _detach_cached(module)


def _detach_cached(module: nn.Module) -> None:
    for name in _pruned_tensor_names(module):
        cached = module.__dict__.get(name)
        if isinstance(cached, torch.Tensor) and cached.grad_fn is not None:
            setattr(module, name, cached.detach())


def _keep_copyable(module: nn.Module) -> None:
    _detach_cached(module)
    if not any(isinstance(h, _DetachCachedWeights) for h in module._forward_hooks.values()):
        module.register_forward_hook(_DetachCachedWeights())


def _under(name: str, path: str) -> bool:
    return name == path or name.startswith(path + ".")


def _effective_weight(module: nn.Module) -> torch.Tensor:
    # ``module.weight`` is only refreshed by the pre-hook at the next forward, so after an
    # optimizer step it is stale; recompute it from the trainable tensor and the mask.
    if hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _masked_count(module: nn.Module) -> int:
    mask = getattr(module, "weight_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


def _still_to_prune(ratio: float, modules: list[nn.Module]) -> int:
    total = sum(m.weight_orig.numel() if hasattr(m, "weight_orig") else m.weight.numel() for m in modules)
    # round() as torch does for a float amount, so layer scope matches l1_unstructured(amount=ratio).
    return max(0, round(ratio * total) - sum(_masked_count(m) for m in modules))


def _pruned_tensor_names(module: nn.Module) -> list[str]:
    return [
        hook._tensor_name
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]
