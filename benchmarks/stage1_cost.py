"""What does stage 1 cost, and does a cheaper search find as good a winner?

Runs the pipeline of ``studies/quickstart.toml`` (LeNet-5, 99 % of every layer's weights removed)
once per (dataset, method, seed) with stage 2 cut to one trial per search (stage 2 is not measured
here) and writes ``benchmarks/results/stage1_cost_<dataset>.md`` and an SVG: per stage-1 method,
the stage-1 epochs spent, the best validation accuracy the search found (the ranking rule's
score), and the winner's test accuracy after the default fine-tune (the report's "stage 1" column)
against magnitude pruning's ("baseline", the same network fine-tuned with its own activations).

Methods:

* ``lahc``: the earlier default — LAHC with 20 candidates, "auto" epochs, the incumbent pruner:
  the reference every other method is measured against.
* ``lahc-halving``: LAHC with successive halving on the ranking score (every candidate 1 epoch,
  the best third 3, the best third of those the full "auto" count).
* ``random-halving``: random search with the same successive halving.
* ``lahc-third``: LAHC as today with a third of the candidates: the plain way to spend a third.
* ``surrogate``: the surrogate sampler (a nearest-neighbour regression on the finished
  candidates' operators proposes the one it predicts best), "auto" epochs, the incumbent pruner.
* ``surrogate-third``: the same with a third of the candidates (7): today's default, chosen on
  these results.
* ``random-third``: random search with a third of the candidates and the incumbent pruner (for a
  sampler other than LAHC it compares with the best earlier candidate): what the surrogate's
  regression adds over its pool's random draws and the pruner.
* ``surrogate-features-third``: the surrogate with a third of the candidates, its regression
  also given the zero-cost feature that ranked trained candidates in every seed of both
  datasets of ``zero_cost.py`` (``response_gain``).

Each run is one ``safs-optuna run`` with one worker and one torch thread into its own SQLite
file under ``--workdir`` (reused: finished runs are read back, not rerun).

Example:

    python benchmarks/stage1_cost.py --datasets quickstart,fashion_mnist --seeds 0,1,2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_args
from bench_args import fmt
from search_signal import CONFIG, ROOT, _read
from svg_plot import Series, line_plot

# Stage 2 is not what this measures: one trial per stage-2 search keeps its cost out of the way.
COMMON = ['activations.preset="safs"', "hpo.trials=1"]
# Every method names its sampler and candidates: the quick start's own are the default's, which
# moved from LAHC with 20 candidates to the surrogate with 7 on these results.
LAHC20 = ['activations.sampler="lahc"', "activations.trials=20"]
METHODS = {
    "lahc": LAHC20,
    "lahc-halving": LAHC20 + ['activations.pruner="halving"'],
    "random-halving": ['activations.sampler="random"', "activations.trials=20", 'activations.pruner="halving"'],
    "lahc-third": ['activations.sampler="lahc"', "activations.trials=7"],
    "surrogate": ['activations.sampler="surrogate"', "activations.trials=20"],
    "surrogate-third": ['activations.sampler="surrogate"', "activations.trials=7"],
    "random-third": ['activations.sampler="random"', "activations.trials=7"],
    "surrogate-features-third": ['activations.sampler="surrogate"', "activations.trials=7",
                                 'activations.surrogate_features=["response_gain"]'],
}
COLOURS = {"lahc": "#1f77b4", "lahc-halving": "#d62728", "random-halving": "#2ca02c", "lahc-third": "#7f7f7f",
           "surrogate": "#9467bd", "surrogate-third": "#ff7f0e", "surrogate-features-third": "#8c564b",
           "random-third": "#17becf"}


def _run(workdir: Path, dataset: str, method: str, seed: int, overrides: list[str], device: str,
         extra: list[str] | None = None) -> dict:
    """One run of ``method`` (its settings ``METHODS[method]``, or ``extra`` for a method of
    another benchmark), read back when finished."""
    name = f"cost-{dataset}-{method}-s{seed}"
    db, done = workdir / f"{name}.db", workdir / f"{name}.json"
    if done.exists():  # finished: read back, not rerun
        return {**json.loads(done.read_text()), **_read(db, name)}
    sets = overrides + COMMON + (METHODS[method] if extra is None else extra) + [
        f"seed={seed}", f'name="{name}"', f'artifacts="{workdir / (name + ".artifacts")}"']
    cmd = [sys.executable, "-m", "safs_optuna.cli", "run", str(CONFIG), "--storage", f"sqlite:///{db}",
           "--threads", "1", "--device", device]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    start = time.time()
    with open(workdir / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {workdir / (name + '.log')}")
    result = {"dataset": dataset, "method": method, "seed": seed, "seconds": round(time.time() - start, 1),
              "best_val": _best_val(db, name)}
    done.write_text(json.dumps(result, indent=1))
    return {**result, **_read(db, name)}


def _best_val(db: Path, name: str) -> float | None:
    """The best validation accuracy among stage-1 candidates by the ranking rule (the winner's)."""
    import optuna

    from safs_optuna.ranking import trial_score

    study = optuna.load_study(study_name=f"{name}/activations", storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    best = max(trials, key=trial_score, default=None)
    return max(best.intermediate_values.values()) if best and best.intermediate_values else None


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _meets(method: str, epochs: list[int], gains: list[float], ref: float | None, ref_gains: list[float]) -> str:
    """The bar for a new default: at most a third of ``lahc``'s stage-1 epochs, and a stage-1 gain
    over magnitude pruning within one sd of ``lahc``'s (mean over the seeds)."""
    if method == "lahc" or not ref or len(ref_gains) < 2:
        return "—"
    third = statistics.mean(epochs) <= ref / 3
    kept = statistics.mean(gains) >= statistics.mean(ref_gains) - statistics.stdev(ref_gains)
    if third and kept:
        return "yes"
    return "no: " + " and ".join(why for why, bad in (("more than ⅓ of the epochs", not third),
                                                       ("gain below lahc's − 1 sd", not kept)) if bad)


def _rows(results: list[dict], dataset: str) -> tuple[list[str], list[Series], float]:
    rows = [r for r in results if r["dataset"] == dataset]
    today = [r["epochs_stage1"] for r in rows if r["method"] == "lahc"]
    ref = statistics.mean(today) if today else None
    lines = ["| method | seeds | stage-1 epochs | share of `lahc`'s epochs | best validation accuracy "
             "| magnitude pruning (test) | stage 1 (test) | stage 1 − magnitude pruning | meets the bar "
             "| wall time per run |",
             "|---" * 10 + "|"]
    ref_gains = [r["stage1"] - r["baseline"] for r in rows if r["method"] == "lahc"]
    series, top = [], max((r["epochs_stage1"] for r in rows), default=1)
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        epochs = [r["epochs_stage1"] for r in rs]
        gains = [r["stage1"] - r["baseline"] for r in rs]
        share = f"{statistics.mean(epochs) / ref:.2f}" if ref else "—"
        lines.append(f"| {method} | {len(rs)} | {fmt(epochs)} | {share} | {fmt([r['best_val'] for r in rs])} | "
                     f"{fmt([r['baseline'] for r in rs])} | {fmt([r['stage1'] for r in rs])} | {fmt(gains)} | "
                     f"{_meets(method, epochs, gains, ref, ref_gains)} | {fmt([r['seconds'] for r in rs])} s |")
        sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
        series.append(Series(method, COLOURS[method], [(statistics.mean(epochs) / top, statistics.mean(gains), sd)]))
    return lines, series, top


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_args.add_options(p, "stage1_cost", "quickstart,fashion_mnist", "activations.fraction=0.2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    workdir = bench_args.workdir(args)
    methods = bench_args.choices(p, args.methods, METHODS, "method")
    found, notes = bench_args.datasets(args)
    # Fashion-MNIST is searched on a 20 % subset, as the other benchmarks do.
    found = [(d, o + (["activations.fraction=0.2"] if d == "fashion_mnist" else [])) for d, o in found]
    jobs = [(d, m, s, o) for d, o in found for m in methods for s in bench_args.seeds(args)]
    print(f"{len(jobs)} runs, {args.jobs} at once; logs and databases in {workdir}", flush=True)

    def one(job: tuple) -> dict:
        r = _run(workdir, job[0], job[1], job[2], job[3], args.device)
        print(f"  {r['dataset']} {r['method']} seed {r['seed']}: {r['epochs_stage1']} stage-1 epochs, "
              f"baseline {r['baseline']}, stage 1 {r['stage1']} ({r['seconds']:.0f} s)", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, jobs))
    commit = bench_args.commit()
    for dataset, _ in found:
        lines, series, top = _rows(results, dataset)
        out = Path(args.out).with_name(f"stage1_cost_{dataset}.md")
        plot = bench_args.plot_path(out, dataset)
        svg = line_plot(series, [(i / 4, f"{top * i / 4:.0f}") for i in range(5)], "stage-1 epochs (mean)",
                        "stage 1 − magnitude pruning (test, points)", y_range=(-10.0, 30.0), y_step=10.0)
        plot.write_text(svg)
        head = [f"# Stage-1 cost on {dataset} (LeNet-5, 0.99 layer-wise)", "",
                f"`{bench_args.command('stage1_cost.py')}`", "",
                f"Budgets: `studies/quickstart.toml` with `{'`, `'.join(COMMON)}`"
                + (" and `activations.fraction=0.2`" if dataset == "fashion_mnist" else "")
                + f"; one worker with one torch thread per run ({bench_args.device_name(args.device) if args.device != 'cpu' else 'CPU'}). "
                "Test accuracy %, mean ± sd over seeds " + args.seeds + ". Stage-1 epochs count every "
                "candidate's epochs, the start trial's included. The bar for a new default: at most a third of "
                "`lahc`'s stage-1 epochs with a stage-1 gain within one sd of `lahc`'s. Wall time per run was "
                "measured beside other jobs on the same machine: the epochs are the measure of cost. Warm start "
                "(`[activations] warm_start`) needs an earlier search to start from, so `warm_start.py` measures it "
                "on two transfers ([warm_start.md](warm_start.md)).", "",
                f"![stage-1 cost]({plot.name})", ""]
        per_seed = ["", "| method | seed | stage-1 epochs | winner | best validation | baseline | stage 1 |",
                    "|---" * 7 + "|"]
        per_seed += [f"| {r['method']} | {r['seed']} | {r['epochs_stage1']} | {', '.join(r.get('winner', []))} | "
                     f"{_num(r['best_val'])} | {r['baseline']} | {r['stage1']} |" for r in results if r["dataset"] == dataset]
        tail = [""] + [f"- {n}" for n in notes] + [f"Code: commit {commit}."]
        out.write_text("\n".join(head + lines + per_seed + tail) + "\n")
        print("\n".join(head + lines))


if __name__ == "__main__":
    main()
