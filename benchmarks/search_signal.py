"""Does stage 1 find activations that rescue a 99 %-sparse LeNet-5, on more than one dataset?

Runs the whole pipeline of ``studies/quickstart.toml`` (LeNet-5, 99 % of every layer's weights
removed, the quick start's budgets) once per (dataset, variant, seed) and writes
``benchmarks/results/search_signal.md``: per dataset and variant, the test accuracy of the
baseline ("magnitude pruning"), stage 1, stage 2, SAFS and ReLU fine-tuned for as many training
images as stages 1 and 2 spent together ("ReLU, same compute") as mean ± sd over the seeds, how many
stage-1 candidates left chance level, the stage-1 epochs spent, and in how many seeds the
stage-1 winner differs from the network's own activation (ReLU).

Variants:

* ``before``: the search as it was before candidates were compared by their learning curves:
  2 epochs per candidate and a pruner that stops any candidate at chance level for 2 epochs. It
  runs the package and ``studies/quickstart.toml`` of another checkout (``--before-checkout``,
  e.g. a ``git worktree`` of the commit before that change) when given, else today's package
  with those settings.
* ``safs``, ``compact``, ``core``: today's defaults ("auto" epochs, the incumbent-relative
  pruner) with that activation-space preset (``safs``: unary only, the paper's; ``compact`` and
  ``core``: binary trees) — the same budgets and seeds, so the presets compare fairly.

Datasets: ``quickstart`` (embedded) and ``fashion_mnist`` (the full set from Debian's
``dataset-fashion-mnist`` package, found where it installs; skipped with a note when missing;
``--fashion-mnist-dir`` points at a folder of its IDX files instead).

Examples:

    python benchmarks/search_signal.py --datasets quickstart --variants safs --seeds 0,1,2 --jobs 2
    git worktree add /tmp/safs-before c542d4d
    python benchmarks/search_signal.py --before-checkout /tmp/safs-before --jobs 16

Each run is one ``safs-optuna run`` with one worker and one torch thread into its own SQLite
file under ``--workdir`` (reused: finished runs are read, not rerun).
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
from bench_args import fmt as _fmt

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "studies" / "quickstart.toml"
STAGES = ("dense", "baseline", "stage1", "stage2", "final", "baseline-long")
HEADERS = ("dense", "magnitude pruning", "stage 1", "stage 2", "SAFS", "ReLU, same compute")
# Every variant also fine-tunes ReLU for as many images as stages 1 and 2 trained ("baseline-long").
SAME_COMPUTE = ["baseline_long=true"]
BEFORE_SETTINGS = ["activations.epochs=2", 'activations.pruner="divergence"', 'activations.preset="safs"',
                   "hpo.space.learn_scale=[true, false]", 'hpo.pruner="divergence+hyperband"']
VARIANTS = {
    "before": [],  # the earlier checkout's own studies/quickstart.toml, else these settings:
    "safs": ['activations.preset="safs"'],
    "compact": ['activations.preset="compact"'],
    "core": ['activations.preset="core"'],
}


def _run(workdir: Path, dataset: str, variant: str, seed: int, overrides: list[str],
         before: str | None, device: str) -> dict:
    name = f"sig-{dataset}-{variant}-s{seed}"
    db = workdir / f"{name}.db"
    done = workdir / f"{name}.json"
    if done.exists():  # finished: its numbers are read again from its storage
        kept = json.loads(done.read_text())
        return {**kept, **_read(db, name)} if db.exists() else kept
    config = CONFIG
    extra = VARIANTS[variant]
    if variant == "before":
        old = Path(before) / "studies" / "quickstart.toml" if before else None
        config, extra = (old, []) if old is not None and old.exists() else (CONFIG, BEFORE_SETTINGS)
    if config == CONFIG:  # an earlier checkout's config may not know the key
        extra = extra + SAME_COMPUTE
    sets = overrides + extra + [f"seed={seed}", f'name="{name}"', f'artifacts="{workdir / (name + ".artifacts")}"']
    cmd = [sys.executable, "-m", "safs_optuna.cli", "run", str(config), "--storage", f"sqlite:///{db}",
           "--threads", "1", "--device", device]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    code = before if (variant == "before" and before) else str(ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p)
    start = time.time()
    with open(workdir / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=code)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {workdir / (name + '.log')}")
    result = _read(db, name)
    result.update(dataset=dataset, variant=variant, seed=seed, seconds=round(time.time() - start, 1),
                  code="checkout " + code if code != str(ROOT) else "this checkout")
    done.write_text(json.dumps(result, indent=1))
    return result


def _read(db: Path, name: str) -> dict:
    """The numbers of one finished run, read from its storage with plain Optuna."""
    import optuna
    from optuna.trial import TrialState

    sys.path.insert(0, str(ROOT))
    from safs_optuna.ranking import chance_band

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{db}"
    out: dict = {}
    for stage in STAGES:
        try:
            study = optuna.load_study(study_name=f"{name}/{stage}", storage=url)
        except KeyError:  # a run made before the stage existed, or without it
            out[stage] = None
            continue
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        out[stage] = done[-1].user_attrs.get("test_accuracy") if done else None
        if stage == "baseline-long" and done:
            out["epochs_same_compute"] = done[-1].user_attrs.get("epochs")
        if stage == "stage1" and done:
            formulas = set(done[-1].user_attrs.get("formulas", {}).values())
            out["winner"] = sorted(formulas)
    study = optuna.load_study(study_name=f"{name}/activations", storage=url)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    first = min(trials, key=lambda t: t.number)
    chance = float(first.user_attrs.get("chance_accuracy", 10.0))
    # Validation images: recorded by newer code; the quick-start config holds out 10 %.
    n_val = int(first.user_attrs.get("val_size", 0)) or None
    band = chance_band(chance, n_val or 1000)
    out["candidates"] = len(trials) - 1
    out["left_chance"] = sum(1 for t in trials if t.number != first.number
                             and any(v > band for v in t.intermediate_values.values()))
    out["pruned"] = sum(1 for t in trials if t.state == TrialState.PRUNED)
    out["epochs_stage1"] = sum(len(t.intermediate_values) for t in trials)
    out["epochs_per_candidate"] = study.user_attrs.get("epochs")
    # Stage 2's epochs (the pruner stops protocols early) and the protocols stopped within 2.
    for stage in ("hpo", "hpo-relu"):
        curves = [len(t.intermediate_values) for t in
                  optuna.load_study(study_name=f"{name}/{stage}", storage=url).get_trials(deepcopy=False)]
        out[f"epochs_{stage}"] = sum(curves)
        out[f"stopped_{stage}"] = sum(1 for n in curves if n <= 2)
        out[f"protocols_{stage}"] = len(curves)
    return out


def _budget() -> str:
    """The quick start's budgets in words, read from its config."""
    sys.path.insert(0, str(ROOT))
    from safs_optuna.config import load_config

    c = load_config(CONFIG)
    hpo = "the fine-tune's epochs" if c.hpo.epochs == "final" else f"{c.hpo.epochs} epochs"
    return (f"dense {c.dense.epochs} epochs; {c.activations.trials} stage-1 candidates × {c.activations.epochs} "
            f"epochs; {c.hpo.trials} + {c.hpo.trials} stage-2 trials × {hpo}; {c.final.epochs}-epoch fine-tunes")


def _same(r: dict) -> str:
    if r.get("baseline-long") is None:
        return "—"
    return f"{r['baseline-long']} ({r.get('epochs_same_compute')})"


def _stopped(r: dict) -> str:
    if "stopped_hpo" not in r:
        return "—"
    return (f"{r['stopped_hpo'] + r['stopped_hpo-relu']} of "
            f"{r['protocols_hpo'] + r['protocols_hpo-relu']}")


def _table(results: list[dict], dataset: str) -> list[str]:
    rows = [r for r in results if r["dataset"] == dataset]
    lines = ["| variant | seeds | " + " | ".join(HEADERS) + " | stage 1 − baseline | candidates left chance "
             "| stage-1 epochs | ReLU's same-compute epochs | winner ≠ ReLU | wall time per run |",
             "|---" * (len(HEADERS) + 8) + "|"]
    for variant in VARIANTS:
        rs = [r for r in rows if r["variant"] == variant]
        if not rs:
            continue
        cells = [_fmt([r[s] for r in rs]) for s in STAGES]
        gains = _fmt([(r["stage1"] - r["baseline"]) if r["stage1"] is not None and r["baseline"] is not None
                      else None for r in rs])
        left = _fmt([r["left_chance"] for r in rs]) + f" of {rs[0]['candidates']}"
        epochs = _fmt([r["epochs_stage1"] for r in rs])
        same = _fmt([r.get("epochs_same_compute") for r in rs])
        not_relu = sum(1 for r in rs if r.get("winner") and r["winner"] != ["relu(x)"])
        secs = _fmt([r["seconds"] for r in rs])
        lines.append(f"| {variant} | {len(rs)} | " + " | ".join(cells) +
                     f" | {gains} | {left} | {epochs} | {same} | {not_relu} of {len(rs)} | {secs} s |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_args.add_options(p, "search_signal", "quickstart,fashion_mnist", "activations.fraction=0.2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--before-checkout", help="a checkout of the code before the change, for 'before'")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    workdir = bench_args.workdir(args)  # absolute: runs start in other folders (the earlier checkout's)
    seeds = bench_args.seeds(args)
    variants = bench_args.choices(p, args.variants, VARIANTS, "variant")
    found, notes = bench_args.datasets(args)
    jobs = [(dataset, v, s, overrides) for dataset, overrides in found for v in variants for s in seeds]
    print(f"{len(jobs)} runs, {args.jobs} at once; logs and databases in {workdir}")
    start = time.time()

    def one(job: tuple) -> dict:
        dataset, variant, seed, overrides = job
        r = _run(workdir, dataset, variant, seed, overrides, args.before_checkout, args.device)
        print(f"  {dataset} {variant} seed {seed}: baseline {r['baseline']}, stage 1 {r['stage1']}, "
              f"SAFS {r['final']}, {r['left_chance']}/{r['candidates']} left chance, "
              f"{r['epochs_stage1']} stage-1 epochs ({r['seconds']:.0f}s)", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, jobs))
    lines = ["# Search signal at 99 % sparsity (LeNet-5, layer-wise)", "",
             f"`python benchmarks/search_signal.py --datasets {args.datasets} --variants {args.variants} "
             f"--seeds {args.seeds}" + "".join(f" --set {x}" for x in args.set) + "`" + (" --before-checkout <checkout of the earlier code>" if args.before_checkout
                                          else ""), "",
             f"Budgets: `studies/quickstart.toml` ({_budget()}), one worker with one torch thread per run, "
             f"device {args.device}" + "".join(f", `--set {x}`" for x in args.set) +
             f". Test accuracy %, mean ± sd over seeds {args.seeds}.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        lines += [f"## {dataset}", ""] + _table(results, dataset) + [""]
    lines += ["## Per seed", "", "| dataset | variant | seed | dense | baseline | stage 1 | stage 2 | SAFS | ReLU, "
              "same compute (epochs) | stage-1 winner | left chance | stage-1 epochs | epochs per candidate | "
              "stage-2 epochs (hpo, hpo-relu) | stage-2 protocols stopped within 2 epochs | code |", "|---" * 16 + "|"]
    for r in results:
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['seed']} | {r['dense']} | {r['baseline']} | {r['stage1']} | "
                     f"{r['stage2']} | {r['final']} | {_same(r)} | {', '.join(r.get('winner', []))} | {r['left_chance']}/"
                     f"{r['candidates']} | {r['epochs_stage1']} | {r['epochs_per_candidate'] or 2} | "
                     f"{r.get('epochs_hpo', '—')}, {r.get('epochs_hpo-relu', '—')} | "
                     f"{_stopped(r)} | {r['code']} |")
    commit = bench_args.commit()
    lines += [""] + [f"- {n}" for n in notes] + [
        f"Code: commit {commit} of this checkout" + (f"; `before` ran `{args.before_checkout}`" if args.before_checkout
                                                     else "") + ". "
        f"This invocation took {time.time() - start:.0f} s (finished runs are read back from their storage)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
