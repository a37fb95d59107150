"""SAFS on networks it was not written for: torchvision's ResNet-18 and MobileNetV3-Small.

Runs the whole pipeline (``safs-optuna run``) with ``[model] name = "torchvision:<name>"`` on the
quick-start data (1 channel, 28 px: the stem takes one channel, see docs/own_network.md) at 99 % sparsity
with the LAMP allocation, once per (model, seed), and writes
``benchmarks/results/own_network.md``: the dense network, the magnitude-pruning baseline (the
network's own ReLU/Hardswish with the default protocol) and SAFS, as test accuracy mean ± sd over
the seeds, with the epochs each run trained and its wall time.

    python benchmarks/own_network.py --models resnet18,mobilenet_v3_small --seeds 0,1,2 --jobs 2

Budgets (stated in the results file): the quick start's config with fewer search trials and the
search on a 20 % subset, as the other benchmarks run Fashion-MNIST; ``--set`` changes any of it.
Each run is one worker with one torch thread into its own SQLite file under ``--workdir``;
finished runs are read back, not rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_args
from bench_args import fmt

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "studies" / "quickstart.toml"
MODELS = ("resnet18", "mobilenet_v3_small")
BUDGET = ['sparsity.scope="lamp"', "sparsity.ratio=0.99", "ablations=false", "dense.epochs=4", "final.epochs=4",
          "activations.trials=10", "activations.fraction=0.2", "hpo.trials=5", "hpo.fraction=0.2"]
STAGES = ("dense", "baseline", "final")


def _run(workdir: Path, model: str, seed: int, overrides: list[str]) -> dict:
    name = f"own-{model}-s{seed}"
    db, done = workdir / f"{name}.db", workdir / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    sets = [f'model.name="torchvision:{model}"', *BUDGET, *overrides, f"seed={seed}", f'name="{name}"',
            f'artifacts="{workdir / (name + ".artifacts")}"']
    cmd = [sys.executable, "-m", "safs_optuna.cli", "run", str(CONFIG), "--storage", f"sqlite:///{db}",
           "--threads", "1", "--verbose"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    start = time.time()
    with open(workdir / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {workdir / (name + '.log')}")
    result = {**_read(db, name), "model": model, "seed": seed, "seconds": round(time.time() - start, 1)}
    done.write_text(json.dumps(result, indent=1))
    return result


def _read(db: Path, name: str) -> dict:
    """Test accuracies, the stage-1 winner and the epochs trained, read with plain Optuna."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{db}"
    out: dict = {}
    epochs = 0.0
    for stage in ("dense", "sparse", "baseline", "activations", "hpo", "final"):
        trials = optuna.load_study(study_name=f"{name}/{stage}", storage=url).get_trials(deepcopy=False)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        if stage in STAGES:
            out[stage] = done[-1].user_attrs.get("test_accuracy") if done else None
            epochs += done[-1].user_attrs.get("epochs", 0) if done else 0
        if stage in ("activations", "hpo"):  # search trials train on the 20 % subset
            epochs += 0.2 * sum(len(t.intermediate_values) for t in trials)
        if stage == "activations" and done:
            best = max(done, key=lambda t: t.value)
            out["winner"] = sorted(set(best.params.values()))
    out["epochs"] = round(epochs, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_args.add_options(p, "own_network", "quickstart", "activations.trials=20")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--finished-only", action="store_true",
                   help="write the table from the runs already finished in --workdir; start none")
    args = p.parse_args()
    workdir = bench_args.workdir(args)
    models = bench_args.choices(p, args.models, MODELS, "model")
    jobs = [(m, s) for m in models for s in bench_args.seeds(args)]
    planned = len(jobs)
    if args.finished_only:
        jobs = [(m, s) for m, s in jobs if (workdir / f"own-{m}-s{s}.json").exists()]
    print(f"{len(jobs)} runs, {args.jobs} at once; logs and databases in {workdir}", flush=True)
    start = time.time()

    def one(job: tuple[str, int]) -> dict:
        r = _run(workdir, *job, args.set)
        print(f"  {r['model']} seed {r['seed']}: dense {r['dense']}, baseline {r['baseline']}, SAFS {r['final']} "
              f"({r['epochs']} epochs, {r['seconds']:.0f} s)", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, jobs))
    missing = [f"{m} seed {s}" for m in models for s in bench_args.seeds(args) if (m, s) not in jobs]
    lines = ["# SAFS on torchvision networks (quick-start data, 99 % sparsity, LAMP)", "",
             f"`{bench_args.command('own_network.py')}`", "",
             f"Budgets: `studies/quickstart.toml` with `{' '.join(BUDGET + args.set)}`; one worker with one "
             f"torch thread per run, CPU. Test accuracy %, mean ± sd over seeds {args.seeds}. Epochs count "
             "full-data epochs (a search epoch on the 20 % subset counts 0.2).", "",
             *([f"Not finished ({len(jobs)} of {planned} runs): {', '.join(missing)}; rerun the command "
                "without --finished-only to complete them (finished runs are read back).", ""] if missing else []),
             "| model | seeds | dense | magnitude pruning (own activations) | SAFS | SAFS − baseline "
             "| epochs per run | wall time per run |", "|---" * 8 + "|"]
    for model in models:
        rs = [r for r in results if r["model"] == model]
        if not rs:
            continue
        gain = fmt([r["final"] - r["baseline"] if None not in (r["final"], r["baseline"]) else None for r in rs])
        lines.append(f"| torchvision:{model} | {len(rs)} | {fmt([r['dense'] for r in rs])} | "
                     f"{fmt([r['baseline'] for r in rs])} | {fmt([r['final'] for r in rs])} | {gain} | "
                     f"{fmt([r['epochs'] for r in rs])} | {fmt([r['seconds'] for r in rs])} s |")
    lines += ["", "| model | seed | dense | baseline | SAFS | stage-1 winner's operators | epochs |", "|---" * 7 + "|"]
    lines += [f"| {r['model']} | {r['seed']} | {r['dense']} | {r['baseline']} | {r['final']} | "
              f"{', '.join(r.get('winner', []))} | {r['epochs']} |" for r in results]
    commit = bench_args.commit()
    lines += ["", f"Code: commit {commit}. This invocation took {time.time() - start:.0f} s "
                  "(finished runs are read back from their storage)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
