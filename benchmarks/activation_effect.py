"""The effect this project exists for: at 99 % sparsity the activation function matters.

LeNet-5 is trained dense on the embedded quick-start data (Fashion-MNIST subset), pruned to
0.99 layer-wise by magnitude, then fine-tuned from the same sparse weights with the same seed
and epochs, once with ReLU and once with each other tree. Prints the test accuracies.

    python benchmarks/activation_effect.py [--dense-epochs 4] [--epochs 2] [--trees "x + ..."]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import safs_optuna as so
from safs_optuna.models import set_trees

TREES = ("relu(x)", "add(x, sin(x))", "swish(x)", "symlog(x)", "tanhsoft1(x)", "max(x, sin(x))", "srs(x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ratio", type=float, default=0.99)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trees", nargs="*", default=list(TREES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    splits = so.data.load("quickstart", seed=args.seed)
    hp = so.HParams(optimizer="adam", lr=1e-3, batch_size=args.batch_size)
    torch.manual_seed(args.seed)  # the dense initial weights too
    model = so.make_searchable(so.build_model("lenet5", num_classes=splits.num_classes,
                                              in_channels=splits.in_channels, image_size=splits.image_size))
    t0 = time.time()
    so.fit(model, splits, hp, args.dense_epochs, seed=args.seed, progress=False)
    dense = so.evaluate(model, splits.test).accuracy
    so.magnitude_prune(model, args.ratio, scope="layer")
    pruned = so.evaluate(model, splits.test).accuracy
    print(f"LeNet-5, quickstart data ({len(splits.train)} train / {len(splits.val)} val / "
          f"{len(splits.test)} test), seed {args.seed}")
    print(f"dense ({args.dense_epochs} epochs): {dense:.2f}%   pruned to {args.ratio} before fine-tuning: {pruned:.2f}%")
    print(f"fine-tune: Adam 1e-3, batch {args.batch_size}, {args.epochs} epochs, same sparse weights and seed for every tree\n")
    print(f"{'activation (every site)':<28} {'best val %':>10} {'test %':>8}")
    for formula in args.trees:
        tree = so.OperatorTree.parse(formula)
        m = copy.deepcopy(model)
        set_trees(m, {site: tree for site in so.sites(m)})
        result = so.fit(m, splits, hp, args.epochs, seed=args.seed, progress=False)
        test = so.evaluate(m, splits.test).accuracy
        print(f"{tree.formula:<28} {result.best_val_accuracy:>10.2f} {test:>8.2f}", flush=True)
    print(f"\ntotal {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
