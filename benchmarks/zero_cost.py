"""Do zero-cost features rank stage-1 candidates the way training them does?

For each (dataset, seed): train the dense LeNet-5 of ``studies/quickstart.toml`` and prune it to
the config's sparsity, as the pipeline does; then take N candidates of the config's activation
space (the network's own activations first, then distinct random ones), measure every feature
of :mod:`safs_optuna.zero_cost` on one training batch of 256 images, and train each candidate
for ``--epochs`` epochs with the default protocol on the search's share of the training split
(``activations.fraction``; 0.2 on the full Fashion-MNIST, as the other benchmarks search it).
A candidate's **trained score** is the ranking rule's
(:mod:`safs_optuna.ranking`: best validation accuracy above the chance band, else the lowest
validation loss). Writes ``benchmarks/results/zero_cost.md``: per dataset, each feature's
Spearman ρ with the trained score (mean ± sd over seeds, and per seed), and whether it holds —
the same sign and |ρ| ≥ ``--hold`` in every seed of every dataset measured.

    python benchmarks/zero_cost.py --datasets quickstart,fashion_mnist --seeds 0,1,2

Each (dataset, seed) runs in its own process with one torch thread; every trained candidate is
appended to a file in ``--workdir`` at once, so an interrupted run goes on where it stopped and
a finished one is read back, not rerun. Needs scipy (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bench_args
from bench_args import fmt as _fmt

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "studies" / "quickstart.toml"
PROBE_SIZE = 256




def _candidates(space, own: dict, n: int, seed: int) -> list[dict]:
    """The own activations first, then distinct random candidates of ``space`` (by canonical key)."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    names = list(own)
    out, seen = [space.encode(own)], {space.canonical_key(space.encode(own))}
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        trial = study.ask()
        params = space.encode(space.suggest(trial, names))
        key = space.canonical_key(params)
        if key not in seen:
            seen.add(key)
            out.append(params)
    return out


def _one(workdir: str, dataset: str, seed: int, n: int, epochs: int, overrides: list[str]) -> dict:
    import copy

    import optuna
    import torch

    from safs_optuna import fit, sites
    from safs_optuna.config import load_config
    from safs_optuna.pipeline.resources import load_splits
    from safs_optuna.ranking import chance_band
    from safs_optuna.space import ActivationSpace
    from safs_optuna.training import DivergedError, majority_accuracy
    from safs_optuna.zero_cost import measure, probe_batch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(CONFIG, {**bench_args.config_overrides(overrides), "seed": seed})
    fraction = cfg.activations.fraction
    rows_path = Path(workdir) / f"zc-{dataset}-s{seed}-n{n}-e{epochs}-f{fraction:g}.jsonl"
    done = rows_path.with_suffix(".json")
    if done.exists():
        return json.loads(done.read_text())
    splits = load_splits(cfg)
    search = splits if fraction >= 1 else splits.search_subset(fraction, seed=seed)
    hp = cfg.protocol.hparams()
    start = time.time()
    sparse = bench_args.sparse_network(cfg, splits, seed)
    sp = cfg.sparsity
    own = {site: sparse.get_submodule(site).tree for site in sites(sparse)}
    space = ActivationSpace.preset(cfg.activations.preset)
    probe = probe_batch(search.train, PROBE_SIZE, seed)
    band = chance_band(majority_accuracy(search.val), len(search.val))
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()] if rows_path.exists() else []
    for i, params in enumerate(_candidates(space, own, n, seed)):
        if i < len(rows):
            continue
        model = copy.deepcopy(sparse)
        space.apply(model, space.decode(params))
        t = time.time()
        measured = measure(model, probe, hp)
        feature_s = time.time() - t
        try:
            history = fit(model, search, hp, epochs, seed=seed, progress=False).history
            accs, losses = [h.val_accuracy for h in history], [h.val_loss for h in history]
        except DivergedError:
            accs, losses = [], []
        row = {"params": params, "features": measured.values, "errors": measured.errors,
               "feature_seconds": round(feature_s, 3), "val_accuracy": accs, "val_loss": losses}
        rows.append(row)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{dataset} seed {seed} candidate {i + 1}/{n}: best val {max(accs) if accs else None} "
              f"({feature_s:.2f} s of features)", flush=True)
    out = {"dataset": dataset, "seed": seed, "n": n, "epochs": epochs, "fraction": fraction, "band": band,
           "sparsity": f"{sp.ratio} {sp.scope}", "preset": cfg.activations.preset, "rows": rows,
           "seconds": round(time.time() - start, 1)}
    done.write_text(json.dumps(out, indent=1))
    return out


def _score(row: dict, band: float) -> tuple[float, float]:
    from safs_optuna.ranking import curve_score

    return curve_score(row["val_accuracy"], row["val_loss"], band)


def spearman(a: list, b: list) -> float:
    """Spearman's ρ of two samples; ``b`` may hold tuples (scores), ranked lexicographically.
    NaN where either side is constant."""
    import warnings

    from scipy.stats import spearmanr

    order = {v: i for i, v in enumerate(sorted(set(b)))}  # ties stay ties, order is kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant side: NaN, said in the table
        return float(spearmanr(a, [order[v] for v in b]).statistic)


def rhos(run: dict) -> dict[str, float]:
    """Each feature's ρ with the trained score over the candidates that have it."""
    from safs_optuna.zero_cost import FEATURES

    out = {}
    for name in FEATURES:
        rows = [r for r in run["rows"] if name in r["features"]]
        if len(rows) >= 3:
            out[name] = spearman([r["features"][name] for r in rows], [_score(r, run["band"]) for r in rows])
    return out


def holding(runs: list[dict], threshold: float) -> dict[str, str]:
    """Per feature: its sign where it holds (the same sign, |ρ| ≥ threshold, every run), else ""."""
    from safs_optuna.zero_cost import FEATURES

    out = {}
    for name in FEATURES:
        values = [rhos(r).get(name, math.nan) for r in runs]
        ok = values and all(abs(v) >= threshold for v in values if not math.isnan(v)) and not any(
            math.isnan(v) for v in values)
        signs = {v > 0 for v in values if not math.isnan(v)}
        out[name] = ("+" if True in signs else "−") if ok and len(signs) == 1 else ""
    return out


def _summary(runs: list[dict], dataset: str, held: dict[str, str]) -> list[str]:
    from safs_optuna.zero_cost import FEATURES

    rs = [r for r in runs if r["dataset"] == dataset]
    if not rs:
        return []
    r0 = rs[0]
    left = [sum(max(x["val_accuracy"] or [0]) > r["band"] for x in r["rows"]) for r in rs]
    errors = sum(bool(x["errors"]) for r in rs for x in r["rows"])
    lines = [f"## {dataset}", "",
             f"{r0['n']} candidates per seed of the `{r0['preset']}` space (the own activations first), "
             f"sparsity {r0['sparsity']}, each trained {r0['epochs']} epochs on {100 * r0['fraction']:g} % of the "
             f"training split; seeds {','.join(str(r['seed']) for r in rs)}. Candidates that left the chance "
             f"band: {', '.join(str(x) for x in left)} of {r0['n']}. Candidates with a feature that failed: "
             f"{errors}.", "",
             "| feature | ρ with the trained score | " + " | ".join(f"seed {r['seed']}" for r in rs)
             + " | holds everywhere |", "|---" * (len(rs) + 3) + "|"]
    for name in FEATURES:
        values = [rhos(r).get(name, math.nan) for r in rs]
        lines.append(f"| {name} | {_fmt([v for v in values if not math.isnan(v)])} | "
                     + " | ".join("—" if math.isnan(v) else f"{v:+.2f}" for v in values)
                     + f" | {'yes (' + held[name] + ')' if held[name] else 'no'} |")
    feat_s = _fmt([x["feature_seconds"] for r in rs for x in r["rows"]])
    lines += ["", f"Features per candidate: {feat_s} s; wall time per seed (dense training, pruning, "
              f"{r0['n']} candidates measured and trained): {_fmt([r['seconds'] for r in rs])} s.", ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_args.add_options(p, "zero_cost", "quickstart,fashion_mnist", "activations.fraction=0.2")
    p.add_argument("--candidates", type=int, default=60, help="candidates per seed, the own activations included")
    p.add_argument("--epochs", type=int, default=4, help="epochs each candidate trains")
    p.add_argument("--hold", type=float, default=0.3,
                   help="|ρ| a feature needs in every seed of every dataset to count as holding")
    args = p.parse_args()
    workdir = bench_args.workdir(args)
    found, notes = bench_args.datasets(args)
    # The full Fashion-MNIST is searched on a 20 % subset, as in the other benchmarks.
    found = [(d, o + (["activations.fraction=0.2"] if d == "fashion_mnist" else [])) for d, o in found]
    jobs = [(str(workdir), dataset, s, args.candidates, args.epochs, overrides)
            for dataset, overrides in found for s in bench_args.seeds(args)]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(_one, *zip(*jobs)))
    held = holding(runs, args.hold)
    kept = [f"{k} ({v})" for k, v in held.items() if v]
    lines = ["# Zero-cost features against trained candidates", "",
             f"`{bench_args.command('zero_cost.py')}`", "",
             "Budgets: `studies/quickstart.toml` (LeNet-5, its dense training, the default protocol), one torch "
             "thread per seed, CPU." + (f" Overrides: {', '.join(args.set)}." if args.set else "")
             + f" A feature **holds** where its ρ has the same sign and |ρ| ≥ {args.hold:g} in every seed of "
             "every dataset below.", "",
             "Features that hold: " + (", ".join(kept) if kept else
                                       "**none** — no zero-cost feature ranks candidates reliably here, so the "
                                       "surrogate sampler uses none of them (it regresses on the operators alone)")
             + ".", ""]
    for dataset in dict.fromkeys(j[1] for j in jobs):
        lines += _summary(runs, dataset, held)
    commit = bench_args.commit()
    lines += [f"- {n}" for n in notes] + [f"Code: commit {commit}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
