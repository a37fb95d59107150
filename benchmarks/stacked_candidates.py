"""Several stage-1 candidates trained at once in one network, against one after another.

Stage-1 candidates share everything but their activations: the same pruned LeNet-5 weights and
masks, the same data, batch order and protocol. So K of them can be one network: the K copies of a
conv layer become one grouped convolution (``groups=K``), the K copies of a linear layer one
batched matrix product, and each candidate's activation is applied to its own slice of channels.
The loss is the sum of the K candidates' losses, so every candidate's gradient is its own, and
Adam, being elementwise, then updates each candidate as its own optimizer would (up to the
rounding of the summed gradients).

Fewer, larger kernels can pay where launching a kernel costs more than running it (a GPU and a
small network); on a CPU the slicing and stacking around the activations cost more than they save.
This script measures both ways on a device and writes the table; the pipeline trains one
candidate per worker process, and would take this up only where it measures faster.

    python benchmarks/stacked_candidates.py --device cuda --candidates 4,8,16 --out benchmarks/results/stacked_candidates.md

Before timing, it checks that the stacked network gives every candidate's logits and, after one
SGD step, every candidate's weights, as the separate networks do.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import safs_optuna as so
from safs_optuna.activation import OperatorTree
from safs_optuna.models import set_trees
from safs_optuna.space import ActivationSpace

from bench_args import device_name, emit_table

CONVS = ("conv1", "conv2")
LINEARS = ("fc1", "fc2", "fc3")
ACTS = ("act1", "act2", "act3", "act4")


def _weight(layer: nn.Module) -> tuple[Tensor, Tensor]:
    """A pruned layer's raw weight and mask (``torch.nn.utils.prune``), or its weight and ones."""
    if hasattr(layer, "weight_orig"):
        return layer.weight_orig.detach(), layer.weight_mask
    return layer.weight.detach(), torch.ones_like(layer.weight)


class StackedLeNet5(nn.Module):
    """K pruned LeNet-5 candidates as one network; ``forward`` returns logits of shape (K, N, classes)."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.k = len(models)
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for name in CONVS + LINEARS:
            layers = [getattr(m, name) for m in models]
            w, mask = zip(*(_weight(layer) for layer in layers))
            stack = torch.cat if name in CONVS else torch.stack  # grouped conv: K blocks of out channels
            self.weights[name] = nn.Parameter(stack(w).clone())
            self.register_buffer(f"{name}_mask", stack(mask).clone())
            self.biases[name] = nn.Parameter(stack([layer.bias.detach() for layer in layers]).clone())
        # Each candidate's activation modules, with their own learnable parameters.
        self.acts = nn.ModuleList(nn.ModuleList(copy.deepcopy(getattr(m, a)) for a in ACTS) for m in models)
        self.padding = models[0].conv1.padding

    def _act(self, site: int, x: Tensor, channel_dim: int) -> Tensor:
        """Candidate k's activation on its slice ``k`` of dimension ``channel_dim`` of ``x``."""
        parts = x.unflatten(channel_dim, (self.k, -1)) if channel_dim == 1 else x
        dim = 1 if channel_dim == 1 else 0
        out = [self.acts[k][site](parts.select(dim, k)) for k in range(self.k)]
        joined = torch.stack(out, dim=dim)
        return joined.flatten(1, 2) if channel_dim == 1 else joined

    def _w(self, name: str) -> Tensor:
        return self.weights[name] * getattr(self, f"{name}_mask")

    def forward(self, x: Tensor) -> Tensor:
        x = x.repeat(1, self.k, 1, 1)  # every candidate sees the same images
        x = F.conv2d(x, self._w("conv1"), self.biases["conv1"].flatten(), padding=self.padding, groups=self.k)
        x = F.max_pool2d(self._act(0, x, 1), 2)
        x = F.conv2d(x, self._w("conv2"), self.biases["conv2"].flatten(), groups=self.k)
        x = F.max_pool2d(self._act(1, x, 1), 2)
        x = x.unflatten(1, (self.k, -1)).flatten(2).transpose(0, 1)  # (K, N, features)
        for site, name in enumerate(LINEARS):
            x = torch.baddbmm(self.biases[name].unsqueeze(1), x, self._w(name).transpose(1, 2))
            if site < 2:
                x = self._act(2 + site, x, 0)
        return x


def candidates(k: int, seed: int = 0) -> list[nn.Module]:
    """K pruned LeNet-5s with the same weights and the safs preset's unary operators in turn."""
    torch.manual_seed(seed)
    base = so.make_searchable(so.build_model("lenet5"))
    so.magnitude_prune(base, 0.99, scope="layer")
    unary = ActivationSpace.preset("safs").unary
    models = []
    for i in range(k):
        m = copy.deepcopy(base)
        set_trees(m, {site: OperatorTree.unary(unary[i % len(unary)]) for site in so.sites(m)})
        models.append(m)
    return models


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3)


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in params if p.requires_grad], lr=0.1)


def check_equivalence(device: str, k: int = 3) -> float:
    """Largest difference between stacked and separate candidates: logits, then weights after an
    SGD step."""
    models = [m.to(device) for m in candidates(k)]
    stacked = StackedLeNet5(models).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (16,), generator=gen).to(device)
    worst = max((stacked(x)[i] - m(x)).abs().max().item() for i, m in enumerate(models))
    # One SGD step: its update is the gradient itself (Adam's first step is lr·sign(g) and
    # magnifies rounding in gradients near 0), so this checks each candidate's gradient.
    _stacked_step(stacked, _sgd(stacked.parameters()), x, y)
    for m in models:
        _step(m, _sgd(m.parameters()), x, y)
    for i, m in enumerate(models):
        for name in CONVS + LINEARS:
            layer = getattr(m, name)
            w, mask = _weight(layer)  # not layer.weight: prune recomputes it only in the forward
            for mine, theirs in ((stacked._w(name), w * mask), (stacked.biases[name], layer.bias)):
                own = mine.chunk(k)[i] if name in CONVS else mine[i]
                worst = max(worst, (own - theirs).abs().max().item())
    return worst


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _stacked_step(model: StackedLeNet5, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    logits = model(x)
    # Sum of the candidates' mean losses: each candidate's gradient is its own.
    loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(model.k), reduction="sum") / x.shape[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(k: int, device: str, steps: int, batch: int) -> tuple[float, float]:
    """Seconds per training step of all K candidates: one after another, and stacked."""
    models = [m.to(device) for m in candidates(k)]
    stacked = StackedLeNet5(models).to(device)
    opts = [_adam(m.parameters()) for m in models]
    opt = _adam(stacked.parameters())
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)

    def separate() -> None:
        for m, o in zip(models, opts):
            _step(m, o, x, y)

    def together() -> None:
        _stacked_step(stacked, opt, x, y)

    result = []
    for run in (separate, together):
        for _ in range(3):  # warm-up: allocations, Adam state, kernel selection
            run()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            run()
        _sync(device)
        result.append((time.perf_counter() - start) / steps)
    return result[0], result[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--candidates", default="4,8,16", help="values of K (comma-separated)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out")
    args = p.parse_args()
    ks = [int(v) for v in args.candidates.split(",") if v]
    if not ks or min(ks) < 1:
        p.error(f"--candidates needs positive integers, got {args.candidates!r}")
    diff = check_equivalence(args.device)
    if diff > 1e-4:
        raise SystemExit(f"stacked candidates differ from separate ones by {diff:.2e}; not timing")
    lines = [f"# Stacked stage-1 candidates ({device_name(args.device)})", "",
             f"`python benchmarks/stacked_candidates.py --device {args.device} --candidates {args.candidates} "
             f"--steps {args.steps} --batch {args.batch}`; LeNet-5 at 0.99 layer-wise, one safs-preset "
             f"operator per candidate, Adam, batch {args.batch}; wall time per training step of all K "
             f"candidates, mean of {args.steps} steps. Stacked and separate agree to {diff:.1e}.", "",
             "| K | one after another ms | stacked ms | stacked / separate |", "|---|---|---|---|"]

    def rows():
        for k in ks:
            sep, stk = time_steps(k, args.device, args.steps, args.batch)
            yield f"| {k} | {1e3 * sep:.2f} | {1e3 * stk:.2f} | {stk / sep:.2f} |"

    emit_table(lines, rows(), args.out)


if __name__ == "__main__":
    main()
