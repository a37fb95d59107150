"""Storage URLs and artifact stores — the one place that builds Optuna storage objects.

SQLite is tuned for several worker processes writing to one file: the database is switched to
WAL journaling (readers never block the writer; the mode is stored in the file, so it is set
once) and every connection waits up to ``busy_timeout`` seconds for the write lock instead of
failing with "database is locked". Every storage records Optuna heartbeats, so a trial whose
worker died (kill -9, a lost machine) is marked failed after ``grace_period`` seconds and
re-queued once more by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`.

PostgreSQL (``postgresql://user:password@host/db``) works unchanged; it needs a driver, installed
with the ``postgres`` extra (``pip install 'safs-optuna[postgres]'``, psycopg2). A plain
``postgresql://`` URL uses SQLAlchemy's default driver when it is installed (psycopg 3 from
SQLAlchemy 2.1 on, psycopg2 before) and otherwise whichever of the two is; a URL that names its
driver (``postgresql+psycopg://``) gets exactly that one. A missing driver is a
:class:`StorageError` that says what to install.
"""

from __future__ import annotations

import importlib
import sqlite3
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import ExperimentalWarning
from sqlalchemy.engine import make_url

HEARTBEAT_INTERVAL = 5
GRACE_PERIOD = 20
MAX_RETRY = 3
BUSY_TIMEOUT = 60.0


class StorageError(RuntimeError):
    """A storage URL that cannot be opened; the message says why and what to do."""


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or ``None`` for other URLs (and in-memory)."""
    if not url.startswith("sqlite:"):
        return None
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    path = path.partition("?")[0]  # driver options such as ?timeout=30 are not part of the file
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _prepare_sqlite(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


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
) -> optuna.storages.RDBStorage:
    """Open (creating if needed) the RDB storage at ``url`` with heartbeats and retries on.

    Example:

        .. code::

            storage = make_storage("sqlite:///studies/x.db")
            study = optuna.create_study(storage=storage, study_name="x", load_if_exists=True)
    """
    db_url = _check_driver(url)  # messages name the user's URL, not the driver it resolved to
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        _prepare_sqlite(path)
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
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; we rely on them
            warnings.simplefilter("ignore", ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                db_url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=(
                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                    if heartbeat_interval else None
                ),
            )
    except Exception as exc:  # SQLAlchemy raises many kinds; the user needs the URL and the cause
        raise StorageError(f"cannot open storage {redact(url)}: {exc}") from exc
    if path is not None:
        _serialize_sqlite(storage.engine)
    return storage


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


def storage_exists(url: str) -> bool:
    """Whether anything is stored at ``url`` yet (only checkable for SQLite files)."""
    path = sqlite_path(url)
    return True if path is None else path.exists()


def make_artifact_store(path: str | Path) -> FileSystemArtifactStore:
    """The artifact store (checkpoints, plots) in folder ``path``, created if missing."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))
