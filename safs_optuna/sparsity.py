"""Magnitude pruning of Conv and Linear weights with fixed masks ("sparsity"), and its report.

How many weights each layer keeps is the *allocation* (:data:`SCOPES`): the same fraction in every
layer (``layer``, the SAFS paper's), one magnitude threshold for all layers (``global``),
Erdős–Rényi-Kernel densities (``erk``, Evci et al. 2020) or layer-adaptive magnitude scores
(``lamp``, Lee et al. 2021). Within a layer the largest magnitudes are always the ones kept.
Per-layer minimum densities (``min_density``) keep chosen layers denser, or dense, and prune the
others harder. Gradual magnitude pruning (Zhu & Gupta 2017) is :func:`cubic_sparsity` plus
repeated calls of :func:`magnitude_prune`, whose masks only ever grow.

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

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from numbers import Integral, Real

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import prune

__all__ = [
    "SCOPES",
    "LayerSparsity",
    "SparsityReport",
    "cubic_sparsity",
    "finalize",
    "magnitude_prune",
    "prunable_modules",
    "restore_masks",
    "sparsity_report",
]

SCOPES: tuple[str, ...] = ("layer", "global", "erk", "lamp")
"""Allocations of :func:`magnitude_prune`: how the sparsity is shared out among the layers."""
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
    min_density: Mapping[str, float] | None = None,
) -> SparsityReport:
    """Zero the smallest-magnitude weights of every Conv and Linear layer, with fixed masks.

    First and last layers are pruned too, as in the SAFS paper. The masks stay fixed through any
    later training; see the module docstring.

    ``ratio`` is the *target* sparsity over the pruned layers together: on a model that is already
    pruned, the existing masks are kept (a pruned weight never comes back) and just enough further
    weights are masked to reach ``ratio``, whatever allocation made the earlier masks; a model
    already sparser than ``ratio`` is left as it is. This is the step of gradual magnitude pruning:
    see :func:`cubic_sparsity` for the schedule and an example.

    Args:
        model: The network, modified in place.
        ratio: Fraction of the weights to zero, in ``[0, 1)``.
        scope: How the zeros are shared out among the layers (:data:`SCOPES`); within a layer the
            smallest magnitudes always go.

            * ``"layer"``: every layer loses the same fraction (layer-wise magnitude pruning).
              Each layer gets ``round(ratio * weights)`` zeros, so the total is ``ratio`` up to
              that rounding.
            * ``"global"``: the smallest weights of all layers together (one threshold).
            * ``"erk"``: Erdős–Rényi-Kernel (Evci et al. 2020): a layer's density is
              proportional to ``sum(shape) / prod(shape)`` of its weight (out and in channels,
              kernel height and width; out and in features for Linear), scaled by one factor
              chosen so that the total is ``ratio``. A layer whose density would exceed 1 is
              kept dense and the factor recomputed over the others, until none exceeds.
              Per-layer rounding as for ``"layer"``.
            * ``"lamp"``: layer-adaptive magnitude pruning (Lee et al. 2021): within a layer,
              weight ``u`` scores ``w_u**2 / sum(w_v**2 for |w_v| >= |w_u|)``, and the lowest
              scores of all layers together go. A layer's largest weight scores 1, so no layer is
              emptied.

            ``"global"`` and ``"lamp"`` hit ``round(ratio * weights)`` zeros exactly.
        skip: Module paths to leave alone; a path also skips every module below it
            (``"classifier"`` skips ``classifier.0`` and ``classifier.3``). Skipped layers are
            neither pruned nor counted: ``ratio`` then applies to the rest.
        min_density: Module-path glob (``fnmatch``, e.g. ``"features.0"``, ``"classifier.*"``;
            a match also covers the modules below it) -> the least fraction of weights those
            layers keep, in ``(0, 1]``; ``1.0`` keeps them dense. Unlike ``skip`` these layers
            count towards ``ratio``: the other layers are pruned harder so that the total still
            holds. A layer matched by several globs takes the largest minimum; a skipped layer
            is left alone whatever it matches.

    Returns:
        The :class:`SparsityReport` after pruning (over all prunable layers, skipped ones included).

    Raises:
        ValueError: For a ratio outside ``[0, 1)``, an unknown scope, a skip path or
            ``min_density`` glob that matches no prunable module, a minimum density outside
            ``(0, 1]``, a ``ratio`` the minimum densities make unreachable (the message gives
            the reachable range), or a layer already pruned below its minimum density. The model
            is unchanged then.
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
    floors = _floors(min_density, modules, targets)
    kept = _allocate(scope, targets, float(ratio), floors) if targets else {}
    for name, module in targets.items():
        # An int amount counts weights among those still unmasked (torch combines the masks),
        # and L1Unstructured drops the smallest magnitudes: the within-layer rule of every scope.
        prune.l1_unstructured(
            module,
            "weight",
            amount=_alive(module) - kept[name],
            importance_scores=_effective_weight(module),
        )
        _keep_copyable(module)
    return sparsity_report(model)


def cubic_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """The sparsity of gradual magnitude pruning at ``step`` (Zhu & Gupta 2017).

    ``s_t = final + (initial - final) * (1 - t / n) ** 3`` with ``t = step`` and
    ``n = total_steps``: fast at first, while many weights are redundant, slowing towards the
    end. Steps past ``total_steps`` stay at ``final``.

    Args:
        step: Pruning steps done so far, ``t >= 0`` (count them in epochs, or in pruning events
            of every ``k`` optimizer steps after a start step: the caller's choice).
        total_steps: ``n >= 1``, the step at which ``final`` is reached.
        final: The sparsity to reach, in ``[0, 1)``.
        initial: The sparsity at step 0, in ``[0, final]``.

    Example:
        Prune a trained model from 0 to 90 % over 10 epochs of fine-tuning, with ERK:

        .. code-block:: python

            from safs_optuna.sparsity import cubic_sparsity, magnitude_prune

            for epoch in range(10 + 1):
                ratio = cubic_sparsity(epoch, total_steps=10, final=0.9)
                magnitude_prune(model, ratio, scope="erk")  # masks only grow
                if epoch < 10:
                    train_one_epoch(model, optimizer)  # the masks hold through training

        Each call keeps every weight already masked and masks just enough of the surviving ones
        (the smallest by the allocation's rule, after the training since the last call) to reach
        that step's sparsity. Optimizers may keep state for masked weights; it is never used, as
        the mask multiplies them out before every forward.
    """
    for label, value in (("step", step), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{label} must be an int, got {value!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    if not 0.0 <= final < 1.0:
        raise ValueError(f"final must be in [0, 1), got {final!r}")
    if not 0.0 <= initial <= final:
        raise ValueError(f"initial must be in [0, final] = [0, {final!r}], got {initial!r}")
    left = 1.0 - min(step, total_steps) / total_steps
    return final + (initial - final) * left**3


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Per-layer and total counts of zero weights over every Conv and Linear weight."""
    layers = []
    for name, module in prunable_modules(model).items():
        weight = _effective_weight(module)
        layers.append(LayerSparsity(name, weight.numel(), int((weight == 0).sum())))
    return SparsityReport(layers)


def finalize(model: nn.Module) -> nn.Module:
    """Make the masks permanent: the zeros become plain weights and the masks are gone.

    :func:`magnitude_prune` keeps each pruned tensor as :mod:`torch.nn.utils.prune` does: a
    trainable ``weight_orig``, a ``weight_mask`` buffer and a forward pre-hook that multiplies the
    two before every forward. ``finalize`` removes that reparametrisation from every module of
    ``model`` (``torch.nn.utils.prune.remove``): ``weight`` becomes a plain ``nn.Parameter`` that
    holds ``weight_orig * weight_mask`` — exact zeros where the mask was 0 — and the
    ``*_orig``/``*_mask`` entries and the hooks are deleted. The network computes exactly what it
    computed before, and its ``state_dict`` loads into a model that was never pruned, as
    ``torch.export``, ``torch.jit.trace`` and deployment need.

    The masks are not kept anywhere: the model can no longer be fine-tuned with fixed masks, as
    an optimizer step moves the zeros like any other weight. Finalize a copy when you may still
    train, and call it once training is over. Modules that were never pruned are left alone, so
    calling it twice is harmless.

    Args:
        model: Any ``nn.Module``, pruned or not; modified in place.

    Returns:
        ``model`` itself.

    Example:

        .. code-block:: python

            import torch
            import safs_optuna as so

            model = so.build_model("lenet5")
            so.magnitude_prune(model, ratio=0.9)
            sorted(model.fc1.state_dict())  # ['bias', 'weight_mask', 'weight_orig']
            so.finalize(model)
            sorted(model.fc1.state_dict())  # ['bias', 'weight']
            so.sparsity_report(model).ratio  # still 0.9: the zeros are now plain weights
            torch.save(model.state_dict(), "lenet5_sparse.pt")  # loads into so.build_model("lenet5")
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


def _floors(
    min_density: Mapping[str, float] | None,
    modules: Mapping[str, nn.Module],
    targets: Mapping[str, nn.Module],
) -> dict[str, int]:
    """Least number of weights each target layer keeps under ``min_density`` (0 where unset)."""
    if min_density is None:
        return {}
    if not isinstance(min_density, Mapping):
        raise TypeError(
            f"min_density must map module-path globs to densities, got {type(min_density).__name__}"
        )
    least: dict[str, float] = {}
    for pattern, density in min_density.items():
        if not isinstance(pattern, str):
            raise TypeError(f"min_density keys must be module-path globs (str), got {pattern!r}")
        if isinstance(density, bool) or not isinstance(density, Real) or not 0.0 < density <= 1.0:
            raise ValueError(
                f"min_density[{pattern!r}] must be a density in (0, 1] (1.0 keeps the layer dense), "
                f"got {density!r}"
            )
        matched = [name for name in modules if _glob_under(name, pattern)]
        if not matched:
            raise ValueError(
                f"min_density glob {pattern!r} matches no prunable module; valid: {', '.join(modules)}"
            )
        for name in matched:
            least[name] = max(least.get(name, 0.0), float(density))
    # round() first so that 0.1 * 100 = 10.000000000000002 does not ask for 11 weights
    return {
        name: math.ceil(round(density * _numel(targets[name]), 9))
        for name, density in least.items()
        if name in targets
    }


def _allocate(
    scope: str, targets: Mapping[str, nn.Module], ratio: float, floors: Mapping[str, int]
) -> dict[str, int]:
    """How many weights each target layer keeps: masks only shrink, floors hold, total is ``ratio``."""
    size = {name: _numel(m) for name, m in targets.items()}
    alive = {name: _alive(m) for name, m in targets.items()}
    low = {name: floors.get(name, 0) for name in targets}
    for name in targets:
        if low[name] > alive[name]:
            raise ValueError(
                f"min_density asks layer {name!r} to keep {low[name]} of its {size[name]} weights, "
                f"but only {alive[name]} are unmasked and masked weights never come back"
            )
    total = sum(size.values())
    keep = total * (1.0 - ratio)
    if sum(low.values()) > keep:
        reachable = math.floor((1.0 - sum(low.values()) / total) * 1e6) / 1e6
        raise ValueError(
            f"ratio {ratio!r} is out of reach with these min_density values: their layers keep at "
            f"least {sum(low.values())} of the {total} weights pruned here; valid ratio: "
            f"[0, {reachable:g}]"
        )
    if sum(alive.values()) <= total - round(ratio * total):
        return alive  # already at least as sparse as asked
    if scope in ("layer", "erk"):
        # Kept weights per unit of the scale: the layer's size (same density everywhere), or
        # ERK's density sum(shape)/prod(shape) times its size prod(shape).
        rate = {
            name: float(size[name] if scope == "layer" else sum(_shape(m)))
            for name, m in targets.items()
        }
        level = _fill(rate, low, alive, keep)
        # round the zeros as torch does for a float amount (``layer`` matches l1_unstructured)
        return {
            name: min(max(size[name] - round(size[name] - level[name]), low[name]), alive[name])
            for name in targets
        }
    return _top_scores(scope, targets, max(total - round(ratio * total), sum(low.values())), low)


def _fill(
    rate: Mapping[str, float], low: Mapping[str, int], high: Mapping[str, int], total: float
) -> dict[str, float]:
    """``clamp(eps * rate, low, high)`` per layer, with the scale ``eps`` that makes them sum to ``total``.

    The sum is piecewise linear and non-decreasing in ``eps``, with a knee wherever a layer
    reaches a bound; the solution is interpolated between the two knees around ``total``. With
    upper bounds only this is ERK's loop (make dense every layer above 1, recompute the scale
    over the rest, repeat), done without iterating.
    """
    names = [name for name in rate if rate[name] > 0]

    def levels(eps: float) -> dict[str, float]:
        return {
            name: min(max(eps * rate[name], low[name]), high[name]) if rate[name] > 0 else 0.0
            for name in rate
        }

    def summed(eps: float) -> float:
        return sum(levels(eps).values())

    knees = sorted({0.0} | {bound[n] / rate[n] for n in names for bound in (low, high)})
    eps = knees[-1]
    for left, right in zip(knees, knees[1:]):
        at_left, at_right = summed(left), summed(right)
        if at_left >= total:
            eps = left
            break
        if at_right >= total:
            eps = left + (right - left) * (total - at_left) / (at_right - at_left)
            break
    return levels(eps)


def _top_scores(
    scope: str, targets: Mapping[str, nn.Module], keep: int, low: Mapping[str, int]
) -> dict[str, int]:
    """Kept weights per layer when the ``keep`` best scores of all layers together stay."""
    scores = []
    for name, module in targets.items():
        weight = _effective_weight(module).flatten().double()
        alive = _alive_mask(module).flatten()
        score = torch.full_like(weight, -math.inf)  # masked weights go first, and stay gone
        score[alive] = weight[alive].abs() if scope == "global" else _lamp_scores(weight[alive])
        if low[name]:
            score[score.topk(low[name]).indices] = math.inf  # a minimum density is kept first
        scores.append(score)
    if keep == 0:
        return dict.fromkeys(targets, 0)
    # The keep-th largest score, then its ties shared out in layer order to keep exactly `keep`.
    everything = torch.cat(scores)
    cut = everything.kthvalue(everything.numel() - keep + 1).values
    above = [int((s > cut).sum()) for s in scores]
    ties = keep - sum(above)
    kept = {}
    for name, score, count in zip(targets, scores, above):
        extra = min(ties, int((score == cut).sum()))
        kept[name], ties = count + extra, ties - extra
    return kept


def _lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score of every weight: its square over the sum of the squares at least as large."""
    square = weight.double().square()
    order = square.argsort()
    ascending = square[order]
    at_least = ascending.flip(0).cumsum(0).flip(0)
    score = torch.empty_like(square)
    # an all-zero tail would divide 0 by 0; those weights score 0
    score[order] = torch.where(at_least > 0, ascending / at_least.clamp_min(1e-300), 0.0)
    return score


def _glob_under(name: str, pattern: str) -> bool:
    """``name`` or one of the modules above it matches ``pattern``."""
    parts = name.split(".")
    return any(fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _shape(module: nn.Module) -> tuple[int, ...]:
    return tuple((module.weight_orig if hasattr(module, "weight_orig") else module.weight).shape)


def _numel(module: nn.Module) -> int:
    return math.prod(_shape(module))


def _alive_mask(module: nn.Module) -> torch.Tensor:
    mask = getattr(module, "weight_mask", None)
    if mask is None:
        return torch.ones(_shape(module), dtype=torch.bool, device=module.weight.device)
    return mask != 0


def _alive(module: nn.Module) -> int:
    return int(_alive_mask(module).sum())


def _pruned_tensor_names(module: nn.Module) -> list[str]:
    return [
        hook._tensor_name
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]
