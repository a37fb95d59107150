"""Make ``fashion_mnist_quickstart.npz``, the small real-image dataset shipped with safs-optuna.

A seeded, class-balanced subset of Fashion-MNIST (Zalando Research, MIT license): 1 000 training
and 200 test images of each of the 10 classes, taken from the official training and test sets
respectively, stored as uint8 in a compressed npz (arrays ``x_train``, ``y_train``, ``x_test``,
``y_test``; images N x 28 x 28, labels 0..9). The source is Debian's ``dataset-fashion-mnist``
package (the IDX files as published by Zalando Research).

Usage::

    apt-get install dataset-fashion-mnist
    python safs_optuna/datasets/make_quickstart.py [--source /usr/share/datasets/fashion-mnist]

The selection depends only on the seed and the source files, so rerunning the script gives the
same arrays (the zip container's timestamps differ; the array checksum printed does not).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from safs_optuna.data import QUICKSTART_FILE, read_idx

SEED = 20230519  # arbitrary, fixed: the arrays must not change between runs
TRAIN_PER_CLASS = 1000
TEST_PER_CLASS = 200


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` examples of every class, in the source's order."""
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / QUICKSTART_FILE)
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, prefix, per_class in (("train", "train", TRAIN_PER_CLASS), ("test", "t10k", TEST_PER_CLASS)):
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")
        index = balanced_subset(labels, per_class, rng)
        arrays[f"x_{split}"] = np.ascontiguousarray(images[index], dtype=np.uint8)
        arrays[f"y_{split}"] = np.ascontiguousarray(labels[index], dtype=np.uint8)
    np.savez_compressed(args.out, **arrays)

    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(arrays[name].tobytes())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    for split in ("train", "test"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=10)
        print(f"{split}: {arrays[f'x_{split}'].shape}, per class {counts.tolist()}")
    for source in sorted(args.source.glob("*.gz")):
        print(f"source {source.name} sha256 {hashlib.sha256(source.read_bytes()).hexdigest()}")
    print(f"arrays sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    main()
