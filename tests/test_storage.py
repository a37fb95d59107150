"""storage.py: SQLite tuned for many workers, heartbeats with retries, URL helpers."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    make_artifact_store,
    make_storage,
    redact,
    sqlite_path,
    storage_exists,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              # study.ask on a heartbeat storage: these tests stand in for a worker on purpose.
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]


def _journal_mode(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()


def test_sqlite_storage_is_wal_in_a_created_folder_with_heartbeats(tmp_path):
    db = tmp_path / "a" / "b" / "x.db"
    url = f"sqlite:///{db}"
    assert not storage_exists(url)
    storage = make_storage(url)
    assert db.parent.is_dir() and db.exists()
    assert storage_exists(url)
    # WAL is a property of the file: a fresh connection (another process) sees it too.
    assert _journal_mode(db).lower() == "wal"
    assert storage.get_heartbeat_interval() == HEARTBEAT_INTERVAL
    assert storage.grace_period == GRACE_PERIOD
    assert storage.get_heartbeat_stale_trial_callback() is not None
    # The storage works: a study made through it is found again through a second storage.
    optuna.create_study(storage=storage, study_name="s")
    again = make_storage(url, heartbeat_interval=7)
    assert again.get_heartbeat_interval() == 7
    assert [s.study_name for s in optuna.get_all_study_summaries(again)] == ["s"]


def test_stale_running_trial_is_failed_and_requeued(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="hb")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)
    optuna.storages.fail_stale_trials(study)  # fresh heartbeat: nothing happens
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]

    time.sleep(2.5)  # the worker "died": no heartbeat for longer than the grace period
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    # The retry re-evaluates the same parameters and says which trial it retries.
    assert trials[1].params == trials[0].params
    assert trials[1].system_attrs.get("failed_trial") == trials[0].number


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql+psycopg2://u:p%40ss@h/db?sslmode=require",
         "postgresql+psycopg2://u:***@h/db?sslmode=require"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:///studies/x.db", "sqlite:///studies/x.db"),
    ],
)
def test_redact_hides_passwords(url, shown):
    assert redact(url) == shown


def test_redact_hides_a_password_that_also_appears_elsewhere():
    out = redact("mysql://db:db@db/db")
    assert out == "mysql://db:***@db/db"


def test_sqlite_path():
    assert sqlite_path("sqlite:///studies/x.db") == Path("studies/x.db")
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql://u@h/db") is None


# The config accepts driver options such as "?timeout=30"; they must not become a file name.
def test_sqlite_path_ignores_the_query_string(tmp_path, monkeypatch):
    assert sqlite_path("sqlite:///studies/x.db?timeout=30") == Path("studies/x.db")
    monkeypatch.chdir(tmp_path)
    make_storage("sqlite:///x.db?timeout=30")
    assert {p.name for p in tmp_path.iterdir()} <= {"x.db", "x.db-wal", "x.db-shm"}
    assert _journal_mode(tmp_path / "x.db").lower() == "wal"


def test_storage_exists_for_non_file_urls():
    # Servers and in-memory databases cannot be checked without connecting: assume they exist.
    assert storage_exists("postgresql://u@h/db")
    assert storage_exists("sqlite:///:memory:")


def test_in_memory_sqlite_works_and_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = make_storage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage)
    for x in (0.25, 0.5):
        study.tell(study.ask(), x)
    assert [t.value for t in study.trials] == [0.25, 0.5]
    assert list(tmp_path.iterdir()) == []


def test_artifact_store_creates_its_folder(tmp_path):
    folder = tmp_path / "deep" / "artifacts"
    store = make_artifact_store(folder)
    assert folder.is_dir()
    src = tmp_path / "f.txt"
    src.write_text("hello")
    storage = make_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage)
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(src),
                                                   study_or_trial=study)
    with store.open_reader(artifact_id) as f:
        assert f.read() == b"hello"
