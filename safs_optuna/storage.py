"""Storage URLs and artifact stores — the one place that builds Optuna storage objects.

SQLite is tuned for several worker processes writing to one file: the database is switched to
WAL journaling (readers never block the writer; the mode is stored in the file, so it is set
once) and every connection waits up to ``busy_timeout`` seconds for the write lock instead of
failing with "database is locked". Every storage records Optuna heartbeats, so a trial whose
worker died (kill -9, a lost machine) is marked failed after ``grace_period`` seconds and
re-queued once more by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`.

PostgreSQL (``postgresql://user@host/db``) works unchanged; it needs a driver, installed with
the ``postgres`` extra (``pip install safs-optuna[postgres]``).
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import ExperimentalWarning

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
    if path in ("", ":memory:"):
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


def _check_driver(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme.startswith("postgresql"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            if "+" not in scheme:
                raise StorageError(
                    f"{redact(url)} needs a PostgreSQL driver: pip install 'safs-optuna[postgres]'"
                ) from None


def make_storage(
    url: str,
    *,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    max_retry: int = MAX_RETRY,
) -> optuna.storages.RDBStorage:
    """Open (creating if needed) the RDB storage at ``url`` with heartbeats and retries on.

    Example:

        .. code::

            storage = make_storage("sqlite:///studies/x.db")
            study = optuna.create_study(storage=storage, study_name="x", load_if_exists=True)
    """
    _check_driver(url)
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        _prepare_sqlite(path)
        engine_kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT}
    elif not url.startswith("sqlite:"):
        # Long-lived workers outlive idle server connections; check them before use.
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=retry,
        )
    except Exception as exc:  # SQLAlchemy raises many kinds; the user needs the URL and the cause
        raise StorageError(f"cannot open storage {redact(url)}: {exc}") from exc


def storage_exists(url: str) -> bool:
    """Whether anything is stored at ``url`` yet (only checkable for SQLite files)."""
    path = sqlite_path(url)
    return True if path is None else path.exists()


def make_artifact_store(path: str | Path) -> FileSystemArtifactStore:
    """The artifact store (checkpoints, plots) in folder ``path``, created if missing."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))
