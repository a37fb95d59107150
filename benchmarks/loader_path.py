"""An epoch of the quick start through the in-memory path and through a DataLoader, and their ratio.

``fit`` slices a ``TensorDataset`` directly; any other map-style dataset (a user's, an image folder
too large for memory) goes through a ``DataLoader`` that reads item by item. This times one
training epoch plus its validation of LeNet-5 on the quick-start data both ways — the same images
and batch order, one torch thread — with ``loader_workers`` 0 and 2, and writes
``benchmarks/results/loader_path.md``.

    python benchmarks/loader_path.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import safs_optuna as so  # noqa: E402


class Items(Dataset):
    """The same tensors served one item at a time, as a user's dataset serves them."""

    def __init__(self, base) -> None:
        self.x, self.y = base.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def epoch_seconds(splits, model, loader_workers: int) -> float:
    start = time.perf_counter()
    so.fit(copy.deepcopy(model), splits, so.HParams(batch_size=64), 1, progress=False,
           loader_workers=loader_workers)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader_path.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    memory = so.data.load("quickstart")
    items = copy.copy(memory)
    items.train, items.val = Items(memory.train), Items(memory.val)
    model = so.make_searchable(so.build_model("lenet5"))
    ways = {"in memory (TensorDataset)": (memory, 0), "DataLoader, loader_workers = 0": (items, 0),
            "DataLoader, loader_workers = 2": (items, 2)}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.repeats):  # interleaved, so that a busy moment does not favour one way
        for name, (splits, workers) in ways.items():
            times[name].append(epoch_seconds(splits, model, workers))
    base = statistics.median(times["in memory (TensorDataset)"])
    load = os.getloadavg()[0]
    lines = ["# One quick-start epoch: in memory against a DataLoader", "",
             f"`python benchmarks/loader_path.py --repeats {args.repeats}`", "",
             f"LeNet-5, {len(memory.train)} training and {len(memory.val)} validation images, batch 64, one torch "
             f"thread, CPU ({os.cpu_count()} cores, 1-minute load average {load:.1f} when it ended: other "
             f"processes share the cores above about {os.cpu_count() - 1}); median of {args.repeats} "
             "interleaved rounds.", "",
             "| path | seconds per epoch | × in memory |", "|---|---|---|"]
    for name, ts in times.items():
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {statistics.median(ts) / base:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
