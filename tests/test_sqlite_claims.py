"""Several processes claiming one queued trial on SQLite: exactly one may win.

Plain Optuna on SQLite lets all of them win (SQLite ignores SELECT ... FOR UPDATE), which
would run a "once" stage or a retried trial several times; make_storage prevents that.
"""

import multiprocessing as mp

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna.storage import make_storage

ROUNDS, PROCS = 5, 4


def _claim(url: str, trial_ids: list[int], barrier, results) -> None:
    storage = make_storage(url)
    for trial_id in trial_ids:
        barrier.wait()  # all processes hit the database at the same moment
        try:
            won = storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            won = False
        results.put((trial_id, won))


@pytest.mark.slow
def test_one_waiting_trial_is_claimed_by_exactly_one_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    study = optuna.create_study(storage=make_storage(url))
    for _ in range(ROUNDS):
        study.enqueue_trial({})
    ids = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCS), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(url, ids, barrier, results)) for _ in range(PROCS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(ROUNDS * PROCS)]
    for p in procs:
        p.join(timeout=60)
    for trial_id in ids:
        wins = [won for tid, won in outcomes if tid == trial_id]
        assert len(wins) == PROCS and wins.count(True) == 1, (trial_id, wins)
