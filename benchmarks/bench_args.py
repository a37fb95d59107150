"""What the benchmark scripts share: their common options, the datasets they find, number formatting,
the device's name and the writing of a table that fills row by row."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISSING_FMNIST = "not installed, skipped (apt-get install dataset-fashion-mnist)"


def add_options(p: argparse.ArgumentParser, name: str, datasets: str = "quickstart",
                set_example: str = "activations.trials=10") -> None:
    """--datasets, --seeds, --jobs, --fashion-mnist-dir, --set, --workdir and --out (named ``name``)."""
    p.add_argument("--datasets", default=datasets,
                   help="comma-separated: quickstart, fashion_mnist, or idx:<folder> (any folder of "
                        "MNIST-format IDX files, named in the results by the folder's name)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1),
                   help="runs at once (each one process with one torch thread)")
    p.add_argument("--fashion-mnist-dir", help="a folder with Fashion-MNIST's IDX files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"a config override for every run, e.g. {set_example} (stated in the output)")
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / "work" / name),
                   help="finished runs are kept here and read back, not rerun")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"{name}.md"))


def choices(p: argparse.ArgumentParser, value: str, valid, what: str) -> list[str]:
    """The comma-separated ``value`` as a list; exits with a usage error naming an unknown one."""
    chosen = [v for v in value.split(",") if v]
    for v in chosen:
        if v not in valid:
            p.error(f"unknown {what} {v!r}; valid: {', '.join(valid)}")
    return chosen


def seeds(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.seeds.split(",")]


def workdir(args: argparse.Namespace) -> Path:
    """``--workdir``, absolute (runs may start in other folders) and created, as is the folder of
    ``--out``, so that a results file outside ``benchmarks/results`` is written at the end, not lost."""
    path = Path(args.workdir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    return path


def datasets(args: argparse.Namespace) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(dataset's name, its config overrides followed by ``--set``'s) per dataset found, and a note
    per dataset that is not installed. Exits naming the valid choices for an unknown one."""
    found, notes = [], []
    for dataset in args.datasets.split(","):
        label, overrides = dataset_overrides(dataset, args.fashion_mnist_dir)
        if overrides is None:
            notes.append(f"{dataset}: {MISSING_FMNIST}")
            print(notes[-1])
            continue
        found.append((label, overrides + args.set))
    return found, notes


def dataset_overrides(dataset: str, fmnist_dir: str | None) -> tuple[str, list[str] | None]:
    """The name a dataset goes by in file names and tables, and the config overrides that select
    it (None where Fashion-MNIST is not installed)."""
    if dataset == "quickstart":
        return dataset, ['data.name="quickstart"']
    if dataset.startswith("idx:"):
        folder = Path(dataset[4:]).expanduser().resolve()
        if not folder.is_dir():
            sys.exit(f"--datasets {dataset}: {folder} is not a folder")
        # Run names (and so study names) take letters, digits, "_", "." and "-" only.
        return re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name), [f'data.name="idx:{folder}"']
    if dataset != "fashion_mnist":
        sys.exit(f"--datasets: unknown dataset {dataset!r}; valid: quickstart, fashion_mnist, idx:<folder>")
    if fmnist_dir:
        return dataset, [f'data.name="idx:{Path(fmnist_dir).expanduser().resolve()}"']
    sys.path.insert(0, str(ROOT))
    from safs_optuna.data import SYSTEM_FASHION_MNIST_DIRS

    if any(Path(d).is_dir() for d in SYSTEM_FASHION_MNIST_DIRS):
        return dataset, ['data.name="fashion_mnist"']
    return dataset, None


def plot_path(out: str | Path, dataset: str) -> Path:
    """The plot beside the results file ``out`` for ``dataset``: ``<stem>_<dataset>.svg``, or
    ``<stem>.svg`` where the stem already ends in the dataset's name."""
    out = Path(out)
    stem = out.stem if out.stem.endswith(f"_{dataset}") else f"{out.stem}_{dataset}"
    return out.with_name(f"{stem}.svg")


def command(script: str) -> str:
    """How this run was invoked, for the results file: without ``--jobs`` and ``--workdir``, which
    change nothing but how many run at once and where (a path of one machine), and
    ``--finished-only``, which only reads the runs the command would make."""
    argv = sys.argv[1:]
    valued = ("--jobs", "--workdir")
    shown = [a for i, a in enumerate(argv)
             if a not in (*valued, "--finished-only") and not a.startswith(tuple(f"{v}=" for v in valued))
             and (i == 0 or argv[i - 1] not in valued)]
    return " ".join([f"python benchmarks/{script}", *shown])


def commit() -> str:
    """The short commit of this checkout's HEAD, for the results file ("unknown" outside git)."""
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def fmt(values: list[float | None]) -> str:
    """``mean ± sd`` (one value: itself); ``—`` when any value is missing."""
    vals = [v for v in values if v is not None]
    if len(vals) < len(values) or not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, else the CPU and its torch threads."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} torch threads"


def emit_table(lines: list[str], rows: Iterable[str], out: str | None) -> None:
    """Append each row to ``lines`` as it is measured (and print it), then print the whole text and
    write it to ``out`` when given."""
    for row in rows:
        lines.append(row)
        print(row, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)


def config_overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as config overrides, read as the command line reads them."""
    from safs_optuna.cli import _overrides

    return _overrides(argparse.Namespace(set=items))


def sparse_network(cfg, splits, seed: int):
    """The config's network trained dense and pruned to its sparsity, seeded as the pipeline's
    dense and sparse stages are: the network every fine-tune of a run starts from."""
    import torch

    from safs_optuna import build_model, fit, magnitude_prune, make_searchable

    arch = {"name": cfg.model.name, "num_classes": splits.num_classes, "in_channels": splits.in_channels,
            "image_size": splits.image_size}
    torch.manual_seed(seed)  # as the pipeline's dense stage
    sparse = make_searchable(build_model(**arch))
    fit(sparse, splits, cfg.protocol.hparams(), cfg.dense.epochs, seed=seed, progress=False)
    sp = cfg.sparsity
    magnitude_prune(sparse, sp.ratio, scope=sp.scope, skip=sp.skip, min_density=sp.min_density)
    return sparse
