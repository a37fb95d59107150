"""Storage calls wait out a lost connection, and a retried write that had committed is not made
twice. The faults are injected into the SQLAlchemy dialect of a real SQLite storage: statements
that fail while the "server" is down, and commits that went through but whose reply was lost.
(tests/test_postgres.py stops a real PostgreSQL server under the whole pipeline.)"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from safs_optuna import storage_retry
from safs_optuna.storage import fail_unbeating_trials, make_storage
from safs_optuna.storage_retry import RetryingRDBStorage, is_lost_connection

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]

LOST = "server closed the connection unexpectedly"


class Faults:
    """Faults in one engine's dialect: ``down_for(s)`` fails every statement for s seconds;
    ``lose_commits(n)`` lets the next n commits happen, then raises as if the reply was lost."""

    def __init__(self, storage: optuna.storages.RDBStorage) -> None:
        self._until = 0.0
        self._lost_commits = 0
        self.failed = 0
        dialect = storage.engine.dialect
        for name in ("do_execute", "do_execute_no_params", "do_executemany"):
            setattr(dialect, name, self._statement(getattr(dialect, name)))
        commit = dialect.do_commit

        def do_commit(dbapi_connection):
            commit(dbapi_connection)
            if self._lost_commits:
                self._lost_commits -= 1
                self.failed += 1
                raise sqlite3.OperationalError(LOST)

        dialect.do_commit = do_commit

    def _statement(self, run):
        def statement(*args, **kwargs):
            if time.monotonic() < self._until:
                self.failed += 1
                raise sqlite3.OperationalError(LOST)
            return run(*args, **kwargs)
        return statement

    def down_for(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def lose_commits(self, n: int = 1) -> None:
        self._lost_commits = n


@pytest.fixture(autouse=True)
def _fresh_outages(monkeypatch):
    # Outages are remembered per process and storage name; every test starts without one.
    monkeypatch.setattr(storage_retry, "_outages", {})
    monkeypatch.setattr(storage_retry, "MAX_PAUSE", 0.2)


def _storage(tmp_path, **kwargs):
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", **kwargs)
    return storage, Faults(storage)


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "safs_optuna.storage"]


def test_an_outage_is_waited_out_with_one_line_when_it_begins_and_one_when_it_ends(tmp_path, caplog):
    optuna.logging.enable_propagation()  # Optuna's own warnings reach caplog too
    storage, faults = _storage(tmp_path, retry_seconds=30)
    study = optuna.create_study(storage=storage, study_name="s")

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 2:
            faults.down_for(1.5)  # the database goes away while this trial runs
        trial.report(x, 0)  # its first call after that waits
        return x

    try:
        with caplog.at_level(logging.WARNING):
            study.optimize(objective, n_trials=5)
            faults.down_for(1.0)
            study.get_trials()  # RDBStorage's "falling back to a slower query" is not said
    finally:
        optuna.logging.disable_propagation()
    assert "Falling back" not in caplog.text
    assert faults.failed > 1
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    lines = _lines(caplog)
    assert len(lines) == 4, lines  # two outages
    assert "connection lost" in lines[0] and LOST in lines[0] and "up to 30s" in lines[0]
    assert "connection back after" in lines[1]


def test_beyond_the_limit_the_error_is_raised_as_before(tmp_path, caplog):
    storage, faults = _storage(tmp_path, retry_seconds=1)
    study = optuna.create_study(storage=storage, study_name="s")
    faults.down_for(60)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="safs_optuna.storage"), pytest.raises(Exception) as err:
        study.ask()
    assert 0.9 < time.monotonic() - start < 10
    assert is_lost_connection(err.value)
    assert len(_lines(caplog)) == 1


def test_retry_seconds_zero_raises_at_once_without_a_line(tmp_path, caplog):
    storage, faults = _storage(tmp_path, retry_seconds=0)
    study = optuna.create_study(storage=storage, study_name="s")
    faults.down_for(60)
    with caplog.at_level(logging.WARNING, logger="safs_optuna.storage"), pytest.raises(Exception):
        study.ask()
    assert faults.failed == 1 and _lines(caplog) == []


def test_after_ctrl_c_an_outage_is_not_waited_out(tmp_path, caplog, monkeypatch):
    # A worker interrupted while the database is locked or gone ends at once, without a line.
    import signal

    from safs_optuna import interrupts

    monkeypatch.setattr(interrupts, "_event", threading.Event())
    monkeypatch.setattr(signal, "getsignal", lambda _: signal.default_int_handler)
    installed = {}
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.setdefault(sig, handler))
    interrupts.catch_interrupts()
    storage, faults = _storage(tmp_path, retry_seconds=30)
    study = optuna.create_study(storage=storage, study_name="s")
    with pytest.raises(KeyboardInterrupt):
        installed[signal.SIGINT](signal.SIGINT, None)  # what Ctrl-C does
    assert interrupts.interrupted()
    faults.down_for(60)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="safs_optuna.storage"), pytest.raises(Exception) as err:
        study.ask()
    assert time.monotonic() - start < 5 and is_lost_connection(err.value)
    assert faults.failed == 1 and _lines(caplog) == []


def test_other_errors_are_not_retried(tmp_path):
    storage, _ = _storage(tmp_path, retry_seconds=30)
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("missing")
    wrong_password = sqlalchemy.exc.OperationalError("connect", {}, Exception(
        'connection to server at "db", port 5432 failed: FATAL:  password authentication failed for user "u"'))
    assert not is_lost_connection(wrong_password)
    assert not is_lost_connection(sqlalchemy.exc.OperationalError("select", {}, Exception("no such table: trials")))
    for message in ("the database system is shutting down", "Connection refused", "database is locked",
                    "terminating connection due to administrator command",
                    "FATAL:  sorry, too many clients already"):
        assert is_lost_connection(sqlalchemy.exc.OperationalError("x", {}, Exception(message))), message


# ------------------------------------------------------------ a lost reply after the commit
def test_a_trial_created_by_a_lost_commit_is_not_created_twice(tmp_path):
    storage, faults = _storage(tmp_path, retry_seconds=30)
    study = optuna.create_study(storage=storage, study_name="s")
    faults.lose_commits(1)
    trial = study.ask()
    assert faults.failed == 1
    assert [t.number for t in study.get_trials(deepcopy=False)] == [0] and trial.number == 0
    study.tell(trial, 1.0)

    faults.lose_commits(1)
    study.enqueue_trial({"x": 0.5})
    assert faults.failed == 2
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(waiting) == 1 and len(study.trials) == 2


def test_a_claim_by_a_lost_commit_stays_ours(tmp_path):
    storage, faults = _storage(tmp_path, retry_seconds=30)
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 0.5})
    trial_id = study.trials[0]._trial_id
    faults.lose_commits(1)
    assert storage.set_trial_state_values(trial_id, state=TrialState.RUNNING) is True
    assert faults.failed == 1
    assert storage.set_trial_state_values(trial_id, state=TrialState.RUNNING) is False  # another worker
    assert study.trials[0].state == TrialState.RUNNING


def test_finishing_a_trial_by_a_lost_commit_is_not_an_update_of_a_finished_trial(tmp_path):
    storage, faults = _storage(tmp_path, retry_seconds=30)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": FloatDistribution(0, 1)})
    faults.lose_commits(1)
    study.tell(trial, 0.25)
    assert faults.failed == 1
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].value == 0.25
    # A real second update of a finished trial is still refused.
    with pytest.raises(RuntimeError, match="finished"):  # UpdateFinishedTrialError in newer Optuna
        storage.set_trial_state_values(trial._trial_id, state=TrialState.COMPLETE, values=[0.5])


def test_a_study_created_by_a_lost_commit_is_ours(tmp_path):
    storage, faults = _storage(tmp_path, retry_seconds=30)
    faults.lose_commits(1)
    study = optuna.create_study(storage=storage, study_name="s")  # not DuplicatedStudyError
    assert faults.failed == 1
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s"]
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):  # another creator is still told
        optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)


def test_an_attribute_set_by_a_lost_commit_is_set_once(tmp_path):
    storage, faults = _storage(tmp_path, retry_seconds=30)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    faults.lose_commits(3)
    trial.set_user_attr("a", 1)
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, 0)
    assert faults.failed == 3
    frozen = study.trials[0]
    assert frozen.user_attrs == {"a": 1} and list(frozen.params) == ["x"]
    assert frozen.intermediate_values == {0: 0.5}


# ------------------------------------------------------------ heartbeats and stale trials
def test_no_trial_is_failed_as_stale_right_after_an_outage(tmp_path):
    storage, faults = _storage(tmp_path, retry_seconds=30, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)
    faults.down_for(2.5)  # longer than the grace period: the heartbeat lapses
    study.get_trials()  # this process meets the outage and waits it out
    assert faults.failed
    blank = study.ask()  # claimed by a worker that died before its first heartbeat
    blank_id = blank._trial_id
    optuna.storages.fail_stale_trials(study)
    assert fail_unbeating_trials(study, grace_period=0) == []
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2

    # One grace period and an interval after the outage, stale trials are failed again.
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL
    assert fail_unbeating_trials(study, grace_period=0) == [blank_id]


def test_a_heartbeat_thread_waits_instead_of_dying(tmp_path, caplog):
    storage, faults = _storage(tmp_path, retry_seconds=30, heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage, study_name="s")
    errors = []
    threading.excepthook, hook = (lambda args: errors.append(args.exc_value)), threading.excepthook
    try:
        def objective(trial):
            faults.down_for(1.5)
            time.sleep(2.5)  # training goes on; the heartbeat thread meets the outage
            return 1.0
        study.optimize(objective, n_trials=1)
    finally:
        threading.excepthook = hook
    assert errors == []
    assert study.trials[0].state == TrialState.COMPLETE


def test_the_storage_is_still_an_rdb_storage_with_heartbeats(tmp_path):
    storage, _ = _storage(tmp_path)
    assert isinstance(storage, RetryingRDBStorage) and isinstance(storage, optuna.storages.RDBStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    assert type(study._storage).__name__ == "_CachedStorage"  # Optuna's cache still wraps it
    assert optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)
    assert storage.retry_seconds == 300


def test_the_config_key_and_its_range():
    from safs_optuna.config import ConfigError, parse_config

    assert parse_config({"name": "x"}).storage_retry_seconds == 300
    assert parse_config({"name": "x", "storage_retry_seconds": 0}).storage_retry_seconds == 0
    for bad in (-1, 86_401):
        with pytest.raises(ConfigError, match=r"storage_retry_seconds: must be in \[0, 86 ?400\]"):
            parse_config({"name": "x", "storage_retry_seconds": bad})
