"""Storage URLs and artifact stores — the one place that builds Optuna storage objects.

SQLite is tuned for several worker processes writing to one file: the database is switched to
WAL journaling (readers never block the writer; the mode is stored in the file, so it is set
once) and every connection waits up to ``busy_timeout`` seconds for the write lock instead of
failing with "database is locked". Every storage records Optuna heartbeats, so a trial whose
worker died (kill -9, a lost machine) is marked failed after ``grace_period`` seconds and
re-queued (up to ``max_retry`` times) by Optuna's retry callback
(``RetryHeartbeatStaleTrialCallback`` from Optuna 4.9, ``RetryFailedTrialCallback`` before). A trial whose worker died before its first
heartbeat has no heartbeat at all, which Optuna never treats as stale:
:func:`fail_unbeating_trials` fails and re-queues those.

Workers started together on a new database all create its schema at once; the first open is
therefore serialised (a lock on the SQLite file) and retried when another process won the race
(any backend). Commands that only read a study open it with ``create=False``, which never writes
a schema into an empty or missing database; :func:`check_storage` tells a damaged SQLite file
from a healthy one in one line.

Every call of an opened storage waits out an outage (a restarted server, SQLite locked beyond the
busy timeout) for up to ``storage_retry_seconds`` (:mod:`safs_optuna.storage_retry`).

PostgreSQL (``postgresql://user:password@host/db``) works unchanged; it needs a driver, installed
with the ``postgres`` extra (``pip install 'safs-optuna[postgres]'``, psycopg2). A plain
``postgresql://`` URL uses SQLAlchemy's default driver when it is installed (psycopg 3 from
SQLAlchemy 2.1 on, psycopg2 before) and otherwise whichever of the two is; a URL that names its
driver (``postgresql+psycopg://``) gets exactly that one. A missing driver is a
:class:`StorageError` that says what to install.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import errno
import importlib
import inspect
import logging
import os
import random
import re
import shutil
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit, urlunsplit

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from .storage_retry import NETWORK_ERRNOS, RETRY_SECONDS, RetryingRDBStorage, call_with_retry, outage_for

HEARTBEAT_INTERVAL = 5
GRACE_PERIOD = 20
MAX_RETRY = 3
BUSY_TIMEOUT = 60.0
# Opens that lose a schema-creation race to another process are retried this many times.
OPEN_ATTEMPTS = 6

# Optuna 4.9 renamed the retry callback and the RDBStorage argument that takes it.
_RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or getattr(
    optuna.storages, "RetryFailedTrialCallback"
)
_CALLBACK_ARG = (
    "heartbeat_stale_trial_callback"
    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
    else "failed_trial_callback"
)


class StorageError(RuntimeError):
    """A storage URL that cannot be opened; the message says why and what to do."""


class NoStudyError(StorageError):
    """A read-only command found no study stored at the URL."""


def _is_file(path: str) -> bool:
    """Whether the path part of a SQLite URL names a file (not memory, not a ``file:`` URI)."""
    return path not in ("", ":memory:") and not path.startswith("file:")


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or ``None`` for other URLs (and in-memory)."""
    if not url.startswith("sqlite:"):
        return None
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    path = path.partition("?")[0]  # driver options such as ?timeout=30 are not part of the file
    return Path(path) if _is_file(path) else None


def resolve_sqlite_url(url: str, base_dir: str | os.PathLike[str]) -> str:
    """A ``sqlite[+driver]://`` URL with its file made absolute against ``base_dir``.

    ``sqlite:///relative.db`` names a file relative to ``base_dir`` (a config's folder, so that
    every worker finds the same file), ``sqlite:////absolute.db`` an absolute one; ``~`` is
    expanded and ``..`` normalised. In-memory URLs (``sqlite://``, ``sqlite:///:memory:``),
    ``file:`` URIs and the query (``?timeout=30``) are kept as given.

    Raises:
        StorageError: The URL has two slashes before a file name (``sqlite://x.db``), which
            SQLAlchemy would read as a host.
    """
    scheme, _, rest = url.partition("://")
    if rest == "":
        return url  # "sqlite://" is an in-memory database
    if not rest.startswith("/"):
        raise StorageError(f"{url!r} is not a SQLite URL: write sqlite:///relative/path.db "
                           "or sqlite:////absolute/path.db")
    file, sep, query = rest[1:].partition("?")
    if not _is_file(file):
        return url
    path = os.path.abspath(Path(base_dir) / Path(file).expanduser())
    return f"{scheme}:///{path}{sep}{query}"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:  # malformed (e.g. an unclosed IPv6 bracket): hide whatever looks like one
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> None:
    """Raise :class:`StorageError` in one line when a server URL's host or port is malformed.

    SQLAlchemy and the drivers report these as a bare ``ValueError`` from deep inside (or a
    multi-line driver error); users need the URL and the expected shape.
    """
    if url.startswith("sqlite:"):
        return
    shape = ("expected dialect://user:password@host:port/database, port 1-65535, "
             "an IPv6 host in brackets ([::1])")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a non-number or out of 0..65535
    except ValueError as exc:
        raise StorageError(f"malformed storage URL {redact(url)}: {exc}; {shape}") from None
    if port == 0:
        raise StorageError(f"malformed storage URL {redact(url)}: port 0; {shape}")
    try:
        make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise StorageError(f"malformed storage URL {redact(url)}: {exc}; {shape}") from None


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_sqlite_file(path: Path, *, thorough: bool, writable: bool = True) -> None:
    """Raise :class:`StorageError` when ``path`` cannot hold a healthy SQLite database.

    A missing file is fine when its folder can be created and written; an existing one must
    be a SQLite file, and with ``thorough`` pass ``PRAGMA quick_check`` (reads every page).
    """
    fix = "point the config's storage at a new file, or move the damaged one away"
    if path.is_dir():
        raise StorageError(f"storage {path} is a folder, not a SQLite file; {fix}")
    if not path.exists():
        parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if parent is None or not parent.is_dir():
            raise StorageError(f"cannot create storage {path}: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StorageError(f"cannot create storage {path}: folder {parent} is not writable; "
                               "choose a storage path in a folder you can write")
        return
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise StorageError(f"cannot read storage {path}: {exc.strerror}; {fix}") from None
    if not head:
        return  # an empty file is an empty database
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise StorageError(f"storage {path} is not a SQLite database (damaged or another kind "
                           f"of file); {fix}")
    if writable and not os.access(path, os.W_OK):
        raise StorageError(f"storage {path} is not writable; fix its permissions or copy it")
    if not thorough:
        return
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"storage {path} is damaged ({exc}); {fix}") from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise StorageError(f"storage {path} is damaged ({problems[0]}; {len(problems)} problem(s) "
                           f"found by PRAGMA quick_check); {fix}")


def check_storage(url: str) -> None:
    """Raise :class:`StorageError` with a one-line reason when ``url`` cannot be used.

    Server URLs are checked for a malformed host or port; SQLite files for being a folder, a
    missing or unwritable folder, another kind of file, or a damaged database (``PRAGMA
    quick_check``). A missing SQLite file in a writable folder passes: it will be created.
    """
    check_url(url)
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path, thorough=True)


@contextlib.contextmanager
def _sqlite_open_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the database file while the schema is set up.

    Separate from SQLite's own (POSIX, byte-range) locks, which it does not disturb; it makes
    the first opens of a new file by several processes take turns. Without ``fcntl``
    (Windows) the retries in :func:`make_storage` are the only guard.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "ab") as f:  # creates the (empty) database file
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare_sqlite(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


# Messages of the errors a process gets when another one creates the same schema at the same
# moment (SQLite; PostgreSQL; MySQL), and of a database busy past the timeout.
_RACE = re.compile(r"already exists|UNIQUE constraint failed|duplicate key value|Duplicate entry|"
                   r"database is locked|could not serialize|deadlock detected", re.IGNORECASE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# What to install for a missing driver module; other modules get a generic hint.
_DRIVER_HINTS = {
    "psycopg2": "pip install 'safs-optuna[postgres]'",
    "psycopg": "pip install 'psycopg[binary]'",
    "pg8000": "pip install pg8000",
}
# Drivers a plain postgresql:// URL may fall back to when SQLAlchemy's default one is missing.
_POSTGRES_DRIVERS = ("psycopg2", "psycopg")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _check_driver(url: str) -> str:
    """The URL to open: ``url``, or a plain ``postgresql://`` URL with an installed driver named.

    Raises :class:`StorageError` naming the package to install when the database driver of
    ``url`` is missing or unknown. Malformed URLs are left for :class:`RDBStorage` to report.
    """
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return url
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return url
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(
            f"{redact(url)}: SQLAlchemy has no driver {parsed.get_driver_name()!r} for {backend}"
        ) from None
    load = getattr(dialect, "import_dbapi", None) or dialect.dbapi  # SQLAlchemy 2 / 1.4
    try:
        load()
        return url
    except ImportError as exc:
        if exc.name is None:  # installed but broken, e.g. psycopg without its libpq
            raise StorageError(
                f"{redact(url)}: cannot load the {backend} driver {dialect.driver!r}: {exc}"
            ) from None
        missing = exc.name
    scheme = urlsplit(url).scheme
    if scheme == "postgresql":  # no driver named: any installed one will do
        for driver in _POSTGRES_DRIVERS:
            if _importable(driver):
                return f"{url[: len(scheme)]}+{driver}{url[len(scheme):]}"
        missing = "psycopg2"  # what the postgres extra installs
    hint = _DRIVER_HINTS.get(missing, f"install the Python package that provides {missing!r}")
    raise StorageError(
        f"{redact(url)} needs the {backend} driver {missing!r}, which is not installed: {hint}"
    )


def make_storage(
    url: str,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    grace_period: int | None = GRACE_PERIOD,
    max_retry: int = MAX_RETRY,
    create: bool = True,
    retry_seconds: float = RETRY_SECONDS,
) -> optuna.storages.RDBStorage:
    """Open (creating if needed) the RDB storage at ``url`` with heartbeats and retries on.

    Several processes may open a new database at the same moment: one creates the schema, the
    others wait for it (SQLite) or retry (servers).

    Args:
        url: SQLAlchemy database URL.
        heartbeat_interval: Seconds between a running trial's heartbeats; ``None`` turns them off.
        grace_period: Seconds without heartbeat after which a running trial is failed.
        max_retry: How often a failed (stale) trial is re-queued.
        create: ``False`` for commands that only look at a study: raise :class:`NoStudyError`
            instead of writing a schema into an empty or missing database.
        retry_seconds: How long each call waits out a lost connection (a restarted server, SQLite
            locked beyond the busy timeout) before it raises; 0 raises at once. The storage must
            be reachable when it is opened: a URL that cannot be opened fails at once.

    Example:

        .. code::

            storage = make_storage("sqlite:///studies/x.db")
            study = optuna.create_study(storage=storage, study_name="x", load_if_exists=True)
    """
    check_url(url)
    db_url = _check_driver(url)  # messages name the user's URL, not the driver it resolved to
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        if not create and (not path.is_file() or path.stat().st_size == 0):
            raise NoStudyError(_no_study(url))
        _check_sqlite_file(path, thorough=False, writable=create)
        # isolation_level=None: the driver stops issuing its own deferred BEGIN, so that
        # _serialize_sqlite can begin every transaction itself (see there).
        engine_kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT, "isolation_level": None}
    elif url.startswith("sqlite:"):
        # An in-memory database lives in one connection: the heartbeat thread's own
        # connection would see none of its tables, and nothing outlives the process anyway.
        heartbeat_interval = grace_period = None  # type: ignore[assignment]
    else:
        # Long-lived workers outlive idle server connections; check them before use.
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():  # "experimental" before Optuna 4.9; we rely on it
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = _RetryCallback(max_retry=max_retry) if heartbeat_interval else None
    kwargs: dict[str, Any] = {
        "engine_kwargs": engine_kwargs,
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        _CALLBACK_ARG: retry,
    }
    if path is not None:
        if not create and not _has_schema_sqlite(path):
            raise NoStudyError(_no_study(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        # A complete schema needs no lock; a new file is set up by one process at a time.
        ready = _schema_complete_sqlite(path)
        with contextlib.nullcontext() if ready else _sqlite_open_lock(path):
            if create and not _is_wal(path):
                # Switching to WAL needs the file to itself, and SQLite gives up at once
                # (no busy wait) while another process is setting the file up.
                _retry_race(url, lambda: _prepare_sqlite(path))
            try:
                storage = _open_rdb(url, db_url, kwargs, retry_seconds)
            except StorageError:
                _check_sqlite_file(path, thorough=True)  # damaged since the first look: say so
                raise
        _serialize_sqlite(storage.engine)
    else:
        if not create and url.startswith("sqlite:"):
            raise NoStudyError(_no_study(url))  # an in-memory database holds no study yet
        if not create:
            _require_schema_server(url, db_url, engine_kwargs)
        storage = _open_rdb(url, db_url, kwargs, retry_seconds)
    return storage


def _no_study(url: str) -> str:
    where = sqlite_path(url) or redact(url)
    return f"no study at {where}; run `safs-optuna run CONFIG` first"


def _sqlite_query(path: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the file opened read-only; [] when the file or a table is missing."""
    if not path.is_file() or path.stat().st_size == 0:
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise StorageError(f"cannot read storage {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"storage {path} is damaged ({exc}); point the config's storage at a "
                           "new file, or move the damaged one away") from None
    finally:
        con.close()


def _is_wal(path: Path) -> bool:
    # Bytes 18 and 19 of the header are the file format versions: 2 means WAL journaling.
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except FileNotFoundError:
        return False
    return len(head) == 20 and head[18] == 2


def _has_schema_sqlite(path: Path) -> bool:
    return bool(_sqlite_query(path, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'"))


def _schema_complete_sqlite(path: Path) -> bool:
    # Optuna stamps alembic_version last: a row there means every table and row is in place.
    return bool(_sqlite_query(path, "SELECT 1 FROM alembic_version"))


def _require_schema_server(url: str, db_url: str, engine_kwargs: dict[str, Any]) -> None:
    engine = sqlalchemy.create_engine(db_url, **engine_kwargs)
    try:
        has = sqlalchemy.inspect(engine).has_table("studies")
    except Exception as exc:  # the driver's many kinds; the user needs the URL and the cause
        raise StorageError(f"cannot open storage {redact(url)}: {_first_line(exc)}") from exc
    finally:
        engine.dispose()
    if not has:
        raise NoStudyError(_no_study(url))


def _open_rdb(url: str, db_url: str, kwargs: dict[str, Any], retry_seconds: float) -> RetryingRDBStorage:
    """``RetryingRDBStorage(db_url, **kwargs)``, retried while another process is creating the schema."""

    def open_() -> RetryingRDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; we rely on them
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RetryingRDBStorage(db_url, retry_seconds=retry_seconds, name=f"storage {redact(url)}", **kwargs)

    return _retry_race(url, open_)


_T = TypeVar("_T")


def _retry_race(url: str, step: Callable[[], _T]) -> _T:
    """``step()``, tried again (with a growing random pause) while it fails on a race with
    another process opening the same new database; other errors name the URL and the cause."""
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return step()
        except Exception as exc:  # SQLAlchemy raises many kinds; the user needs the URL and the cause
            if attempt + 1 < OPEN_ATTEMPTS and _RACE.search(str(exc)):
                time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {redact(url)}: {_first_line(exc)}") from exc
    raise AssertionError("unreachable")


def _serialize_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Begin every SQLite transaction with BEGIN IMMEDIATE (SQLAlchemy's pysqlite recipe).

    Optuna's read-check-write steps — claiming a WAITING trial (``SELECT … FOR UPDATE``, which
    SQLite ignores), numbering a new trial — assume row locks. Under SQLite's default deferred
    transactions two workers can both read "WAITING" and both claim the same trial, so a
    queued trial would run twice. Taking the write lock at BEGIN makes those steps atomic;
    transactions are short, so workers barely wait for each other.
    """

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(conn: sqlalchemy.engine.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def stale_trial_callback(storage: Any) -> Any:
    """The storage's callback for failed stale trials (its getter was renamed in Optuna 4.9)."""
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None) or getattr(
        storage, "get_failed_trial_callback"
    )
    return getter()


def fail_unbeating_trials(study: optuna.Study, grace_period: float | None = None) -> list[int]:
    """Fail the RUNNING trials of ``study`` that never recorded a heartbeat; their ids.

    A worker killed between claiming a trial and its first heartbeat leaves a RUNNING trial
    without a heartbeat row, which :func:`optuna.storages.fail_stale_trials` skips, so the
    study would wait for it forever. Such a trial is failed once its ``datetime_start`` is
    older than ``grace_period`` seconds (default: the storage's), and handed to the storage's
    stale-trial callback, which re-queues it as for a trial whose heartbeat stopped. Call it
    next to ``fail_stale_trials``. Does nothing for storages without heartbeats.

    ``datetime_start`` is written with the claiming worker's local clock; workers on machines
    whose clocks differ by more than the grace period should share a time zone and NTP.
    """
    from . import optuna_private  # the private Optuna parts this needs, each with its reason

    storage = optuna_private.storage_of(study)
    backend = optuna_private.rdb_backend(storage)
    if backend is None:
        return []
    if isinstance(backend, RetryingRDBStorage) and backend.stale_checks_paused():
        return []  # heartbeats lapsed in an outage say nothing about the workers
    interval = backend.get_heartbeat_interval()
    if not interval:
        return []
    if grace_period is None:
        grace_period = backend.grace_period or 2 * interval
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_period)
    old = {optuna_private.trial_id(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
           if t.datetime_start is not None and t.datetime_start < cutoff}
    if not old:
        return []
    heartbeats = optuna_private.heartbeat_model()
    query = sqlalchemy.select(heartbeats.trial_id).where(heartbeats.trial_id.in_(old))

    def beating_ids() -> set[int]:
        with backend.engine.connect() as conn:
            return {row[0] for row in conn.execute(query)}

    retry = getattr(backend, "retry_seconds", 0.0)
    beating = call_with_retry(outage_for(getattr(backend, "outage_name", "")), retry, beating_ids)
    failed = []
    for trial_id in sorted(old - beating):
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna_private.UpdateFinishedTrialError:
            pass  # another worker failed (or its owner finished) it first
    callback = stale_trial_callback(storage)
    if callback is not None:
        for trial_id in failed:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return failed


class ArtifactStoreError(StorageError):
    """An artifact (checkpoint, plot) that cannot be written or read; one line naming the
    artifact store, the cause and what to do. ``cause`` is the cause alone, in a few words."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause or message


# Write errors that a second try cannot fix: a full disk stays full while this worker waits.
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_RESUME = "run the same command again to resume"


class FolderArtifactStore:
    """Optuna's :class:`~optuna.artifacts.FileSystemArtifactStore` that fails in one line.

    The folder is made (with its parents) by the first write, so that a run which stops before
    it stores anything leaves none behind. A folder that vanished after that (removed by hand, a
    cleaned temporary folder) is re-created once and the write tried again; a folder whose parent
    vanished too (a drive that is no longer mounted) is not, so that nothing lands on the disk
    below the mount point. A full disk is not retried. Every other failure is an
    :class:`ArtifactStoreError` that names the store, the artifact and the cause, and a failed
    write leaves no truncated file behind. A missing artifact in a folder that is there stays
    Optuna's ``ArtifactNotFound``, so that callers can say which stage lost its file.

    Example:

        .. code::

            store = FolderArtifactStore("studies/x.artifacts")
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=store, file_path="model.pt", study_or_trial=trial)
    """

    def __init__(self, base_path: str | Path) -> None:
        self.base_path = Path(base_path)
        self._store = FileSystemArtifactStore(str(base_path))
        self._seen = self.base_path.is_dir()  # once it was there, a missing folder has vanished

    def open_reader(self, artifact_id: str) -> BinaryIO:
        try:
            reader = self._store.open_reader(artifact_id)
        except ArtifactNotFound:
            if self.base_path.is_dir():
                raise
            raise self._error(artifact_id, "read", FileNotFoundError(errno.ENOENT, "")) from None
        except OSError as exc:
            raise self._error(artifact_id, "read", exc) from exc
        self._seen = True
        return reader

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        start = content_body.tell() if content_body.seekable() else None
        for attempt in (1, 2):
            try:
                self._store.write(artifact_id, content_body)
                if (self.base_path / artifact_id).is_file():
                    self._seen = True
                    return
                # The folder went away while the file was written: the data went with it.
                exc: OSError = FileNotFoundError(errno.ENOENT, "removed while it was written")
            except OSError as error:
                exc = error
            self._discard(artifact_id)
            retry = False
            if attempt == 1 and start is not None:
                retry, exc = self._recreate(exc)
            if not retry:
                name = getattr(content_body, "name", None)  # the local file: says which checkpoint
                what = f"{Path(name).name} (artifact {artifact_id})" if isinstance(name, str) else artifact_id
                raise self._error(what, "write", exc, again=attempt == 2) from exc
            content_body.seek(start)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(artifact_id)

    def _recreate(self, exc: OSError) -> tuple[bool, OSError]:
        """Re-create a vanished folder (not its parent): whether a second write makes sense, and
        the error to report if not."""
        if not isinstance(exc, FileNotFoundError) or self.base_path.is_dir():
            return False, exc
        try:
            self.base_path.mkdir(parents=not self._seen)
        except FileExistsError as error:
            return self.base_path.is_dir(), error  # another worker re-created it first
        except OSError as error:
            return False, error  # the parent is gone too, or not writable: _cause says which
        if self._seen:  # the run goes on, but a later reader of an older file will miss it
            logging.getLogger(__name__).warning(
                f"artifact store {self.base_path}: the folder vanished and was re-created; what was stored "
                "in it before is lost")
        return True, exc

    def _cause(self, exc: OSError, hint: bool = True, again: bool = False) -> str:
        """What failed in a few words, and (``hint``) what to do; ``again``: on the second try."""
        folder, parent = self.base_path, self.base_path.parent
        if folder.is_dir() or exc.errno in _NO_SPACE:
            return _os_cause(exc, hint)
        if not parent.is_dir():
            what = (f"the folder and its parent {parent} are gone (removed, or a drive that is no longer "
                    "mounted?)")
            do = "restore them, or point artifacts at another folder,"
        elif folder.exists():
            what, do = f"{folder} is a file, not a folder", "move it away"
        elif exc.errno is not None and exc.errno != errno.ENOENT:
            what, do = f"the folder is gone and could not be re-created ({_os_cause(exc, False)})", "restore it"
        else:
            what = "the folder vanished again after it was re-created" if again else "the folder is gone"
            do = "restore it"
        return f"{what}; {do} and {_RESUME}" if hint else what

    def _discard(self, artifact_id: str) -> None:
        """Remove what a failed write left, so that no truncated file looks like a checkpoint."""
        with contextlib.suppress(OSError):
            (self.base_path / artifact_id).unlink(missing_ok=True)

    def _error(self, what: str, action: str, exc: OSError, again: bool = False) -> ArtifactStoreError:
        # A failed read names no fix: its caller knows which stage lost the file and how to redo it.
        text = self._cause(exc, hint=action == "write", again=again)
        return ArtifactStoreError(f"artifact store {self.base_path}: cannot {action} {what}: {text}",
                                  self._cause(exc, hint=False, again=again))


def _os_cause(exc: OSError, hint: bool = True) -> str:
    """A failed file operation in a few words, and (``hint``) what to do about it."""
    if exc.errno in _NO_SPACE:
        what, do = "no space left on the device (the disk or a quota is full)", "free some space"
    elif exc.errno in _NOT_WRITABLE:
        what, do = "not writable (permission denied, or a read-only file system)", "make it writable"
    else:
        what, do = exc.strerror or _first_line(exc), "fix that"
    return f"{what}; {do} and {_RESUME}" if hint else what


# Free bytes below which a failed local write is taken for a full disk: torch.save reports one
# only as a RuntimeError, and the partial file it left has taken the rest.
_FULL_BYTES = 1 << 20


@contextlib.contextmanager
def staging(store: Any, name: str, folder: str | Path) -> Iterator[None]:
    """Around writing ``name`` into the local ``folder`` before its upload to ``store``: a full
    disk there stops the worker in one line too, as an :class:`ArtifactStoreError`."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if not ((isinstance(exc, OSError) and exc.errno in _NO_SPACE) or _nearly_full(folder)):
            raise
        cause = f"no space left on the device of the temporary folder {folder}"
        raise ArtifactStoreError(f"artifact store {store.base_path}: cannot write {name}: {cause}; free some "
                                 f"space and {_RESUME}", cause) from exc


def _nearly_full(folder: str | Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _FULL_BYTES
    except OSError:
        return False


def read_failure(exc: BaseException) -> str:
    """Why an artifact could not be read, in a few words, for a message that says what to do."""
    if isinstance(exc, ArtifactStoreError):
        return exc.cause
    if isinstance(exc, ArtifactNotFound):
        return "the file is missing"
    if isinstance(exc, OSError):
        return _os_cause(exc, hint=False)
    return type(exc).__name__


def _is_lost_artifact_store(exc: BaseException) -> bool:
    """A network file system or an object store that did not answer: worth another try."""
    from .object_store import is_lost_bucket

    if isinstance(exc, ArtifactNotFound):
        return False
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and not any(e is s for s in seen):
        seen.append(e)
        if isinstance(e, OSError) and e.errno in NETWORK_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
    return is_lost_bucket(exc)


class RetryingArtifactStore:
    """An artifact store whose reads and writes wait out an outage (a network file system or an
    object store that does not answer) for up to ``retry_seconds``, with one line when it begins
    and one when it ends, as the storage's calls do. A missing artifact is not retried. An object
    store's other failures (no such bucket, access denied) become one-line
    :class:`ArtifactStoreError` messages naming the store.

    Args:
        store: A :class:`FolderArtifactStore` or an :class:`~safs_optuna.object_store.BucketArtifactStore`.
        retry_seconds: How long an outage is waited out (0: not at all).
    """

    def __init__(self, store: Any, retry_seconds: float = RETRY_SECONDS) -> None:
        self.store = store
        self.base_path = store.base_path
        self.retry_seconds = float(retry_seconds)
        self._outage = outage_for(f"artifact store {store.base_path}")

    def _call(self, action: str, what: str, call: Callable[[], _T]) -> _T:
        try:
            return call_with_retry(self._outage, self.retry_seconds, call, lost=_is_lost_artifact_store)
        except (ArtifactNotFound, ArtifactStoreError, OSError):
            raise
        except Exception as exc:  # an object store's client raises its own kinds
            from .object_store import describe_failure

            cause = describe_failure(exc)
            hint = f"; fix that and {_RESUME}" if action == "write" else ""
            raise ArtifactStoreError(f"artifact store {self.base_path}: cannot {action} {what}: {cause}{hint}",
                                     cause) from exc

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._call("read", artifact_id, lambda: self.store.open_reader(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        start = content_body.tell() if content_body.seekable() else None

        def write() -> None:
            if start is not None:
                content_body.seek(start)  # a try that failed half-way read part of it
            self.store.write(artifact_id, content_body)

        self._call("write", artifact_id, write)

    def remove(self, artifact_id: str) -> None:
        self._call("remove", artifact_id, lambda: self.store.remove(artifact_id))


def make_artifact_store(location: str | Path, retry_seconds: float = RETRY_SECONDS) -> RetryingArtifactStore:
    """The artifact store (checkpoints, plots) at ``location``: a folder, created by its first
    write, or an object store (``s3://bucket/prefix``, ``gs://bucket/prefix``; see
    :mod:`safs_optuna.object_store`). Its calls wait out outages for up to ``retry_seconds``.

    Raises:
        StorageError: An object store whose client library is missing (naming what to install)
            or a malformed bucket URL.
    """
    from .object_store import open_bucket

    if isinstance(location, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", location):
        try:  # an object store; another scheme is refused naming the valid ones
            store: Any = open_bucket(location)
        except (ImportError, ValueError) as exc:
            raise StorageError(str(exc)) from None
    else:
        store = FolderArtifactStore(location)
    return RetryingArtifactStore(store, retry_seconds)


def check_artifacts(location: str | Path, retry_seconds: float = RETRY_SECONDS) -> None:
    """Raise :class:`StorageError` in one line naming the bucket when an object store at
    ``location`` cannot be written (a small object is written and removed). Folders are checked
    where they are made (``run``'s checks); this looks at object stores only."""
    from .object_store import is_bucket_url

    if not (isinstance(location, str) and is_bucket_url(location)):
        return
    store = make_artifact_store(location, retry_seconds)
    try:
        store._call("write", "a test object", store.store.check_writable)
    except ArtifactStoreError as exc:
        raise ArtifactStoreError(f"artifact store {location}: cannot write to bucket {store.store.bucket!r}: "
                                 f"{exc.cause}", exc.cause) from None
