"""Rank every operator on the quick-start task; the measurement behind the "compact" preset.

LeNet-5 is trained dense on the embedded quick-start data, pruned to 0.99 layer-wise, and
fine-tuned from the same sparse weights (same seed, Adam 1e-3, batch 64) with one activation at
every site: first each unary operator u as ``u(x)``, then each binary operator b as
``b(x, u*)`` with the best unary u*. Ranked by validation accuracy (the test split is not read).
Writes benchmarks/results/rank_operators.md.

    python benchmarks/rank_operators.py [--epochs 2] [--dense-epochs 6] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from statistics import mean

import torch

import safs_optuna as so
from safs_optuna.models import set_trees

ROOT = Path(__file__).resolve().parent.parent


def score(model, splits, formula: str, hp, epochs: int, seeds: list[int]) -> float:
    tree = so.OperatorTree.parse(formula)
    values = []
    for seed in seeds:
        m = copy.deepcopy(model)
        set_trees(m, {site: tree for site in so.sites(m)})
        try:
            values.append(so.fit(m, splits, hp, epochs, seed=seed, progress=False).best_val_accuracy)
        except so.DivergedError:
            values.append(0.0)
    return mean(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense-epochs", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rank_operators.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    splits = so.data.load("quickstart", seed=0)
    hp = so.HParams(optimizer="adam", lr=1e-3, batch_size=64)
    torch.manual_seed(0)
    model = so.make_searchable(so.build_model("lenet5", num_classes=splits.num_classes,
                                              in_channels=splits.in_channels, image_size=splits.image_size))
    so.fit(model, splits, hp, args.dense_epochs, seed=0, progress=False)
    so.magnitude_prune(model, 0.99, scope="layer")

    unary = sorted(((score(model, splits, so.OperatorTree.unary(u).formula, hp, args.epochs, args.seeds), u)
                    for u in so.UNARY), reverse=True)
    best = unary[0][1]
    binary = sorted(((score(model, splits, so.OperatorTree(b, "x", best).formula, hp, args.epochs, args.seeds), b)
                     for b in so.BINARY if b != "left"), reverse=True)
    lines = [f"# Operator ranking: LeNet-5, quickstart data, sparsity 0.99 (layer), fine-tune "
             f"{args.epochs} epochs Adam 1e-3 batch 64, mean best val % over seeds {args.seeds}", "",
             "command: python benchmarks/rank_operators.py", "",
             "| rank | unary u(x) | val % |", "|---|---|---|"]
    lines += [f"| {i + 1} | {u} | {v:.2f} |" for i, (v, u) in enumerate(unary)]
    lines += ["", f"| rank | binary b(x, {best}(x)) | val % |", "|---|---|---|"]
    lines += [f"| {i + 1} | {b} | {v:.2f} |" for i, (v, b) in enumerate(binary)]
    lines += ["", f"total {time.time() - start:.0f} s"]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
