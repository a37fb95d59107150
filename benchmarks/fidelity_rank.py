"""Does stage 2's search fidelity rank fine-tuning protocols the way the full fine-tune does?

For each (dataset, seed): train the dense LeNet-5 of ``studies/quickstart.toml``, prune it to
the config's sparsity, then fine-tune N protocols of the stage-2 space (the default protocol
first, then N - 1 drawn at random from ``[hpo.space]``, each with learned α/β and the network's
own activations, as the "stage 2 alone" ablation searches them) twice:

* **short**: ``--short-epochs`` epochs with the schedule spread over those epochs (how stage 2
  searched before: ``hpo.epochs = 2``), on ``--short-fraction`` of the training split;
* **subset** (only with a fraction below 1): ``[final] epochs`` and their schedule on that fraction;
* **full**: ``[final] epochs`` with the schedule spread over them, as the full fine-tune does.
  Its validation accuracy after the first k epochs is the **prefix** fidelity k: what a stage-2
  trial that trains the full schedule knows when a pruner looks at it after epoch k.

It reports, per dataset, the Spearman rank correlation of each fidelity's validation accuracy
with the full fine-tune's test accuracy (mean ± sd over seeds), and what picking the best
protocol at that fidelity gives on test against the default protocol (the baseline's).
Writes ``benchmarks/results/fidelity_rank.md``.

    python benchmarks/fidelity_rank.py --datasets quickstart,fashion_mnist --seeds 0,1,2 --jobs 2

Each (dataset, seed) runs in its own process with one torch thread; finished ones are read back
from ``--workdir``, not rerun. Needs scipy (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_args  # noqa: E402
from bench_args import fmt as _fmt  # noqa: E402

CONFIG = ROOT / "studies" / "quickstart.toml"


def _spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation, ties at their average rank."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _one(workdir: str, dataset: str, seed: int, n: int, short_epochs: int, short_fraction: float,
         overrides: list[str]) -> dict:
    done = Path(workdir) / f"fid-{dataset}-s{seed}-n{n}-e{short_epochs}-f{short_fraction:g}.json"
    if done.exists():
        return json.loads(done.read_text())
    import optuna
    import torch

    from safs_optuna import evaluate, fit, sites
    from safs_optuna.config import load_config
    from safs_optuna.pipeline.protocols import default_protocol_params, hparams_from_params, suggest_hparams
    from safs_optuna.pipeline.resources import load_splits
    from safs_optuna.space import ActivationSpace
    from safs_optuna.training import DivergedError

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(CONFIG, {**bench_args.config_overrides(overrides), "seed": seed})
    splits = load_splits(cfg)
    short_splits = splits if short_fraction >= 1 else splits.search_subset(short_fraction, seed=seed)
    base = cfg.protocol.hparams()
    start = time.time()
    sparse = bench_args.sparse_network(cfg, splits, seed)
    sp = cfg.sparsity
    own = {site: sparse.get_submodule(site).tree for site in sites(sparse)}
    space = ActivationSpace.preset(cfg.activations.preset)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    first = default_protocol_params(cfg.hpo.space, cfg.protocol, True)
    protocols = [(hparams_from_params(first, base)[0], first)]
    while len(protocols) < n:
        trial = study.ask()
        hp, _ = suggest_hparams(trial, cfg.hpo.space, base, learn_scale=True)
        protocols.append((hp, dict(trial.params)))

    def train(hp, data, epochs):
        model = copy.deepcopy(sparse)
        space.apply(model, own, learn_scale=True)
        try:
            result = fit(model, data, hp, epochs, seed=seed, progress=False)
        except DivergedError:
            return None, None
        return [h.val_accuracy for h in result.history], evaluate(model, splits.test).accuracy

    rows = []
    for i, (hp, params) in enumerate(protocols):
        short, _ = train(hp, short_splits, short_epochs)
        full, test = train(hp, splits, cfg.final.epochs)
        rows.append({"params": params, "short": max(short) if short else None, "full_curve": full, "test": test})
        if short_fraction < 1:  # the full schedule on the search's subset: a third fidelity
            rows[-1]["subset_curve"], _ = train(hp, short_splits, cfg.final.epochs)
        print(f"{dataset} seed {seed} protocol {i + 1}/{n}: short {rows[-1]['short']}, "
              f"full {max(full) if full else None}, test {test}", flush=True)
    out = {"dataset": dataset, "seed": seed, "n": n, "short_epochs": short_epochs, "short_fraction": short_fraction,
           "final_epochs": cfg.final.epochs, "sparsity": f"{sp.ratio} {sp.scope}", "rows": rows,
           "seconds": round(time.time() - start, 1)}
    done.write_text(json.dumps(out, indent=1))
    return out


def _fidelities(run: dict) -> dict[str, list[float]]:
    """Validation accuracy of every protocol at each fidelity; a diverged run scores -1 (last)."""
    rows = run["rows"]
    out = {f"short ({run['short_epochs']} ep, own schedule)": [r["short"] if r["short"] is not None else -1
                                                               for r in rows]}
    if "subset_curve" in rows[0]:
        e, f = run["final_epochs"], run["short_fraction"]
        for k in sorted({2, e}):
            out[f"prefix {k} of {e} ep on {f:g} of train"] = [max(r["subset_curve"][:k]) if r["subset_curve"]
                                                              else -1 for r in rows]
    for k in range(1, run["final_epochs"] + 1):
        out[f"prefix {k} of {run['final_epochs']} ep"] = [max(r["full_curve"][:k]) if r["full_curve"] else -1
                                                          for r in rows]
    return out


def _summary(runs: list[dict], dataset: str) -> list[str]:
    rs = [r for r in runs if r["dataset"] == dataset]
    if not rs:
        return []
    r0 = rs[0]
    lines = [f"## {dataset}", "",
             f"{r0['n']} protocols per seed (the default first), sparsity {r0['sparsity']}, seeds "
             f"{','.join(str(r['seed']) for r in rs)}; short fidelity on {r0['short_fraction']:g} of the training "
             "split. *ρ*: Spearman correlation with the full fine-tune's test accuracy. *pick − default*: test "
             "accuracy of the protocol with the best validation accuracy at that fidelity, minus the default "
             "protocol's (both after the full fine-tune). *pick diverged*: seeds where that protocol's full "
             "fine-tune ended at chance or diverged.", "",
             "| fidelity | ρ with full test | pick − default (test pp) | pick diverged |", "|---|---|---|---|"]
    names = list(_fidelities(r0))
    for name in names:
        rhos, gains, bad = [], [], 0
        for r in rs:
            test = [x["test"] if x["test"] is not None else 0.0 for x in r["rows"]]
            score = _fidelities(r)[name]
            rhos.append(_spearman(score, test))
            pick = int(np.argmax(score))  # first of ties: the default protocol wins a tie
            gains.append(test[pick] - test[0])
            chance = 100.0 / 10 + 2.0
            bad += test[pick] <= chance
        lines.append(f"| {name} | {_fmt(rhos)} | {_fmt(gains)} | {bad} of {len(rs)} |")
    secs = _fmt([r["seconds"] for r in rs])
    lines += ["", f"Default protocol's test accuracy: {_fmt([r['rows'][0]['test'] for r in rs])} %. "
              f"Wall time per seed: {secs} s.", ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_args.add_options(p, "fidelity_rank", "quickstart,fashion_mnist", 'sparsity.scope="lamp"')
    p.add_argument("--protocols", type=int, default=12, help="protocols per seed, the default included")
    p.add_argument("--short-epochs", type=int, default=2)
    p.add_argument("--short-fraction", type=float, default=1.0)
    args = p.parse_args()
    workdir = bench_args.workdir(args)
    found, notes = bench_args.datasets(args)
    jobs = [(str(workdir), dataset, s, args.protocols, args.short_epochs, args.short_fraction, overrides)
            for dataset, overrides in found for s in bench_args.seeds(args)]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(_one, *zip(*jobs)))
    lines = ["# Stage-2 search fidelity against the full fine-tune", "",
             f"`{bench_args.command('fidelity_rank.py')}`", "",
             "Budgets: `studies/quickstart.toml` (LeNet-5, its dense training and `[final] epochs`), one "
             "torch thread per seed, CPU." + (f" Overrides: {', '.join(args.set)}." if args.set else ""), ""]
    for dataset in dict.fromkeys(j[1] for j in jobs):
        lines += _summary(runs, dataset)
    lines += [f"- {n}" for n in notes]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
