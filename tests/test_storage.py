"""storage.py: SQLite tuned for many workers, heartbeats with retries, URL helpers."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    ArtifactStoreError,
    NoStudyError,
    StorageError,
    check_storage,
    check_url,
    make_artifact_store,
    make_storage,
    read_failure,
    redact,
    sqlite_path,
    stale_trial_callback,
    staging,
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
    assert not db.exists()
    storage = make_storage(url)
    assert db.parent.is_dir() and db.exists()
    # WAL is a property of the file: a fresh connection (another process) sees it too.
    assert _journal_mode(db).lower() == "wal"
    assert storage.get_heartbeat_interval() == HEARTBEAT_INTERVAL
    assert storage.grace_period == GRACE_PERIOD
    assert stale_trial_callback(storage) is not None
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


def test_in_memory_sqlite_works_and_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = make_storage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage)
    for x in (0.25, 0.5):
        study.tell(study.ask(), x)
    assert [t.value for t in study.trials] == [0.25, 0.5]
    assert list(tmp_path.iterdir()) == []


def test_artifact_store_creates_its_folder_with_the_first_upload(tmp_path):
    folder = tmp_path / "deep" / "artifacts"
    store = make_artifact_store(folder)
    assert not (tmp_path / "deep").exists()  # a run that stops before storing anything leaves none
    src = tmp_path / "f.txt"
    src.write_text("hello")
    storage = make_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage)
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(src),
                                                   study_or_trial=study)
    assert folder.is_dir()
    with store.open_reader(artifact_id) as f:
        assert f.read() == b"hello"


# --------------------------------------------------------------------------- artifact failures
def _upload(store, tmp_path: Path, content: bytes = b"weights" * 1000) -> str:
    src = tmp_path / "upload.pt"
    src.write_bytes(content)
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'art.db'}"), study_name="s",
                                load_if_exists=True)
    return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(src), study_or_trial=study)


def _one_line(exc: BaseException, *names: str) -> str:
    message = str(exc)
    assert "\n" not in message and message.startswith("artifact store "), message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    return message


def test_a_vanished_artifact_folder_is_recreated_once(tmp_path, caplog):
    folder = tmp_path / "arts"
    store = make_artifact_store(folder)
    _upload(store, tmp_path)
    assert not caplog.records  # the first upload makes the folder: nothing to say
    shutil.rmtree(folder)
    artifact_id = _upload(store, tmp_path)
    with store.open_reader(artifact_id) as f:
        assert f.read() == b"weights" * 1000
    (record,) = caplog.records  # the files stored before are gone: the run says so once
    assert str(folder) in record.getMessage() and "re-created" in record.getMessage()


def test_a_folder_removed_while_a_file_is_written_is_written_again(tmp_path, monkeypatch):
    folder = tmp_path / "arts"
    store = make_artifact_store(folder)
    _upload(store, tmp_path)
    real = shutil.copyfileobj
    removals = []

    def copy_then_vanish(src, dst, *args):  # the folder goes while the file is open
        real(src, dst, *args)
        if not removals:
            removals.append(dst.name)
            shutil.rmtree(folder)

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_vanish)
    artifact_id = _upload(store, tmp_path)
    assert removals and (folder / artifact_id).read_bytes() == b"weights" * 1000


def test_an_artifact_folder_that_keeps_vanishing_stops_in_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "arts"
    store = make_artifact_store(folder)
    _upload(store, tmp_path)
    real = shutil.copyfileobj

    def copy_then_vanish(src, dst, *args):
        real(src, dst, *args)
        shutil.rmtree(folder)

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_vanish)
    with pytest.raises(ArtifactStoreError) as err:
        _upload(store, tmp_path)
    _one_line(err.value, str(folder), "vanished again after it was re-created", "run the same command again")


def test_an_artifact_folder_whose_parent_vanished_is_not_recreated(tmp_path):
    folder = tmp_path / "mnt" / "arts"
    store = make_artifact_store(folder)
    _upload(store, tmp_path)
    shutil.rmtree(tmp_path / "mnt")  # an unmounted drive: nothing may land below its mount point
    with pytest.raises(ArtifactStoreError) as err:
        _upload(store, tmp_path)
    _one_line(err.value, str(folder), "parent", "no longer mounted")
    assert not (tmp_path / "mnt").exists()
    with pytest.raises(ArtifactStoreError) as err:  # reading names the cause, not a fix
        store.open_reader("x")
    assert "gone" in _one_line(err.value, str(folder))


def test_an_artifact_folder_replaced_by_a_file_stops_in_one_line(tmp_path):
    folder = tmp_path / "arts"
    store = make_artifact_store(folder)
    _upload(store, tmp_path)
    shutil.rmtree(folder)
    folder.write_text("not a folder")
    with pytest.raises(ArtifactStoreError) as err:
        _upload(store, tmp_path)
    _one_line(err.value, str(folder), "is a file, not a folder")


def test_a_full_disk_is_not_retried_and_leaves_no_partial_file(tmp_path, monkeypatch):
    folder = tmp_path / "arts"
    store = make_artifact_store(folder)
    _upload(store, tmp_path)
    calls = []

    def half_then_full(src, dst, *args):
        calls.append(dst.name)
        dst.write(src.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", half_then_full)
    with pytest.raises(ArtifactStoreError) as err:
        _upload(store, tmp_path)
    _one_line(err.value, str(folder), "no space left", "free some space")
    assert len(calls) == 1
    assert len(list(folder.iterdir())) == 1  # the first upload only: the cut-off file is gone


def test_a_full_temporary_disk_before_the_upload_is_one_line(tmp_path, monkeypatch):
    store = make_artifact_store(tmp_path / "arts")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
    with pytest.raises(ArtifactStoreError) as err:  # how torch.save reports a full disk
        with staging(store, "dense.pt", tmp_path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    _one_line(err.value, "dense.pt", "no space left", str(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10**9))
    with pytest.raises(RuntimeError, match="a bug"):  # with space left, the error is not a full disk
        with staging(store, "dense.pt", tmp_path):
            raise RuntimeError("a bug")


def test_a_missing_artifact_in_a_present_folder_stays_not_found(tmp_path):
    store = make_artifact_store(tmp_path / "arts")
    _upload(store, tmp_path)
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.open_reader("no-such-artifact")
    assert read_failure(optuna.artifacts.exceptions.ArtifactNotFound("not found")) == "the file is missing"


# --------------------------------------------------------------------------- Optuna versions
def test_retry_callback_class_matches_optuna(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'x.db'}", max_retry=2)
    expected = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    callback = stale_trial_callback(storage)
    assert type(callback) is expected and callback._max_retry == 2


# --------------------------------------------------------------------------- damaged storage
def _study_file(path: Path) -> bytes:
    """The bytes of a SQLite file holding one study with a few trials (journal folded in)."""
    storage = make_storage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name="s")
    for _ in range(20):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    storage.engine.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "header only", "truncated", "torn page"])
def test_damaged_sqlite_file_is_one_clear_error(tmp_path, damage):
    good = _study_file(tmp_path / "good.db")
    bad = tmp_path / "bad.db"
    if damage == "garbage":
        bad.write_bytes(b"not a database at all\n" * 200)
    elif damage == "header only":
        bad.write_bytes(good[:50])
    elif damage == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    else:
        torn = bytearray(good)
        torn[len(torn) // 2 : len(torn) // 2 + 2048] = os.urandom(2048)
        bad.write_bytes(bytes(torn))
    url = f"sqlite:///{bad}"
    # Opening reads only the schema; a damaged page elsewhere needs the full check.
    opens = [] if damage == "torn page" else [make_storage, lambda u: make_storage(u, create=False)]
    for call in (check_storage, *opens):
        with pytest.raises(StorageError) as err:
            call(url)
        message = str(err.value)
        assert str(bad) in message and "\n" not in message
        assert "move the damaged one away" in message or "not a SQLite database" in message
    check_storage(f"sqlite:///{tmp_path / 'good.db'}")  # the healthy file passes


def test_a_folder_or_a_file_in_the_way_is_one_clear_error(tmp_path):
    folder = tmp_path / "x.db"
    folder.mkdir()
    with pytest.raises(StorageError, match="is a folder"):
        check_storage(f"sqlite:///{folder}")
    with pytest.raises(StorageError, match="is a folder"):
        make_storage(f"sqlite:///{folder}")
    blocker = tmp_path / "file"
    blocker.write_text("")
    for call in (check_storage, make_storage):
        with pytest.raises(StorageError, match="is not a folder") as err:
            call(f"sqlite:///{blocker / 'sub' / 'x.db'}")
        assert str(blocker) in str(err.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        for call in (check_storage, make_storage):
            with pytest.raises(StorageError, match="not writable"):
                call(f"sqlite:///{folder / 'x.db'}")
    finally:
        folder.chmod(0o700)


def test_missing_storage_passes_the_check_and_writes_nothing(tmp_path):
    check_storage(f"sqlite:///{tmp_path / 'new' / 'x.db'}")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- read-only opens
@pytest.mark.parametrize("state", ["missing", "empty", "foreign tables"])
def test_read_only_open_never_writes_a_schema(tmp_path, state):
    path = tmp_path / "sub" / "x.db"
    if state != "missing":
        path.parent.mkdir()
        path.write_bytes(b"")
    if state == "foreign tables":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE notes (x)")
        con.commit()
        con.close()
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(NoStudyError) as err:
        make_storage(f"sqlite:///{path}", create=False)
    assert str(err.value) == f"no study at {path}; run `safs-optuna run CONFIG` first"
    assert (path.read_bytes() if path.exists() else None) == before
    assert path.parent.exists() == (state != "missing")


def test_read_only_open_of_a_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(storage=make_storage(url), study_name="s")
    assert [s.study_name for s in optuna.get_all_study_summaries(make_storage(url, create=False))] == ["s"]
    with pytest.raises(NoStudyError):
        make_storage("sqlite:///:memory:", create=False)


# --------------------------------------------------------------------------- malformed server URLs
@pytest.mark.parametrize("url, why", [
    ("postgresql://u:Secret1@host:abc/db", "port"),
    ("postgresql://u:Secret1@host:99999/db", "out of range"),
    ("postgresql://u:Secret1@host:0/db", "port 0"),
    ("postgresql://u:Secret1@[::1/db", "IPv6"),
    ("postgresql://u:Secret1@::1]:5432/db", "IPv6"),
])
def test_malformed_server_url_is_one_clear_line(url, why):
    for call in (check_url, check_storage, make_storage):
        with pytest.raises(StorageError) as err:
            call(url)
        message = str(err.value)
        assert message.startswith("malformed storage URL") and why in message
        assert "\n" not in message and "Secret1" not in message
    assert "Secret1" not in redact(url)


def test_well_formed_server_urls_pass_the_check():
    for url in ("postgresql://u:p@host:5432/db", "postgresql://u:p@[::1]:5432/db",
                "postgresql+psycopg2://u@host/db?sslmode=require", "sqlite:///x.db"):
        check_url(url)


def test_a_study_made_by_plain_optuna_is_switched_to_wal(tmp_path):
    path = tmp_path / "plain.db"
    optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    assert _journal_mode(path).lower() == "delete"
    make_storage(f"sqlite:///{path}", create=False)  # a read-only command leaves the file as it is
    assert _journal_mode(path).lower() == "delete"
    make_storage(f"sqlite:///{path}")
    assert _journal_mode(path).lower() == "wal"
