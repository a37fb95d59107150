"""Candidate epoch time on a device: LeNet-5 (28×28), VGG-16 and ResNet-18 (32×32) at 99 % sparsity.

A stage-1 candidate is one short fine-tune of the sparse network with a searched activation at
every site; its cost is its epochs. This times, per model, one epoch of ``safs_optuna.fit``
(training with Adam plus the validation pass) on synthetic data of the model's input size, with
``add(x, sin(x))`` at every activation site, after one warm-up epoch.

    python benchmarks/gpu_epochs.py --device cuda --out benchmarks/results/gpu_epochs.md

Synthetic data is fine for a time: the numbers say nothing about accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import TensorDataset

import safs_optuna as so
from safs_optuna.activation import OperatorTree
from safs_optuna.space import ActivationSpace

from bench_args import device_name, emit_table

MODELS = {  # name: (channels, size, train images, batch size)
    "lenet5": (1, 28, 9000, 64),
    "vgg16": (3, 32, 10000, 128),
    "resnet18": (3, 32, 10000, 128),
}


class _Splits:
    def __init__(self, c: int, s: int, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.train = TensorDataset(torch.randn(n, c, s, s, generator=g), torch.randint(0, 10, (n,), generator=g))
        self.val = TensorDataset(torch.randn(n // 9, c, s, s, generator=g), torch.randint(0, 10, (n // 9,), generator=g))
        self.num_classes = 10


def epoch_seconds(name: str, device: str, tree: str) -> tuple[float, int]:
    c, s, n, batch = MODELS[name]
    model = so.make_searchable(so.build_model(name, num_classes=10, in_channels=c, image_size=s))
    so.magnitude_prune(model, 0.99, scope="layer")
    sites = so.sites(model)
    ActivationSpace(["relu"]).apply(model, {site: OperatorTree.parse(tree) for site in sites})
    splits = _Splits(c, s, n)
    hp = so.HParams(optimizer="adam", lr=1e-3, batch_size=batch)
    so.fit(model, splits, hp, epochs=1, device=device, progress=False)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    so.fit(model, splits, hp, epochs=1, device=device, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--tree", default="add(x, sin(x))")
    p.add_argument("--out")
    args = p.parse_args()
    lines = [f"# Candidate epoch time ({device_name(args.device)})", "",
             f"`python benchmarks/gpu_epochs.py --device {args.device}`; 99 % layer-wise sparsity, "
             f"`{args.tree}` at every site, Adam, one epoch of training plus validation.", "",
             "| model | input | train images | batch | s per epoch | images/s |", "|---|---|---|---|---|---|"]

    def rows():
        for m in args.models.split(","):
            secs, n = epoch_seconds(m, args.device, args.tree)
            c, s, _, batch = MODELS[m]
            yield f"| {m} | {c}×{s}×{s} | {n} | {batch} | {secs:.2f} | {n / secs:.0f} |"

    emit_table(lines, rows(), args.out)


if __name__ == "__main__":
    main()
