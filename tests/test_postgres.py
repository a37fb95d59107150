"""A PostgreSQL URL works unchanged: storage, heartbeats, the whole pipeline with workers, and
passwords never shown. The server is a throwaway one started by the ``postgres_server`` fixture
(tests/pg_server.py); these tests fail, never skip, when it cannot be started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna.cli import main
from safs_optuna.storage import StorageError, make_storage, redact

from ._tiny import write_config

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
STAGES = ("dense", "sparse", "baseline", "activations", "hpo", "final", "hpo-relu", "stage1", "stage2")
PASSWORD = "Tr0ub4dor-3x7q"  # distinctive, so that any echo of it in output is found


def _cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safs_optuna.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=cwd)


# --------------------------------------------------------------------------- drivers (no server)
@pytest.mark.parametrize(("url", "install"), [
    ("postgresql://alice:Tr0ub4dor-3x7q@127.0.0.1:9/db", "pip install 'safs-optuna[postgres]'"),
    ("postgresql+psycopg2://alice:Tr0ub4dor-3x7q@127.0.0.1:9/db", "pip install 'safs-optuna[postgres]'"),
    ("postgresql+psycopg://alice:Tr0ub4dor-3x7q@127.0.0.1:9/db", "pip install 'psycopg[binary]'"),
])
def test_missing_driver_names_what_to_install(monkeypatch, url, install):
    for module in ("psycopg2", "psycopg"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    with pytest.raises(StorageError) as err:
        make_storage(url)
    assert install in str(err.value) and "alice:***@" in str(err.value)
    assert PASSWORD not in str(err.value)


def test_missing_driver_on_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    cfg = write_config(tmp_path)
    url = f"postgresql://alice:{PASSWORD}@127.0.0.1:9/db"
    assert main(["status", str(cfg), "--storage", url]) == 1
    out = capsys.readouterr()
    assert "safs-optuna[postgres]" in out.err and "Traceback" not in out.err
    assert PASSWORD not in out.out + out.err
    assert not list(tmp_path.rglob("*.db"))


# --------------------------------------------------------------------------- a real server
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_make_storage_on_postgres_with_heartbeats(postgres_server):
    url = postgres_server.new_database()
    storage = make_storage(url)
    assert storage.engine.dialect.name == "postgresql"
    assert storage.get_heartbeat_interval() == 5  # heartbeats on, stale trials retried
    callback = getattr(storage, "get_heartbeat_stale_trial_callback", None) or storage.get_failed_trial_callback
    # The retrying callback's newer name, else its name in older Optuna.
    retry = (getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
             or optuna.storages.RetryFailedTrialCallback)
    assert isinstance(callback(), retry)
    study = optuna.create_study(storage=storage, study_name="x", direction="maximize")
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="x", storage=make_storage(url))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 2

    # A worker that stops beating is failed, and its trial re-queued, by any other worker.
    fast = make_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=fast, study_name="beats")
    trial = study.ask({"a": optuna.distributions.FloatDistribution(0, 1)})
    fast.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.WAITING], states
    assert study.trials[1].params == study.trials[0].params


def test_wrong_password_is_a_clear_error_without_the_password(postgres_server, tmp_path):
    url = postgres_server.new_database(user="safs_user", password=PASSWORD)
    wrong = url.replace(PASSWORD, "Wr0ng-Pa55word-zz")
    with pytest.raises(StorageError) as err:
        make_storage(wrong)
    assert "password authentication failed" in str(err.value)
    assert "Wr0ng-Pa55word-zz" not in str(err.value) and redact(wrong) in str(err.value)
    make_storage(url)  # the right one opens


@pytest.mark.slow
def test_pipeline_with_two_workers_on_postgres_then_status_and_report(postgres_server, tmp_path):
    url = postgres_server.new_database(user="safs_user", password=PASSWORD)
    cfg = write_config(tmp_path, trials=2)
    outputs = []

    run = _cli("run", str(cfg), "--workers", "2", "--storage", url, cwd=tmp_path)
    outputs.append(run.stdout + run.stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| tiny (measured) |" in run.stdout
    assert "w1]" in run.stderr and "w2]" in run.stderr  # both workers did work

    status = _cli("status", str(cfg), "--storage", url, cwd=tmp_path)
    outputs.append(status.stdout + status.stderr)
    assert status.returncode == 0, status.stderr[-3000:]
    assert ":***@127.0.0.1" in status.stdout
    for stage in STAGES:
        # a search stage with the tiny budget may have found nothing, and says so
        assert any(line.split()[:2] in ([stage, "done"], [stage, "NOTHING"])
                   for line in status.stdout.splitlines()), stage

    report = _cli("report", str(cfg), "--storage", url, cwd=tmp_path)
    outputs.append(report.stdout + report.stderr)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| tiny (measured) |" in report.stdout and "tiny activations:" in report.stdout

    # The password was never printed by any command.
    assert all(PASSWORD not in out for out in outputs)

    # Every stage's study is in PostgreSQL, with finished trials, and no SQLite file was written.
    storage = make_storage(url)
    assert storage.engine.dialect.name == "postgresql"
    assert set(optuna.get_all_study_names(storage)) == {f"tiny/{s}" for s in STAGES}
    workers = set()
    for stage in STAGES:
        study = optuna.load_study(study_name=f"tiny/{stage}", storage=storage)
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        assert done, stage
        workers |= {t.user_attrs["worker"] for t in done}
    assert workers == {1, 2}
    assert not list(tmp_path.rglob("*.db*")) and not (tmp_path / "tiny.db").exists()
    assert (tmp_path / "tiny.artifacts").is_dir()  # checkpoints stay in the (shared) folder


@pytest.mark.slow
def test_two_workers_wait_out_a_server_restart_and_finish(postgres_server, tmp_path):
    """The server stops for 20 s (the heartbeat grace period) while the workers train: both wait (one line when the outage
    begins, one when it ends, per worker), then go on; the run exits 0 with every budget spent
    exactly, nothing duplicated or left running, no trial failed as stale."""
    url = postgres_server.new_database(user="safs_user", password=PASSWORD)
    cfg = write_config(tmp_path, trials=3)
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", "run", str(cfg), "--workers", "2",
                                 "--storage", url], stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path)
    try:
        deadline = time.time() + 400
        # Both workers are in: one trains the baseline or a candidate while the other waits or trains.
        while time.time() < deadline and not ("w2]" in log.read_text() and "baseline: started" in log.read_text()):
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        postgres_server.stop()
        time.sleep(20)
        postgres_server.start()
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert text.count("connection lost") == 2, text[-4000:]  # one per worker process
    assert text.count("connection back after") == 2, text[-4000:]
    assert PASSWORD not in text and ":***@127.0.0.1" in text

    storage = make_storage(url)
    budgets = {"activations": 3, "hpo": 3, "hpo-relu": 3}
    for stage in STAGES:
        trials = optuna.load_study(study_name=f"tiny/{stage}", storage=storage).get_trials(deepcopy=False)
        states = [t.state for t in trials]
        assert TrialState.RUNNING not in states and TrialState.WAITING not in states, (stage, states)
        # Nothing was taken for a dead worker (a trial asked for beyond the budget fails unrun).
        assert all(t.state != TrialState.FAIL or "beyond_budget" in t.user_attrs for t in trials), (stage, states)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == budgets.get(stage, 1), (stage, states)
        assert len({t.number for t in trials}) == len(trials)
