"""Idle workers lend their torch threads to working ones (safs_optuna.pipeline.cores)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from safs_optuna.pipeline import cores as cores_mod
from safs_optuna.pipeline.cores import CorePool

pytestmark = pytest.mark.skipif(os.name != "posix", reason="lending needs POSIX process checks")


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(cores_mod, "usable_cores", lambda: 8)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def other_process():
    """A live process that is not this one: its pid stands for another worker's."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _pool(tmp_path, threads=1, pid=None, key="study"):
    pool = CorePool(key, threads, root=tmp_path)
    if pid is not None:
        pool.pid = pid
    torch.set_num_threads(threads)
    return pool


def _offer(pool_dir, pid, threads):
    pool_dir.mkdir(parents=True, exist_ok=True)
    (pool_dir / f"{pid}.{threads}.idle").touch()


def test_a_waiting_worker_offers_its_threads_and_takes_them_back(tmp_path):
    pool = _pool(tmp_path, threads=3)
    pool.idle()
    assert [p.name for p in pool.dir.iterdir()] == [f"{os.getpid()}.3.idle"]
    pool.idle()  # already offered: still one marker
    assert len(list(pool.dir.iterdir())) == 1
    pool.busy()
    assert list(pool.dir.iterdir()) == []


def test_a_working_worker_borrows_offered_threads_and_drops_them_when_taken_back(tmp_path, other_process):
    pool = _pool(tmp_path, threads=1)
    _offer(pool.dir, other_process, 2)
    assert pool.refresh(force=True) == 3
    assert torch.get_num_threads() == 3
    assert [p.name for p in pool.dir.iterdir()] == [f"{other_process}.2.lent-{os.getpid()}"]
    # Between looks the count stays (a clock read only) ...
    (pool.dir / f"{other_process}.2.lent-{os.getpid()}").unlink()  # the lender finds work
    assert pool.refresh() == 3
    # ... and the next look sees the lender took its threads back.
    assert pool.refresh(force=True) == 1
    assert torch.get_num_threads() == 1


def test_released_threads_go_back_to_their_lender(tmp_path, other_process):
    pool = _pool(tmp_path, threads=1)
    _offer(pool.dir, other_process, 2)
    pool.refresh(force=True)
    pool.release()
    assert torch.get_num_threads() == 1
    assert [p.name for p in pool.dir.iterdir()] == [f"{other_process}.2.idle"]


def test_a_lender_that_finds_work_deletes_its_claimed_marker(tmp_path, other_process):
    lender = _pool(tmp_path, threads=2)
    lender.idle()
    borrower = _pool(tmp_path, threads=1, pid=other_process)
    assert borrower.refresh(force=True) == 3
    lender.busy()
    assert list(lender.dir.iterdir()) == []


def test_one_offer_is_claimed_by_one_borrower(tmp_path, other_process):
    _offer(tmp_path / CorePool("study", 1, root=tmp_path).dir.name, other_process, 2)
    first = _pool(tmp_path, threads=1)
    second = _pool(tmp_path, threads=1, pid=os.getppid())  # another live pid
    assert first.refresh(force=True) == 3
    assert second.refresh(force=True) == 1


def test_offers_beyond_the_cores_are_not_claimed(tmp_path, other_process, monkeypatch):
    monkeypatch.setattr(cores_mod, "usable_cores", lambda: 2)
    pool = _pool(tmp_path, threads=1)
    _offer(pool.dir, other_process, 4)  # more than the one free core
    assert pool.refresh(force=True) == 1
    assert [p.name for p in pool.dir.iterdir()] == [f"{other_process}.4.idle"]


def test_markers_of_dead_processes_are_cleared(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pool = _pool(tmp_path, threads=1)
    _offer(pool.dir, dead.pid, 2)
    assert pool.refresh(force=True) == 1
    assert list(pool.dir.iterdir()) == []


def test_a_dead_borrowers_claim_is_offered_again(tmp_path, other_process):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pool = _pool(tmp_path, threads=1)
    pool.dir.mkdir(parents=True)
    (pool.dir / f"{other_process}.2.lent-{dead.pid}").touch()
    pool.refresh(force=True)  # returns the claim to its lender
    assert pool.refresh(force=True) == 3


def test_studies_do_not_lend_to_each_other(tmp_path, other_process):
    _offer(_pool(tmp_path, key="sqlite:///a.db\ta").dir, other_process, 2)
    assert _pool(tmp_path, key="sqlite:///b.db\tb").refresh(force=True) == 1


def test_a_disabled_pool_keeps_its_own_threads(tmp_path, other_process):
    pool = CorePool("study", 1, root=tmp_path, enabled=False)
    torch.set_num_threads(1)
    _offer(pool.dir, other_process, 2)
    pool.idle()
    assert pool.refresh(force=True) == 1
    assert [p.name for p in pool.dir.iterdir()] == [f"{other_process}.2.idle"]


class _DonePipeline:
    """A pipeline whose stages are all done: work_all sets up the pool and returns."""

    def __init__(self, lend: bool) -> None:
        self.cfg = type("Cfg", (), {"storage": "sqlite:///x.db", "name": "x", "lend_threads": lend})()
        self.stages: list = []
        self.studies = type("Studies", (), {"grace_period": 20})()
        self.cores = None
        self.seen = None

    def step(self):
        self.seen = self.cores
        return [], False

    def log(self, msg: str) -> None:
        pass


@pytest.mark.parametrize("lend", [True, False])
def test_work_all_lends_threads_unless_the_config_says_not(lend):
    from safs_optuna.pipeline import work_all

    pipe = _DonePipeline(lend)
    work_all([pipe])
    assert pipe.seen is not None and pipe.seen.enabled is lend
    assert pipe.cores is None  # left the pool on the way out
