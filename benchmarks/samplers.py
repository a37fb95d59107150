"""Does LAHC earn its place? Stage 1 with four samplers at the same candidates and epochs.

For each (dataset, sampler, seed) it runs the pipeline of ``studies/quickstart.toml`` (LeNet-5,
99 % of every layer's weights removed) up to the end of stage 1, with:

* ``lahc``: textbook late-acceptance hill climbing (``activations.lahc = "textbook"``, the default);
* ``lahc-paper-code``: the rules of the ``lahc`` package that the paper's code runs
  (``activations.lahc = "paper-code"``);
* ``random``: Optuna's random sampler;
* ``tpe``: Optuna's TPE sampler (multivariate, grouped, as the pipeline configures it).

Every sampler gets the same number of candidates (20) and the same epochs
per candidate (``--epochs``, fixed: "auto" measures them from the start trial, which differs
between samplers), and no pruner, so each candidate costs the same. The stage-1 winner is then
fine-tuned for ``[final] epochs`` with the default protocol and scored on the test split.

Writes ``benchmarks/results/samplers.md`` (best validation accuracy found after 5, 10, ... trials
and the winner's test accuracy, mean ± sd over seeds) and one SVG per dataset (best validation
accuracy found against trials).

    python benchmarks/samplers.py --datasets quickstart,fashion_mnist --seeds 0,1,2 --jobs 2 \\
        --set activations.fraction=0.2

Each run is one process with one torch thread and its own SQLite file under ``--workdir``
(finished runs are read back, not rerun).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_args  # noqa: E402
from bench_args import fmt as _fmt  # noqa: E402
from svg_plot import Series, line_plot  # noqa: E402

CONFIG = ROOT / "studies" / "quickstart.toml"
SAMPLERS = {
    "lahc": {"activations.sampler": "lahc", "activations.lahc": "textbook"},
    "lahc-paper-code": {"activations.sampler": "lahc", "activations.lahc": "paper-code"},
    "random": {"activations.sampler": "random"},
    "tpe": {"activations.sampler": "tpe"},
}
COLOURS = {"lahc": "#d62728", "lahc-paper-code": "#ff7f0e", "random": "#7f7f7f", "tpe": "#1f77b4"}


def _one(workdir: str, dataset: str, sampler: str, seed: int, epochs: int, overrides: list[str],
         finetune: bool) -> dict:
    name = f"smp-{dataset}-{sampler}-e{epochs}-s{seed}"
    done = Path(workdir) / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    import optuna
    import torch
    from optuna.trial import TrialState

    from safs_optuna import evaluate, fit
    from safs_optuna.config import load_config
    from safs_optuna.pipeline import Pipeline
    from safs_optuna.pipeline.bodies import trees
    from safs_optuna.pipeline.stages import stage

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = {**bench_args.config_overrides(overrides), **SAMPLERS[sampler], "seed": seed, "name": name,
                "storage": f"sqlite:///{Path(workdir) / (name + '.db')}",
                "artifacts": str(Path(workdir) / (name + ".artifacts")),
                "ablations": False, "activations.pruner": "none", "activations.epochs": epochs,
                "activations.trials": 20}
    cfg = load_config(CONFIG, settings)
    start = time.time()
    pipe = Pipeline(cfg, log=lambda msg: None)
    pipe.studies.prepare()
    idle_since = time.time()
    while not pipe.studies.status("activations").done:
        _, progressed = pipe.step()
        if progressed:
            idle_since = time.time()
        elif time.time() - idle_since > 1800:
            raise RuntimeError(f"{name}: no stage made progress for 30 minutes")
        else:  # another process runs this study's last trials (two invocations on one run)
            time.sleep(2)
    trials = sorted(pipe.studies.study("activations").get_trials(deepcopy=False), key=lambda t: t.number)
    vals = [t.value if t.state == TrialState.COMPLETE else None for t in trials]
    # The winner by the pipeline's own rule (the chance band, then validation loss), fine-tuned.
    s1 = stage("stage1")
    test = None
    if finetune:
        model = pipe.res.fresh(trees(pipe, s1))
        fit(model, pipe.res.splits, cfg.protocol.hparams(), cfg.final.epochs, seed=seed, progress=False)
        test = evaluate(model, pipe.res.splits.test).accuracy
    baseline = pipe.studies.status("baseline").best_trial.user_attrs["test_accuracy"]
    out = {"dataset": dataset, "sampler": sampler, "seed": seed, "epochs": epochs, "values": vals,
           "winner": sorted(set(t.formula for t in trees(pipe, s1).values())), "test": test,
           "baseline": baseline, "seconds": round(time.time() - start, 1)}
    done.write_text(json.dumps(out, indent=1))
    print(f"{dataset} {sampler} seed {seed}: best val {max(v for v in vals if v is not None):.2f}, "
          f"winner test {test} (baseline {baseline:.2f}), {out['seconds']:.0f} s", flush=True)
    return out


def _best_so_far(values: list[float | None]) -> list[float]:
    out, best = [], 0.0
    for v in values:
        best = max(best, v if v is not None else 0.0)
        out.append(best)
    return out


def _table(runs: list[dict], dataset: str) -> list[str]:
    rs = [r for r in runs if r["dataset"] == dataset]
    n = min(len(r["values"]) for r in rs)
    marks = sorted({m for m in (1, 5, 10, 15, 20, 30, 40, n) if m <= n})
    tested = any(r["test"] is not None for r in rs)
    lines = [f"## {dataset}", "",
             f"{n} candidates per run, {rs[0]['epochs']} epochs each, no pruner; best validation accuracy "
             "found after k candidates (the first is the network's own ReLU for the samplers that start "
             "there), then " + ("the stage-1 winner fine-tuned with the default protocol (test %)" if tested
                                  else "no fine-tune of the winner (`--no-finetune`)") + ". Mean ± sd over "
             f"seeds {','.join(sorted({str(r['seed']) for r in rs}))}.", "",
             "| sampler | " + " | ".join(f"best val after {m}" for m in marks) + " | winner test | baseline test "
             "| winner ≠ ReLU | wall time per run |", "|---" * (len(marks) + 5) + "|"]
    for sampler in SAMPLERS:
        ss = [r for r in rs if r["sampler"] == sampler]
        if not ss:
            continue
        cells = [_fmt([_best_so_far(r["values"])[m - 1] for r in ss]) for m in marks]
        not_relu = sum(1 for r in ss if r["winner"] != ["relu(x)"])
        lines.append(f"| {sampler} | " + " | ".join(cells) + f" | {_fmt([r['test'] for r in ss])} | "
                     f"{_fmt([r['baseline'] for r in ss])} | {not_relu} of {len(ss)} | "
                     f"{_fmt([r['seconds'] for r in ss])} s |")
    return lines + [""]


def _svg(runs: list[dict], dataset: str) -> str:
    rs = [r for r in runs if r["dataset"] == dataset]
    n = min(len(r["values"]) for r in rs)
    series = []
    for sampler in SAMPLERS:
        curves = [_best_so_far(r["values"])[:n] for r in rs if r["sampler"] == sampler]
        if not curves:
            continue
        points = [((k - 1) / max(n - 1, 1), statistics.mean(c[k - 1] for c in curves),
                   statistics.stdev(c[k - 1] for c in curves) if len(curves) > 1 else 0.0)
                  for k in range(1, n + 1)]
        series.append(Series(sampler, COLOURS[sampler], points))
    vals = [m for s in series for _, m, _ in s.points]
    lo = max(0.0, 10 * (min(vals) // 10) - 10)
    hi = min(100.0, 10 * (max(vals) // 10) + 10)
    ticks = [((k - 1) / max(n - 1, 1), str(k)) for k in range(1, n + 1) if k == 1 or k % 5 == 0]
    return line_plot(series, ticks, "candidates evaluated", "best validation accuracy found %", (lo, hi), 10.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_args.add_options(p, "samplers", "quickstart,fashion_mnist", "activations.fraction=0.2")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--epochs", type=int, default=3, help="epochs per candidate, the same for every sampler")
    p.add_argument("--no-finetune", action="store_true",
                   help="skip the winner's full fine-tune (its test column reads —); saves its epochs")
    args = p.parse_args()
    samplers = bench_args.choices(p, args.samplers, SAMPLERS, "sampler")
    workdir = bench_args.workdir(args)
    found, notes = bench_args.datasets(args)
    jobs = [(str(workdir), dataset, s, seed, args.epochs, overrides, not args.no_finetune)
            for dataset, overrides in found for seed in bench_args.seeds(args) for s in samplers]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(_one, *zip(*jobs)))
    out = Path(args.out)
    lines = ["# Stage-1 samplers at the same budget", "", f"`{bench_args.command('samplers.py')}`",
             "", "Budgets: `studies/quickstart.toml` (LeNet-5 at 0.99 layer-wise; dense and fine-tune epochs as "
             "there), one torch thread per run, CPU." + (f" Overrides: {', '.join(args.set)}." if args.set else ""),
             ""]
    for dataset in dict.fromkeys(j[1] for j in jobs):
        lines += _table(runs, dataset)
        svg = bench_args.plot_path(out, dataset)
        svg.write_text(_svg(runs, dataset))
        lines += [f"![best validation accuracy against candidates, {dataset}]({svg.name})", ""]
    lines += [f"- {n}" for n in notes]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
