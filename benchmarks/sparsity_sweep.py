"""Accuracy against sparsity for each allocation, with the network's own activations and with SAFS.

For every (dataset, sparsity, allocation, seed) it runs the pipeline of ``studies/quickstart.toml``
(LeNet-5, the quick start's budgets unless ``--set`` changes them; ablations off) with
``[sparsity] ratio`` and ``scope`` set, and reads two test accuracies from the same run: the
magnitude-pruning baseline (ReLU, the default protocol) and SAFS (both stages). So the two
columns start from the same dense network and the same masks.

It writes ``benchmarks/results/sparsity_sweep.md`` (mean ± sd per point, the gain of SAFS over its
own baseline, and the best allocation's baseline against ``layer``) and
``benchmarks/results/sparsity_sweep_<dataset>.svg`` (one line per allocation and activation, error
bars of one sd), rewritten after every finished run. Finished runs are read back, not rerun: the sweep can
be stopped and resumed, and widened later; ``--finished-only`` writes the table of what has
finished without starting anything.

    python benchmarks/sparsity_sweep.py --sparsities 0.9,0.95,0.98,0.99,0.995 --seeds 0,1,2 --jobs 2
    python benchmarks/sparsity_sweep.py --datasets fashion_mnist --set activations.fraction=0.2

Datasets as in ``benchmarks/search_signal.py``: ``quickstart`` (embedded) and ``fashion_mnist``
(Debian's ``dataset-fashion-mnist``; skipped with a note when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_args
from bench_args import fmt as _fmt
from svg_plot import Series, line_plot

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "studies" / "quickstart.toml"
SCOPES = ("layer", "global", "erk", "lamp")
COLUMNS = {"baseline": "ReLU", "final": "SAFS"}  # stage -> how the table and plot name it
COLOURS = {"layer": "#d62728", "global": "#1f77b4", "erk": "#2ca02c", "lamp": "#9467bd"}


def _name(dataset: str, ratio: float, scope: str, seed: int) -> str:
    return f"sweep-{dataset}-{ratio:g}-{scope}-s{seed}"


def _finished(workdir: Path, job: tuple) -> bool:
    """Whether the run of ``job`` (dataset, ratio, scope, seed, …) has its result in ``workdir``."""
    return (workdir / f"{_name(*job[:4])}.json").exists()


def _run(workdir: Path, dataset: str, ratio: float, scope: str, seed: int, overrides: list[str]) -> dict:
    name = _name(dataset, ratio, scope, seed)
    db, done = workdir / f"{name}.db", workdir / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    sets = overrides + [f"sparsity.ratio={ratio}", f'sparsity.scope="{scope}"', "ablations=false",
                        f"seed={seed}", f'name="{name}"', f'artifacts="{workdir / (name + ".artifacts")}"']
    cmd = [sys.executable, "-m", "safs_optuna.cli", "run", str(CONFIG), "--storage", f"sqlite:///{db}",
           "--threads", "1"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    start = time.time()
    with open(workdir / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {workdir / (name + '.log')}")
    result = {"dataset": dataset, "ratio": ratio, "scope": scope, "seed": seed,
              "seconds": round(time.time() - start, 1), **_read(db, name)}
    done.write_text(json.dumps(result, indent=1))
    return result


def _read(db: Path, name: str) -> dict:
    """Test accuracy of each column's stage and the sparsity reached, read with plain Optuna."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict = {}
    for stage in COLUMNS:
        study = optuna.load_study(study_name=f"{name}/{stage}", storage=f"sqlite:///{db}")
        trial = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE][-1]
        out[stage] = trial.user_attrs["test_accuracy"]
        out["sparsity"] = trial.user_attrs["sparsity"]
    return out


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _table(results: list[dict], dataset: str, ratios: list[float]) -> list[str]:
    lines = ["| sparsity | allocation | seeds | reached % | ReLU (baseline) | SAFS | SAFS − ReLU |",
             "|---|---|---|---|---|---|---|"]
    for ratio in ratios:
        for scope in SCOPES:
            rs = [r for r in results if r["dataset"] == dataset and r["ratio"] == ratio and r["scope"] == scope]
            if not rs:
                continue
            gains = [r["final"] - r["baseline"] for r in rs]
            gain = ("+" if statistics.mean(gains) >= 0 else "") + _fmt(gains)
            reached = _fmt([r["sparsity"] for r in rs])
            lines.append(f"| {ratio:g} | {scope} | {len(rs)} | {reached} | {_fmt([r['baseline'] for r in rs])} "
                         f"| {_fmt([r['final'] for r in rs])} | {gain} |")
    return lines


def _best_against_layer(results: list[dict], dataset: str, ratio: float) -> str | None:
    """How far the best allocation's ReLU baseline is above ``layer``'s, at ``ratio``."""
    means = {}
    for scope in SCOPES:
        vals = [r["baseline"] for r in results if r["dataset"] == dataset and r["ratio"] == ratio
                and r["scope"] == scope]
        if len(vals) >= 3:
            means[scope] = statistics.mean(vals)
    if "layer" not in means or len(means) < 2:
        return None
    best = max((s for s in means if s != "layer"), key=means.get)
    return (f"At sparsity {ratio:g} the best allocation for the ReLU baseline is `{best}`: "
            f"{means[best]:.2f} % against `layer`'s {means['layer']:.2f} % "
            f"({means[best] - means['layer']:+.2f} points, mean of 3+ seeds).")


def _svg(results: list[dict], dataset: str, ratios: list[float]) -> str:
    """Test accuracy against sparsity: solid lines ReLU, dashed SAFS, bars one sd."""
    pos = {r: i / max(len(ratios) - 1, 1) for i, r in enumerate(ratios)}
    series = []
    for scope in SCOPES:
        for stage, label in COLUMNS.items():
            points = []
            for r in ratios:
                vals = [x[stage] for x in results if x["dataset"] == dataset and x["ratio"] == r
                        and x["scope"] == scope]
                if vals:
                    points.append((pos[r], *_stats(vals)))
            series.append(Series(f"{scope}, {label}", COLOURS[scope], points, dashed=stage == "final"))
    return line_plot(series, [(x, f"{r:g}") for r, x in pos.items()], "sparsity", "test accuracy %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sparsities", default="0.9,0.95,0.98,0.99,0.995")
    p.add_argument("--scopes", default=",".join(SCOPES))
    p.add_argument("--finished-only", action="store_true",
                   help="write the table and plot from the runs already finished in --workdir; start none")
    bench_args.add_options(p, "sparsity_sweep")
    args = p.parse_args()
    ratios = [float(r) for r in args.sparsities.split(",")]
    scopes = bench_args.choices(p, args.scopes, SCOPES, "allocation")
    workdir = bench_args.workdir(args)
    found, notes = bench_args.datasets(args)
    # Highest sparsity first: those points decide the headline, the rest fill in.
    jobs = [(dataset, r, s, seed, overrides) for dataset, overrides in found
            for r in sorted(ratios, reverse=True) for s in scopes for seed in bench_args.seeds(args)]
    results, failed = [], []
    lock = threading.Lock()
    start, ran = time.time(), [0]  # runs made (not read back) by this invocation, for the time left

    def one(job):
        dataset, ratio, scope, seed, overrides = job
        cached = _finished(workdir, job)
        try:
            r = _run(workdir, dataset, ratio, scope, seed, overrides)
        except RuntimeError as exc:
            with lock:
                failed.append(str(exc))
            print(exc, flush=True)
            return
        with lock:
            results.append(r)
            ran[0] += not cached
            # Rewritten after every run, so a sweep stopped part-way leaves the table of what it finished.
            _write(args, [d for d, _ in found], ratios, results, notes + failed, len(jobs))
            # Runs not finished yet (a finished one left in the queue is read back in no time).
            left = sum(not _finished(workdir, j) for j in todo) - len(failed)
            eta = (f", about {left * (time.time() - start) / ran[0] / 60:.0f} min left"
                   if ran[0] and left else "")
        print(f"{dataset} {ratio:g} {scope} seed {seed}: ReLU {r['baseline']:.2f}, SAFS {r['final']:.2f} "
              f"({r['seconds']} s; {len(results)} of {len(jobs)} runs finished{eta})", flush=True)

    todo = jobs
    if args.finished_only:
        todo = [j for j in jobs if _finished(workdir, j)]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, todo))
    _write(args, [d for d, _ in found], ratios, results, notes + failed, len(jobs))
    print(f"wrote {args.out}")


def _write(args: argparse.Namespace, labels: list[str], ratios: list[float], results: list[dict],
           notes: list[str], planned: int) -> None:
    """The results file and one plot per dataset, from the runs finished so far."""
    out = Path(args.out)
    lines = ["# Accuracy against sparsity: allocations, ReLU and SAFS", "",
             f"Command: `{bench_args.command('sparsity_sweep.py')}`", "",
             "LeNet-5, `studies/quickstart.toml`'s budgets" + (f" with {', '.join(args.set)}" if args.set else "")
             + ", ablations off; each point one pipeline run per seed, the ReLU column its magnitude-pruning "
             "baseline and the SAFS column its final stage (test accuracy %, mean ± sd).", ""]
    if len(results) < planned:
        lines += [f"**Partial: {len(results)} of the {planned} planned runs have finished.** The same command "
                  "reads the finished runs from its work folder and runs the rest.", ""]
    for dataset in [d for d in labels if any(r["dataset"] == d for r in results)]:
        svg = bench_args.plot_path(out, dataset)
        svg.write_text(_svg(results, dataset, sorted(ratios)))
        lines += [f"## {dataset}", "", *_table(results, dataset, sorted(ratios)), "",
                  f"![accuracy against sparsity]({svg.name})", ""]
        if (verdict := _best_against_layer(results, dataset, 0.99)) is not None:
            lines += [verdict, ""]
    lines += [f"- {n}" for n in notes]
    out.write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
