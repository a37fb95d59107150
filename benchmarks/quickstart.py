"""Wall time and results of the quick-start study with 1 and with 2 workers.

Each run starts from an empty storage in a temporary folder (the shipped config, copied), so
nothing is reused between them. Prints both tables and writes benchmarks/results/quickstart.md,
with where each run's wall time went: start-up, the trials (summed over workers), the rest.

    python benchmarks/quickstart.py [--workers 1 2] [--config studies/quickstart.toml]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna
import torch

from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path, workers: int) -> tuple[float, str, str]:
    """Wall seconds, the results table, and where the wall time went."""
    with tempfile.TemporaryDirectory(prefix="safs-quickstart-") as tmp:
        cfg_path = Path(tmp) / config.name
        shutil.copy(config, cfg_path)
        started = datetime.now()
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "safs_optuna.cli", "run", str(cfg_path),
                               "--workers", str(workers)], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"run with {workers} worker(s) failed:\n{proc.stderr[-3000:]}")
        cfg = load_config(cfg_path)
        table = Pipeline(cfg).table()
        timing = _where_the_time_went(cfg.storage, started, wall, workers)
    return wall, table, timing


def _where_the_time_went(storage: str, started: datetime, wall: float, workers: int) -> str:
    """Start-up (to the first trial), the trials' seconds summed over workers, the least wall time
    those trials allow with this many workers, and the rest (waiting, the end)."""
    trials = [t for s in optuna.get_all_study_summaries(storage)
              for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
              if t.datetime_start and t.datetime_complete]
    first = min(t.datetime_start for t in trials)
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    startup = (first - started).total_seconds()
    return (f"start-up to the first trial {startup:.1f} s; {len(trials)} trials took {busy:.0f} s in all "
            f"({busy / workers:.0f} s per worker if perfectly shared); the rest of the wall time, "
            f"{wall - startup - busy / workers:.1f} s, is waiting for inputs and the end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "studies" / "quickstart.toml")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quickstart.md")
    args = ap.parse_args()
    lines = [f"# Quick-start study: {args.config.name}", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, Python {platform.python_version()}; "
             f"command: python benchmarks/quickstart.py", ""]
    for n in args.workers:
        wall, table, timing = run(args.config, n)
        block = f"## {n} worker(s): {wall:.0f} s wall\n\n{timing}.\n\n{table}\n"
        print(block, flush=True)
        lines.append(block)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
