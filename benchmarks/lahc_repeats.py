"""Repeated configurations when many processes run one LAHC study at once.

N processes (default 8) each run ``--trials`` trials of a 4-site, 6-choice LAHC study on one
SQLite file (through ``safs_optuna.storage.make_storage``); a trial sleeps ``--sleep`` seconds.
Prints how many of the finished configurations repeat an earlier one. Without the sampler's
claim of each proposal in the storage, two workers that proposed at the same moment could both
evaluate the same configuration (6-8 of 240 trials here); with it, none do.

    python benchmarks/lahc_repeats.py --processes 8 --trials 30 --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna

CHOICES = ["relu", "tanh", "gelu", "elu", "selu", "swish"]


def worker(url: str, n: int, sleep: float) -> None:
    from safs_optuna.samplers import LAHCSampler
    from safs_optuna.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="repeats", storage=make_storage(url), sampler=LAHCSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        params = [trial.suggest_categorical(f"s{i}.left", CHOICES) for i in range(4)]
        time.sleep(sleep)
        return float(sum(CHOICES.index(p) for p in params))

    study.optimize(objective, n_trials=n)


def one_round(processes: int, trials: int, sleep: float) -> tuple[int, int]:
    from safs_optuna.storage import make_storage

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'repeats.db'}"
        optuna.create_study(study_name="repeats", storage=make_storage(url), direction="maximize")
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(url, trials, sleep)) for _ in range(processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        done = [t for t in optuna.load_study(study_name="repeats", storage=url).trials
                if t.state != optuna.trial.TrialState.FAIL]
        counts = Counter(tuple(sorted(t.params.items())) for t in done)
        return len(done), sum(c - 1 for c in counts.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--trials", type=int, default=30, help="trials per process")
    ap.add_argument("--sleep", type=float, default=0.02)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for r in range(args.rounds):
        n, repeats = one_round(args.processes, args.trials, args.sleep)
        print(f"round {r + 1}: {n} trials, {repeats} repeated configurations", flush=True)


if __name__ == "__main__":
    main()
