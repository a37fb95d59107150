"""Storage calls that wait out an outage: a restarted, failed-over or unreachable database.

Optuna's RDB storage raises at the first lost connection and leaves retrying to the caller; a
worker would stop at the first database restart. :class:`RetryingRDBStorage` is an
``RDBStorage`` whose every call retries a lost connection (and SQLite's "database is locked"
beyond the busy timeout) with backoff, for up to ``retry_seconds`` since the outage began, then
raises the last error as before. Being an ``RDBStorage``, Optuna still wraps it in its cache and
its heartbeats, stale-trial checks and callbacks work unchanged.

A write whose connection was lost may have committed before the reply was lost. Writes that set
a value (attributes, heartbeats, intermediate values, parameters) are simply made again. The
three writes that would go wrong twice carry a token written in the same transaction, and a
retry first looks for it:

- creating a trial (``ask``, ``enqueue_trial``, a re-queued stale trial): no second trial;
- claiming a queued trial (WAITING -> RUNNING): the claim is not lost to ourselves;
- creating a study: the creator still knows it created it (and queues its first trial).

Finishing a trial (COMPLETE, PRUNED, FAIL) that already reached exactly that state with the same
values is taken as done, not as ``UpdateFinishedTrialError``.

While the database is out, no heartbeat is recorded; a trial that lapsed only because of the
outage is not stale. This process therefore fails no other worker's trial as stale until one
grace period after its own outage ended, which leaves every live worker time to beat again.

Each process prints one line when an outage begins and one when it ends (the logger
``safs_optuna.storage``), however many threads and storages wait.
"""

from __future__ import annotations

import copy
import datetime
import errno
import functools
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .interrupts import interrupted
from .optuna_private import rdb_models, rdb_session

__all__ = ["RETRY_SECONDS", "TOKEN_ATTR", "Outage", "RetryingRDBStorage", "is_lost_connection", "outage_for"]

RETRY_SECONDS = 300.0
"""How long a worker waits out an outage of its storage or artifact store, by default."""
TOKEN_ATTR = "safs:write"
"""System attr (trials and studies) holding the token of the write that made or claimed them."""
MAX_PAUSE = 5.0
"""Longest pause between two tries: a database that is back is used again within this."""

_log = logging.getLogger("safs_optuna.storage")
_T = TypeVar("_T")

# What a lost or refused connection says (PostgreSQL/psycopg, MySQL, SQLite, sockets). Checked
# on OperationalError and InterfaceError only; a wrong password or a missing table is not here.
# A server out of connection slots is here too: the slots come back as other workers finish.
_LOST = re.compile(
    r"database is locked|connection refused|could not connect|the database system is (shutting down|"
    r"starting up|in recovery mode|not yet accepting connections)|cannot connect now|server closed the "
    r"connection|terminating connection|connection (is |was |already )?closed|connection reset|"
    r"could not (receive|send) data|no connection to the server|SSL SYSCALL|SSL connection has been closed|"
    r"timeout expired|timed out|Lost connection|server has gone away|Can't connect to|unexpected EOF|"
    r"EOF detected|broken pipe|Temporary failure in name resolution|network is unreachable|"
    r"no route to host|consuming input failed|too many clients|remaining connection slots are reserved",
    re.IGNORECASE,
)
# Two transactions that collided: tried again at once, without the outage lines.
_COLLISION = re.compile(r"deadlock detected|Deadlock found|could not serialize access", re.IGNORECASE)
_COLLISION_TRIES = 5
# Errors of a socket or a network file system that a later try may not get.
NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                            errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE,
                            errno.ENOTCONN, errno.ESTALE, getattr(errno, "EHOSTDOWN", errno.EHOSTUNREACH)})


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


def is_lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost, refused or locked database connection, which
    a later try may not get; not an error of the request itself."""
    for e in _chain(exc):
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                          sqlalchemy.exc.DisconnectionError)) and _LOST.search(str(e)):
            return True
        if isinstance(e, sqlalchemy.exc.TimeoutError):  # the pool waited for a free connection
            return True
    return False


def _is_collision(exc: BaseException) -> bool:
    return any(isinstance(e, sqlalchemy.exc.OperationalError) and _COLLISION.search(str(e)) for e in _chain(exc))


def _first_line(exc: BaseException) -> str:
    for e in reversed(_chain(exc)):  # the driver's own words, not the wrapper's
        text = str(getattr(e, "orig", None) or e).strip()
        if text and text not in ("()", "None"):  # some drivers' errors have no words at all
            return text.splitlines()[0]
    return type(exc).__name__


class Outage:
    """One process's view of whether a storage (or artifact store) is out, shared by every thread
    and every storage object with the same name: one line when it begins, one when it ends.

    Args:
        name: What to call the storage in the lines (a redacted URL, a bucket).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.began: float | None = None  # time.monotonic() of the first failure, while out
        self.ended: float | None = None  # time.monotonic() when the last outage ended

    def failed(self, exc: BaseException, limit: float) -> bool:
        """A call failed on a lost connection: whether it may try again (within ``limit`` seconds
        of the outage's beginning); the first failure of an outage says so in one line."""
        if limit <= 0:  # not waited out: no outage begins, and none ends
            return False
        now = time.monotonic()
        with self._lock:
            if self.began is None:
                self.began = now
                _log.warning(f"{self.name}: connection lost ({_first_line(exc)}); waiting up "
                             f"to {limit:.0f}s for it to come back")
            return now - self.began < limit

    def recovered(self) -> None:
        """A call went through: an outage in progress ends here (one line)."""
        if self.began is None:  # the common case, without the lock
            return
        with self._lock:
            if self.began is None:
                return
            now = time.monotonic()
            _log.warning(f"{self.name}: connection back after {now - self.began:.0f}s; going on")
            self.began, self.ended = None, now

    def quiet_for(self, seconds: float) -> bool:
        """Whether no outage is in progress and none ended in the last ``seconds``."""
        with self._lock:
            if self.began is not None:
                return False
            return self.ended is None or time.monotonic() - self.ended >= seconds


_outages: dict[str, Outage] = {}
_outages_lock = threading.Lock()


def outage_for(name: str) -> Outage:
    """This process's :class:`Outage` record of the storage called ``name``."""
    with _outages_lock:
        return _outages.setdefault(name, Outage(name))


def pause(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1``: doubling from 0.25 s up to :data:`MAX_PAUSE`,
    with jitter so that many workers do not come back in step."""
    return min(MAX_PAUSE, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0)


def call_with_retry(outage: Outage, limit: float, call: Callable[[], _T],
                    again: Callable[[], _T] | None = None,
                    lost: Callable[[BaseException], bool] = is_lost_connection) -> _T:
    """``call()``, tried again while it fails on a lost connection, for up to ``limit`` seconds
    of outage; ``again`` (default ``call``) makes the later tries, e.g. first looking whether the
    lost try committed. Beyond the limit, or once the process was interrupted (Ctrl-C), the last
    error is raised."""
    attempt = collisions = 0
    step = call
    while True:
        try:
            result = step()
        except Exception as exc:
            if lost(exc):
                # After Ctrl-C nothing is waited out: the user wants the command to end.
                if interrupted() or not outage.failed(exc, limit):
                    raise
            elif _is_collision(exc) and collisions + 1 < _COLLISION_TRIES:
                collisions += 1
            else:
                raise
            time.sleep(pause(attempt))
            attempt += 1
            step = again or call
            continue
        outage.recovered()
        return result


# Calls that read, or write a value that a second write leaves the same: tried again as they are.
_PLAIN = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
    "get_trial_param", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "_get_trials", "get_best_trial", "_get_best_trial_id", "get_n_trials",
    "set_study_user_attr", "set_study_system_attr", "set_trial_user_attr", "set_trial_system_attr",
    "set_trial_intermediate_value", "set_trial_param", "_set_trial_param", "record_heartbeat",
    "get_current_version",
)


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """An :class:`~optuna.storages.RDBStorage` whose calls wait out a lost connection.

    Takes ``RDBStorage``'s arguments, plus:

    Args:
        retry_seconds: How long an outage is waited out before a call raises (0: not at all).
        name: What the outage lines call the storage (default ``"storage <url>"``; give the URL
            without its password).

    Example:

        .. code::

            storage = RetryingRDBStorage("postgresql://u:pw@db/safs", heartbeat_interval=5,
                                         retry_seconds=300, name="storage postgresql://u:***@db/safs")
            study = optuna.create_study(storage=storage, study_name="x", load_if_exists=True)
    """

    def __init__(self, url: str, *args: Any, retry_seconds: float = RETRY_SECONDS, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self.retry_seconds = float(retry_seconds)
        self.outage_name = name or f"storage {url}"

    # The nesting depth of retried calls in this thread: only the outermost call retries (an
    # inner one, e.g. create_new_trial's own _create_new_trial, fails up to it).
    _depth = threading.local()

    def _retry(self, call: Callable[[], _T], again: Callable[[], _T] | None = None) -> _T:
        depth = getattr(self._depth, "n", 0)
        if depth:
            return call()
        self._depth.n = 1
        try:
            return call_with_retry(outage_for(self.outage_name), self.retry_seconds, call, again)
        finally:
            self._depth.n = 0

    def stale_checks_paused(self) -> bool:
        """Whether this process should fail no trial as stale now: an outage is in progress, or
        ended less than one grace period (plus a heartbeat interval) ago."""
        interval = self.heartbeat_interval or 0
        grace = self.grace_period if self.grace_period is not None else 2 * interval
        return not outage_for(self.outage_name).quiet_for(grace + interval)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self.stale_checks_paused():
            return []
        return self._retry(lambda: super(RetryingRDBStorage, self)._get_stale_trial_ids(study_id))

    # -------------------------------------------------------------- writes with a token
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        token = uuid.uuid4().hex

        def create() -> int:
            models = rdb_models()
            try:
                with rdb_session(self) as session:
                    name = study_name or self._create_unique_study_name(session)
                    study = models.StudyModel(study_name=name, directions=[
                        models.StudyDirectionModel(objective=i, direction=d) for i, d in enumerate(directions)])
                    session.add(study)
                    session.flush()
                    session.add(models.StudySystemAttributeModel(study_id=study.study_id, key=TOKEN_ATTR,
                                                                 value_json=f'"{token}"'))
                    study_id = study.study_id
            except sqlalchemy.exc.IntegrityError:
                raise optuna.exceptions.DuplicatedStudyError(f"study {study_name!r} already exists") from None
            return study_id

        def again() -> int:
            if study_name is not None:
                try:
                    study_id = self.get_study_id_from_name(study_name)
                except KeyError:
                    return create()
                if self.get_study_system_attrs(study_id).get(TOKEN_ATTR) == token:
                    return study_id  # the lost try created it
            return create()

        return self._retry(create, again)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        token = uuid.uuid4().hex
        if template_trial is None:  # what RDBStorage makes of "no template": a new RUNNING trial
            template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                                   datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
                                   distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
                                   trial_id=-1)
        else:
            template = copy.deepcopy(template_trial)  # a re-queued trial's copy gets a new token
        template.system_attrs = {**template.system_attrs, TOKEN_ATTR: token}

        def create() -> FrozenTrial:
            with rdb_session(self) as session:
                rdb_models().StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                row = self._get_prepared_new_trial(study_id, template, session)
                session.flush()
                frozen = copy.deepcopy(template)
                frozen.number, frozen.datetime_start, frozen._trial_id = row.number, row.datetime_start, row.trial_id
            return frozen

        def again() -> FrozenTrial:
            made = self._trial_with_token(study_id, token)
            return self.get_trial(made) if made is not None else create()

        return self._retry(create, again)

    def _trial_with_token(self, study_id: int, token: str) -> int | None:
        models = rdb_models()
        attr = models.TrialSystemAttributeModel
        with rdb_session(self) as session:
            row = (session.query(attr.trial_id).join(models.TrialModel, models.TrialModel.trial_id == attr.trial_id)
                   .filter(models.TrialModel.study_id == study_id, attr.key == TOKEN_ATTR,
                           attr.value_json == f'"{token}"').first())
        return None if row is None else int(row[0])

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        if state == TrialState.RUNNING and values is None:
            return self._claim(trial_id)
        parent = super()

        def again() -> bool:
            trial = self.get_trial(trial_id)
            if trial.state == state and state.is_finished() and (
                    values is None or list(trial.values or []) == [float(v) for v in values]):
                return True  # the lost try finished it
            return parent.set_trial_state_values(trial_id, state=state, values=values)

        return self._retry(lambda: parent.set_trial_state_values(trial_id, state=state, values=values), again)

    def _claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING, as RDBStorage does it, with this claim's token in the same
        transaction: whether this call claimed the trial."""
        token = uuid.uuid4().hex
        models = rdb_models()

        def claim() -> bool:
            try:
                with rdb_session(self) as session:
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                    self.check_trial_is_updatable(trial_id, trial.state)
                    if trial.state != TrialState.WAITING:
                        return False
                    trial.state = TrialState.RUNNING
                    trial.datetime_start = datetime.datetime.now()
                    _put_token(session, trial_id, token)
            except sqlalchemy.exc.IntegrityError:
                return False
            return True

        def again() -> bool:
            if self.get_trial_system_attrs(trial_id).get(TOKEN_ATTR) == token:
                return True  # the lost try claimed it
            return claim()

        return self._retry(claim, again)

    def delete_study(self, study_id: int) -> None:
        parent = super()

        def again() -> None:
            try:
                self.get_study_name_from_id(study_id)
            except KeyError:
                return  # the lost try deleted it
            parent.delete_study(study_id)

        self._retry(lambda: parent.delete_study(study_id), again)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id


def _put_token(session: Any, trial_id: int, token: str) -> None:
    """Set the trial's :data:`TOKEN_ATTR` inside the caller's transaction."""
    attr = rdb_models().TrialSystemAttributeModel
    row = session.query(attr).filter(attr.trial_id == trial_id, attr.key == TOKEN_ATTR).one_or_none()
    if row is None:
        session.add(attr(trial_id=trial_id, key=TOKEN_ATTR, value_json=f'"{token}"'))
    else:
        row.value_json = f'"{token}"'


class _QuietFallback(logging.Filter):
    """Drops RDBStorage's warning that a query failed and it falls back to a slower one when the
    failure was a lost connection: the fallback fails too, and the outage has its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Falling back to a slower alternative" in message and _LOST.search(message))


logging.getLogger("optuna.storages._rdb.storage").addFilter(_QuietFallback())


def _plain(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def retried(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retry(lambda: method(self, *args, **kwargs))

    return retried


for _name in _PLAIN:
    if hasattr(optuna.storages.RDBStorage, _name):  # get_n_trials is BaseStorage's in some versions
        setattr(RetryingRDBStorage, _name, _plain(_name))
