"""Wall time and results of the quick-start study with 1 and with 2 workers.

Each run starts from an empty storage in a temporary folder (the shipped config, copied), so
nothing is reused between them. Prints the tables and writes benchmarks/results/quickstart.md,
with where each run's wall time went: start-up, the trials (summed over workers), the rest, and
the wall-time ratios of the runs to each one-worker run.

A run is ``W`` (W workers, the cores split between them, as ``safs-optuna run --workers W``)
or ``WxT`` (W workers of T torch threads each). The default runs one worker with all cores (the
stronger baseline: its torch threads share every step), one worker on one thread (the baseline
of worker scaling), and two workers:

    python benchmarks/quickstart.py [--runs 1 1x1 2] [--repeats 1] [--config studies/quickstart.toml]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna
import torch

from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline, results_table

ROOT = Path(__file__).resolve().parent.parent


def parse_run(spec: str) -> tuple[int, int | None]:
    """``"2"`` -> (2, None): the cores split; ``"1x1"`` -> (1, 1): one worker of one thread."""
    workers, _, threads = spec.partition("x")
    try:
        parsed = int(workers), (int(threads) if threads else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"run {spec!r}: expected W or WxT (workers, threads), e.g. 2 or 1x1") from None
    if parsed[0] < 1 or (parsed[1] is not None and parsed[1] < 1):
        raise argparse.ArgumentTypeError(f"run {spec!r}: workers and threads must be >= 1")
    return parsed


def describe(workers: int, threads: int | None) -> str:
    if threads is None:
        return f"{workers} worker(s), cores split ({max(1, (os.cpu_count() or 1) // workers)} thread(s) each)"
    return f"{workers} worker(s) of {threads} thread(s)"


def run(config: Path, workers: int, threads: int | None = None) -> tuple[float, str, str]:
    """Wall seconds, the results table, and where the wall time went."""
    with tempfile.TemporaryDirectory(prefix="safs-quickstart-") as tmp:
        cfg_path = Path(tmp) / config.name
        shutil.copy(config, cfg_path)
        started = datetime.now()
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "safs_optuna.cli", "run", str(cfg_path), "--workers", str(workers)]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"run with {workers} worker(s) failed:\n{proc.stderr[-3000:]}")
        cfg = load_config(cfg_path)
        table = results_table([Pipeline(cfg)])
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
    ap.add_argument("--runs", type=parse_run, nargs="+", default=[(1, None), (1, 1), (2, None)],
                    metavar="W[xT]", help="W workers, or W workers of T threads (default: 1 1x1 2)")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of all runs, interleaved (median over them)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quickstart.md")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    lines = [f"# Quick-start study: {args.config.name}", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, Python {platform.python_version()}; "
             f"command: {' '.join(['python', 'benchmarks/quickstart.py', *sys.argv[1:]])}", ""]
    walls: dict[tuple[int, int | None], list[float]] = {}
    for rep in range(args.repeats):  # interleaved: a slow spell of the machine hits every run alike
        for workers, threads in args.runs:
            what = describe(workers, threads)
            print(f"running the quick start with {what} (round {rep + 1} of {args.repeats}) ...", flush=True)
            wall, table, timing = run(args.config, workers, threads)
            walls.setdefault((workers, threads), []).append(wall)
            block = (f"## {what}: {wall:.0f} s wall" + (f" (round {rep + 1})" if args.repeats > 1 else "")
                     + f"\n\n{timing}.\n\n{table}\n")
            print(block, flush=True)
            lines.append(block)
    median = {r: statistics.median(w) for r, w in walls.items()}
    summary = ["## Wall times and ratios", "",
               *(f"- {describe(*r)}: {median[r]:.0f} s" + (f" (median of {', '.join(f'{x:.0f}' for x in w)})"
                                                            if len(w) > 1 else "")
                 for r, w in walls.items()),
               *(f"- {describe(*r)} / {describe(*base)}: **{median[r] / median[base]:.2f}x** wall time"
                 for r in walls if r[0] > 1 for base in walls if base[0] == 1), ""]
    print("\n".join(summary))
    lines += summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
