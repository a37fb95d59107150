"""Zero-cost features of a candidate: numbers measured on the sparse network with the candidate's
activations and one batch of training data, without training it.

Each feature is a guess at how well the candidate will train, cheap enough to compute for
dozens of candidates in the time one of them trains an epoch:

* ``response_gain``: how much the activation scales its site's actual pre-activations, the
  standard deviation of its output over that of its input, averaged over sites (signal that
  fades layer after layer does not train);
* ``response_mean``: the mean of a site's output over the standard deviation of its input;
* ``zero_share``: the share of a site's outputs that are (almost) zero;
* ``flat_share``: the share of a site's inputs where the activation's slope is (almost) zero,
  dead or saturated: no gradient passes there;
* ``first_grad_norm``: the norm of the loss gradient that reaches the first layer's weights;
* ``fisher_trace``: the mean squared norm of the loss gradient of every weight over small
  batches, an estimate of the trace of the empirical Fisher information at the sparse weights;
* ``loss_drop``: how much a few optimizer steps on the batch lower the loss, relative to the
  loss before them.

:func:`measure` computes them all; a feature that fails (at one site, or as a whole) is left out
and its error reported, never raised, so a candidate that some feature cannot handle is still
trained. ``benchmarks/zero_cost.py`` measures how well each one ranks trained candidates.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from .models import sites
from .training import HParams

__all__ = ["FEATURES", "Measured", "Probe", "measure", "probe_batch"]

FEATURES: tuple[str, ...] = ("response_gain", "response_mean", "zero_share", "flat_share",
                             "first_grad_norm", "fisher_trace", "loss_drop")
"""The names of the features :func:`measure` computes, in its order."""

_ZERO = 1e-6  # an output this small (relative to the input's spread) counts as zero
_FLAT = 1e-3  # a slope this small counts as flat: dead or saturated
_FISHER_SPLITS = 8  # small batches the Fisher trace averages over
_LOSS_STEPS = 5  # optimizer steps of the loss-drop feature


@dataclass(frozen=True)
class Probe:
    """The batch every candidate is measured on: the same images for every candidate of a study."""

    inputs: Tensor
    targets: Tensor


@dataclass
class Measured:
    """What :func:`measure` found: each feature it could compute, and why the others failed."""

    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def probe_batch(data: Dataset, size: int = 256, seed: int = 0) -> Probe:
    """``size`` examples of ``data`` drawn with ``seed`` (all of it when smaller), as one batch."""
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the probe batch needs data: the training split is empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(size, n)]
    inputs, targets = default_collate([data[int(i)] for i in order])[:2]
    return Probe(torch.as_tensor(inputs).float(), torch.as_tensor(targets).long())


def _site_inputs(model: nn.Module, probe: Probe) -> dict[str, Tensor]:
    """The input every site sees on the probe batch, in one forward pass."""
    seen: dict[str, Tensor] = {}
    hooks = []
    for site in sites(model):
        def keep(module: nn.Module, args: tuple, _site: str = site) -> None:
            seen.setdefault(_site, args[0].detach())
        hooks.append(model.get_submodule(site).register_forward_pre_hook(keep))
    try:
        with torch.no_grad():
            model(probe.inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _site_response(module: nn.Module, x: Tensor) -> dict[str, float]:
    """The response features of one site's activation on its input ``x``."""
    x = x.flatten().clone().requires_grad_(True)
    y = module(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    spread = float(x.detach().std()) or 1.0
    y = y.detach()
    out = {"response_gain": float(y.std()) / spread, "response_mean": float(y.mean()) / spread,
           "zero_share": float((y.abs() <= _ZERO * spread).float().mean()),
           "flat_share": float((slope.abs() <= _FLAT).float().mean())}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"not finite: {', '.join(bad)}")
    return out


def _responses(model: nn.Module, probe: Probe, measured: Measured) -> None:
    """Per-site responses, averaged over the sites where they could be computed."""
    per_site: list[dict[str, float]] = []
    for site, x in _site_inputs(model, probe).items():
        try:
            per_site.append(_site_response(model.get_submodule(site), x))
        except Exception as exc:  # noqa: BLE001 - any operator may fail on some input
            measured.errors[f"response at {site}"] = f"{type(exc).__name__}: {exc}"
    for name in ("response_gain", "response_mean", "zero_share", "flat_share"):
        if per_site:
            measured.values[name] = sum(r[name] for r in per_site) / len(per_site)


def _first_weight(model: nn.Module) -> Tensor:
    """The trainable weight of the first layer that has one (``weight_orig`` of a sparse layer)."""
    for module in model.modules():
        for name in ("weight_orig", "weight"):
            w = getattr(module, name, None)
            if isinstance(w, nn.Parameter) and w.requires_grad:
                return w
    raise ValueError("the model has no trainable weight")


def _gradients(model: nn.Module, probe: Probe, measured: Measured) -> None:
    """``first_grad_norm`` on the whole batch, ``fisher_trace`` over small batches."""
    params = [p for p in model.parameters() if p.requires_grad]
    first = _first_weight(model)
    loss = nn.functional.cross_entropy(model(probe.inputs), probe.targets)
    (grad,) = torch.autograd.grad(loss, [first])
    measured.values["first_grad_norm"] = _finite(float(grad.norm()), "first_grad_norm")
    total, parts = 0.0, 0
    for xs, ys in zip(probe.inputs.chunk(_FISHER_SPLITS), probe.targets.chunk(_FISHER_SPLITS)):
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(xs), ys), params, allow_unused=True)
        total += sum(float(g.pow(2).sum()) for g in grads if g is not None)
        parts += 1
    measured.values["fisher_trace"] = _finite(total / parts, "fisher_trace")


def _loss_drop(model: nn.Module, probe: Probe, hp: HParams) -> float:
    """The relative loss decrease after a few Adam steps at the protocol's learning rate."""
    from .training import _make_optimizer

    opt = _make_optimizer([p for p in model.parameters() if p.requires_grad], hp)
    losses = []
    for _ in range(_LOSS_STEPS + 1):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(probe.inputs), probe.targets)
        losses.append(float(loss.detach()))
        if len(losses) > _LOSS_STEPS:
            break
        loss.backward()
        opt.step()
    return _finite((losses[0] - losses[-1]) / max(losses[0], 1e-12), "loss_drop")


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}")
    return value


# Each part of the measurement and the features it gives (one pass computes them together).
_PARTS: Mapping[str, tuple[tuple[str, ...], Callable[[nn.Module, Probe, HParams, Measured], None]]] = {
    "responses": (FEATURES[:4], lambda m, p, hp, out: _responses(m, p, out)),
    "gradients": (("first_grad_norm", "fisher_trace"), lambda m, p, hp, out: _gradients(m, p, out)),
    "loss_drop": (("loss_drop",), lambda m, p, hp, out: out.values.__setitem__("loss_drop", _loss_drop(m, p, hp))),
}


def measure(model: nn.Module, probe: Probe, hp: HParams, features: Sequence[str] = FEATURES) -> Measured:
    """The zero-cost ``features`` (all by default) of ``model`` (a sparse network holding one
    candidate's activations) on ``probe``; ``hp`` gives the optimizer of ``loss_drop``. ``model``
    is not changed; only the parts of the measurement those features need are run.

    Runs on a copy of the model, on its device, in training mode as the candidate would train,
    with torch's random generator seeded (dropout draws the same masks for every candidate) and
    restored afterwards. A feature that raises is reported in :attr:`Measured.errors` under its
    name (a site's own under ``"response at <site>"``) and left out of :attr:`Measured.values`.
    """
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown zero-cost feature {unknown[0]!r}; valid: {', '.join(FEATURES)}")
    model = copy.deepcopy(model).train()  # batch norm's statistics and the steps of loss_drop stay here
    device = next(model.parameters()).device
    probe = Probe(probe.inputs.to(device), probe.targets.to(device))
    out = Measured()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name, (gives, part) in _PARTS.items():  # loss_drop last: its steps change the copy
            if not set(gives) & set(features):
                continue
            torch.manual_seed(0)
            try:
                part(model, probe, hp, out)
            except Exception as exc:  # noqa: BLE001 - a candidate may break any feature
                out.errors[name] = f"{type(exc).__name__}: {exc}"
    out.values = {k: out.values[k] for k in FEATURES if k in out.values and k in features}
    return out
