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
