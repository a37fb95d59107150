"""``kill -9`` at random moments in every stage, then a run to the end: exact trial counts.

A worker runs in a child process with a short heartbeat (1 s, grace 2 s) so that each resume
takes seconds; the kills come at a random moment after a trial of the targeted stage started.
"""

from __future__ import annotations

import os
import random
import sqlite3
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna.config import load_config
from safs_optuna.storage import MAX_RETRY

from ._tiny import write_config

pytestmark = pytest.mark.slow

WORKER = """
import sys
from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline, work_all
work_all([Pipeline(load_config(sys.argv[1]), worker=1, heartbeat_interval=1, grace_period=2)], poll=0.2)
"""
ONCE = ("dense", "sparse", "baseline", "final", "stage1", "stage2")
SEARCH = {"activations": 4, "hpo": 3, "hpo-relu": 3}
KILLS = 12  # at most one per trial: every kill waits until a trial finished since the last one


def _trials(cfg, stage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=f"{cfg.name}/{stage}", storage=cfg.storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def _progress(db: str) -> tuple[int, dict[int, str]]:
    """Finished trials of every stage, and the running ones (trial id: stage), read directly."""
    if not os.path.exists(db):
        return 0, {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT t.trial_id, t.state, s.study_name FROM trials t "
                           "JOIN studies s ON s.study_id = t.study_id").fetchall()
    except sqlite3.OperationalError:  # no schema yet
        return 0, {}
    finally:
        con.close()
    finished = sum(state in ("COMPLETE", "PRUNED") for _, state, _ in rows)
    return finished, {tid: name.rsplit("/", 1)[1] for tid, state, name in rows if state == "RUNNING"}


def _slower(path):
    """Search trials on half the training split (about a second each), so kills land inside them."""
    path.write_text(path.read_text().replace("fraction = 0.1", "fraction = 0.5"))
    return path


def test_random_kills_end_with_exact_counts_and_nothing_trained_twice(tmp_path):
    path = _slower(write_config(tmp_path, trials=SEARCH["activations"]))
    cfg = load_config(path)
    db = str(tmp_path / "tiny.db")
    assert cfg.storage == f"sqlite:///{db}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(int(os.environ.get("SAFS_KILL_SEED", "0")))
    kills: list[str] = []
    while len(kills) < KILLS:
        finished, left_running = _progress(db)  # trials the killed worker left RUNNING
        child = subprocess.Popen([sys.executable, "-c", WORKER, str(path)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while True:
            while child.poll() is None and time.time() < deadline:
                done, running = _progress(db)
                started = {tid: stage for tid, stage in running.items() if tid not in left_running}
                if started and (done > finished or not kills):
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.8))  # somewhere inside the trial, or just after it
            if child.poll() is not None:  # the work was done before the kill
                break
            stages = sorted({stage for tid, stage in _progress(db)[1].items() if tid not in left_running})
            stages = stages or ["between trials"]
            # A once-stage whose worker died MAX_RETRY times is given up by design (a stage that
            # kills its worker every time); this campaign is about recovery, so it lets such a
            # stage's next attempt run and kills a later trial instead.
            if not any(stage in ONCE and sum(stage in k.split("+") for k in kills) >= MAX_RETRY
                       for stage in stages):
                break
            finished = _progress(db)[0]
        if child.poll() is not None:
            break
        child.send_signal(signal.SIGKILL)
        kills.append("+".join(stages))
        _, err = child.communicate(timeout=120)
        assert child.returncode == -signal.SIGKILL, err[-3000:]

    final = subprocess.run([sys.executable, "-c", WORKER, str(path)], env=env, capture_output=True,
                           text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert len(kills) >= 10, kills
    print("kills in:", kills)

    for stage in ONCE:  # trained once: one COMPLETE; a killed attempt is FAIL, never a second run
        states = [t.state for t in _trials(cfg, stage)]
        assert states.count(TrialState.COMPLETE) == 1, (stage, states)
        assert set(states) <= {TrialState.COMPLETE, TrialState.FAIL}, (stage, states)
    for stage, budget in SEARCH.items():  # exactly the budget finished; nothing left behind
        states = [t.state for t in _trials(cfg, stage)]
        finished = [s for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == budget, (stage, states)
        assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}, (stage, states)
    # A killed search trial is retried with what it had drawn (Optuna's retry), not a new draw.
    for stage in SEARCH:
        trials = _trials(cfg, stage)
        for failed in (t for t in trials if t.state == TrialState.FAIL):
            retries = [t for t in trials if (t.system_attrs.get("retry_history") or [None])[-1] == failed.number]
            assert len(retries) == 1, (stage, failed.number)
            assert failed.params.items() <= retries[0].params.items(), (stage, failed.number)


def _worker(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WORKER, str(path)], capture_output=True, text=True,
                          timeout=600)


def test_a_once_stage_requeued_twice_after_one_failure_is_trained_once(tmp_path):
    path = write_config(tmp_path)
    assert _worker(path).returncode == 0
    cfg = load_config(path)
    study = optuna.load_study(study_name="tiny/dense", storage=cfg.storage)
    # Two workers re-queue the stage after the same failure (trial 0), at the same moment.
    study.enqueue_trial({}, user_attrs={"requeued_after": 0})
    study.enqueue_trial({}, user_attrs={"requeued_after": 0})
    proc = _worker(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, again, duplicate = _trials(cfg, "dense")
    assert [t.state for t in (first, again, duplicate)] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                                            TrialState.FAIL]
    assert duplicate.user_attrs["duplicate_of"] == again.number and "error" not in duplicate.user_attrs


def test_a_once_stage_whose_dead_worker_was_not_requeued_is_requeued(tmp_path):
    path = write_config(tmp_path)
    cfg = load_config(path)
    study = optuna.create_study(study_name="tiny/dense", storage=cfg.storage, direction="maximize")
    # A worker died after failing the trial and before Optuna's retry re-queued it.
    study.enqueue_trial({})
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    proc = _worker(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dense: the trial of a worker that died was not re-queued; re-queued it" in proc.stderr
    assert [t.state for t in _trials(cfg, "dense")] == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_once_stage_whose_worker_keeps_dying_is_reported(tmp_path):
    path = write_config(tmp_path)
    cfg = load_config(path)
    study = optuna.create_study(study_name="tiny/dense", storage=cfg.storage, direction="maximize")
    for _ in range(4):  # killed on each of Optuna's three retries too
        study.enqueue_trial({})
        study.tell(study.ask(), state=TrialState.FAIL)
    proc = _worker(path)
    assert proc.returncode == 1
    assert "stage 'dense' failed: its worker died 4 times (killed, or out of memory?)" in proc.stderr
