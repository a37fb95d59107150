"""Attacks across processes: workers opening a new database together, a worker killed between
claiming a trial and its first heartbeat.

The child processes are forked where the platform allows it (fast: nothing to import again).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna import storage as storage_mod
from safs_optuna.storage import fail_unbeating_trials, make_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]

WORKERS = 8
_CTX = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _open(url: str, barrier, results) -> None:
    barrier.wait()  # every process opens the new file at the same moment
    try:
        storage = make_storage(url)
        optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
        results.put("ok")
    except Exception as exc:  # the parent reports what went wrong
        results.put(f"{type(exc).__name__}: {exc}")


def _open_together(url: str) -> list[str]:
    barrier, results = _CTX.Barrier(WORKERS), _CTX.Queue()
    procs = [_CTX.Process(target=_open, args=(url, barrier, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return outcomes


@pytest.mark.slow  # the first opens take turns: several seconds on a busy machine
def test_workers_started_together_on_a_new_sqlite_file_all_open_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    outcomes = _open_together(url)
    assert outcomes == ["ok"] * WORKERS, [o for o in outcomes if o != "ok"]
    assert [s.study_name for s in optuna.get_all_study_summaries(make_storage(url))] == ["s"]


@pytest.mark.skipif(_CTX.get_start_method() != "fork", reason="the patched lock must reach the children")
def test_retries_alone_survive_the_schema_race(tmp_path, monkeypatch):
    # Where no file lock exists (Windows) the retries are the only guard.
    monkeypatch.setattr(storage_mod, "_sqlite_open_lock", lambda path: contextlib.nullcontext())
    outcomes = _open_together(f"sqlite:///{tmp_path / 'new.db'}")
    assert outcomes == ["ok"] * WORKERS, [o for o in outcomes if o != "ok"]


@pytest.mark.slow
def test_workers_started_together_on_a_new_postgres_database_all_open_it(postgres_server):
    url = postgres_server.new_database()
    outcomes = _open_together(url)
    assert outcomes == ["ok"] * WORKERS, [o for o in outcomes if o != "ok"]


def _claim_and_die(url: str) -> None:
    study = optuna.load_study(study_name="s", storage=make_storage(url, heartbeat_interval=1,
                                                                     grace_period=1))
    study.ask()  # WAITING -> RUNNING, and the process ends before any heartbeat
    os._exit(0)


def test_trial_claimed_by_a_worker_killed_before_its_first_heartbeat_is_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    study = optuna.create_study(storage=make_storage(url, heartbeat_interval=1, grace_period=1),
                                study_name="s")
    study.enqueue_trial({"x": 0.5})
    child = _CTX.Process(target=_claim_and_die, args=(url,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    assert fail_unbeating_trials(study) == []  # not yet past the grace period

    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)  # Optuna's own check: no heartbeat, never stale
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    failed = fail_unbeating_trials(study)
    trials = study.get_trials()
    assert failed == [trials[0]._trial_id]
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].system_attrs.get("failed_trial") == trials[0].number
    assert trials[1].system_attrs.get("fixed_params") == {"x": 0.5}
    assert fail_unbeating_trials(study) == []  # the retry is WAITING, not RUNNING


def test_a_trial_with_a_heartbeat_is_left_to_optuna(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(1.5)
    storage.record_heartbeat(trial._trial_id)  # alive, though it started long ago
    assert fail_unbeating_trials(study) == []
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]


def test_storages_without_heartbeats_are_left_alone(tmp_path):
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'x.db'}",
                                                     heartbeat_interval=None))
    study.ask()
    assert fail_unbeating_trials(study, grace_period=0) == []
    assert fail_unbeating_trials(optuna.create_study()) == []  # in-memory storage


@pytest.mark.slow
def test_a_database_damaged_during_a_run_fails_the_run_with_one_line_per_process(tmp_path):
    import sqlite3
    import subprocess
    import sys

    from ._tiny import write_config

    path = write_config(tmp_path, trials=6)
    db = tmp_path / "tiny.db"
    run = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", "run", str(path), "--workers", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def working() -> bool:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0] > 0
            finally:
                con.close()
        except sqlite3.Error:
            return False

    deadline = time.time() + 300
    while run.poll() is None and time.time() < deadline and not working():
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before a trial started"
    for part in (db, db.with_name(db.name + "-wal")):  # everything after the headers
        if part.exists():
            with open(part, "r+b") as f:
                f.seek(100 if part == db else 32)
                f.write(os.urandom(max(part.stat().st_size - f.tell(), 0)))
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "finished in" not in out, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("safs-optuna:")]
    assert lines[-1].startswith("safs-optuna: every worker stopped with an error"), lines
    assert all(f"{db} is damaged" in line or "not a SQLite database" in line for line in lines[:-1]), lines


CHOICES = ["relu", "tanh", "gelu", "elu", "selu", "swish"]


def _lahc_worker(url: str, barrier, trials: int) -> None:
    from safs_optuna.samplers import LAHCSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="s", storage=make_storage(url), sampler=LAHCSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        params = [trial.suggest_categorical(f"s{i}.left", CHOICES) for i in range(4)]
        time.sleep(0.01)
        return float(sum(CHOICES.index(p) for p in params))

    barrier.wait()
    study.optimize(objective, n_trials=trials)


@pytest.mark.slow
def test_lahc_proposes_no_repeats_to_eight_processes_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'lahc.db'}"
    optuna.create_study(study_name="s", storage=make_storage(url), direction="maximize")
    barrier = _CTX.Barrier(WORKERS)
    procs = [_CTX.Process(target=_lahc_worker, args=(url, barrier, 15)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert len(trials) == 15 * WORKERS and all(t.state == TrialState.COMPLETE for t in trials)
    configs = [tuple(sorted(t.params.items())) for t in trials]
    repeats = len(configs) - len(set(configs))
    assert repeats == 0, f"{repeats} of {len(configs)} configurations repeat an earlier one"
