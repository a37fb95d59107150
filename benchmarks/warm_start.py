"""Does a search that starts from earlier winners find as good a winner for less?

``[activations] warm_start`` queues the winners of earlier searches right after the start point.
This measures it on two transfers, 3 seeds each, with the stage-1 budget cut to a third (7
candidates, ``lahc-third`` of ``stage1_cost.py``), cold against warm:

* **0.99 → 0.995**: the quick start's stage-1 winner at 0.99 layer-wise (the ``lahc`` run of
  ``stage1_cost.py``, same seed) queued for the same network and data at 0.995;
* **quick start → Fashion-MNIST**: the same winner queued for the full Fashion-MNIST at 0.99
  (searched on a 20 % subset); its cold run is ``stage1_cost.py``'s ``lahc-third``.

Per transfer and start: the stage-1 epochs, the stage-1 gain over magnitude pruning (test
points, after the default fine-tune) and in how many seeds the queued winner won the search
again. Writes ``benchmarks/results/warm_start.md``.

    python benchmarks/warm_start.py --seeds 0,1,2

Runs are ``stage1_cost.py``'s (one ``safs-optuna run`` each, one worker, one torch thread) in
``--workdir``, shared with it: finished ones are read back, not rerun.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_args
from bench_args import fmt
from stage1_cost import METHODS, _run

THIRD = METHODS["lahc-third"]
TRANSFERS = {
    # name: (target dataset in run names, the dataset's overrides, the cold run's method)
    "0.99 → 0.995": ("quickstart0.995", ['data.name="quickstart"', "sparsity.ratio=0.995"], "lahc-third"),
    "quick start → Fashion-MNIST": ("fashion_mnist", None, "lahc-third"),
}


def _formulas(workdir: Path, name: str) -> dict[str, str]:
    """The activation of every site that run ``name``'s stage-1 column trained with."""
    import optuna

    study = optuna.load_study(study_name=f"{name}/stage1", storage=f"sqlite:///{workdir / (name + '.db')}")
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    return dict(done[-1].user_attrs["formulas"])


def _winners(workdir: Path, seed: int) -> Path:
    """The quick start's stage-1 winner at 0.99 (its ``lahc`` run) as a file of site formulas."""
    path = workdir / f"winners-quickstart-s{seed}.json"
    path.write_text(json.dumps(_formulas(workdir, f"cost-quickstart-lahc-s{seed}"), indent=1))
    return path


def _transfer(workdir: Path, transfer: str, seed: int, fmnist_dir: str | None, device: str) -> list[dict]:
    _run(workdir, "quickstart", "lahc", seed, ['data.name="quickstart"'], device)  # the source
    winners = _winners(workdir, seed)
    dataset, overrides, cold = TRANSFERS[transfer]
    if overrides is None:
        label, found = bench_args.dataset_overrides("fashion_mnist", fmnist_dir)
        if found is None:
            return []
        overrides = found + ["activations.fraction=0.2"]
    warm = THIRD + [f'activations.warm_start=["{winners}"]']
    queued = json.loads(winners.read_text())
    out = []
    for start, extra in (("cold", None), ("warm", warm)):
        method = cold if start == "cold" else "lahc-third-warm"
        r = _run(workdir, dataset, method, seed, overrides, device, extra)
        won = _formulas(workdir, f"cost-{dataset}-{method}-s{seed}") == queued
        out.append({**r, "transfer": transfer, "start": start, "won_again": won})
        print(f"  {transfer} {start} seed {seed}: {r['epochs_stage1']} stage-1 epochs, baseline "
              f"{r['baseline']}, stage 1 {r['stage1']}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_args.add_options(p, "warm_start", "quickstart,fashion_mnist")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    workdir = bench_args.workdir(args)
    jobs = [(t, s) for t in TRANSFERS for s in bench_args.seeds(args)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = [r for rs in pool.map(lambda j: _transfer(workdir, j[0], j[1], args.fashion_mnist_dir, args.device),
                                     jobs) for r in rs]
    lines = ["# Warm start on a transfer", "", f"`{bench_args.command('warm_start.py')}`", "",
             "Budgets: `studies/quickstart.toml` with `activations.preset=\"safs\"`, `hpo.trials=1`, "
             "`activations.sampler=\"lahc\"` and `activations.trials=7` (a third of the 20 candidates LAHC had as the "
             "default before the surrogate with 7 took over); Fashion-MNIST searched on a 20 % "
             "subset; one worker with one torch thread per run, CPU. *warm*: the quick start's stage-1 winner at "
             "0.99 (same seed) queued after the start point. Test accuracy %, mean ± sd over seeds "
             f"{args.seeds}.", "",
             "| transfer | start | seeds | stage-1 epochs | magnitude pruning (test) | stage 1 (test) | "
             "stage 1 − magnitude pruning | queued winner won again |", "|---" * 8 + "|"]
    for transfer in TRANSFERS:
        for start in ("cold", "warm"):
            rs = [r for r in runs if r["transfer"] == transfer and r["start"] == start]
            if not rs:
                continue
            lines.append(f"| {transfer} | {start} | {len(rs)} | {fmt([r['epochs_stage1'] for r in rs])} | "
                         f"{fmt([r['baseline'] for r in rs])} | {fmt([r['stage1'] for r in rs])} | "
                         f"{fmt([r['stage1'] - r['baseline'] for r in rs])} | "
                         + (f"{sum(r['won_again'] for r in rs)} of {len(rs)}" if start == "warm" else "—") + " |")
    lines += ["", "| transfer | start | seed | winner | baseline | stage 1 |", "|---" * 6 + "|"]
    lines += [f"| {r['transfer']} | {r['start']} | {r['seed']} | {', '.join(r.get('winner', []))} | {r['baseline']} "
              f"| {r['stage1']} |" for r in runs]
    lines += ["", f"Code: commit {bench_args.commit()}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
