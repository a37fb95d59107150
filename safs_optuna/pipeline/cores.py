"""Idle workers lend their torch threads to the workers of the same study that have work.

A study's stages do not always keep every worker busy: dense training, the baseline and the final
fine-tune run once, on one worker, while the others wait for their results. On one machine the
waiting workers' cores then sit idle. Here a waiting worker leaves a marker file saying how many
threads it owns; a working worker claims such markers (an atomic rename, so no two claim the same
one) and trains with its own threads plus the claimed ones. A lender that finds work again takes
its marker back (deletes it); the borrower notices within :data:`REFRESH_SECONDS` and drops to
its own threads, so the two share the cores again after at most a fraction of a second.

The pool is per study and per machine (a folder in the system's temp dir, named by a hash of the
storage URL and the study name): independent studies never lend to each other, so a study run by
one worker trains with a fixed number of threads and gives the same numbers every time. Markers of
dead processes are cleared by whoever meets them. Lending needs POSIX process checks; elsewhere a
worker keeps its own threads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["CorePool", "REFRESH_SECONDS", "usable_cores"]

REFRESH_SECONDS = 0.25
"""How often a working worker looks for lent threads, and notices a lender taking its back."""

_IDLE = "idle"
_LENT = "lent-"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _idle_name(pid: int, threads: int) -> str:
    """The marker of a worker that offers its threads."""
    return f"{pid}.{threads}.{_IDLE}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class CorePool:
    """This worker's side of a study's pool of lent threads.

    Args:
        key: What identifies the study across workers (e.g. its storage URL and name).
        threads: The torch threads this worker owns (what it trains with when nobody lends).
        root: The folder of pools; default: ``safs-optuna-cores-<uid>`` in the temp dir.
        enabled: False keeps the worker on its own threads (no markers, no claims).
    """

    def __init__(self, key: str, threads: int, root: Path | None = None, enabled: bool = True) -> None:
        self.threads = max(1, int(threads))
        self.enabled = enabled and os.name == "posix"
        uid = os.getuid() if hasattr(os, "getuid") else 0
        root = root or Path(tempfile.gettempdir()) / f"safs-optuna-cores-{uid}"
        self.dir = root / hashlib.sha256(key.encode()).hexdigest()[:16]
        self.pid = os.getpid()
        self._claimed: dict[int, int] = {}  # lender pid -> its threads
        self._idle = False
        self._next_look = 0.0
        self._current = self.threads
        self._cores = usable_cores()  # the affinity a worker starts with; it does not change

    # ----------------------------------------------------------------- a waiting worker
    def idle(self) -> None:
        """Offer this worker's threads (it has nothing to do); a no-op when already offered."""
        self.release()
        if not self.enabled or self._idle:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / _idle_name(self.pid, self.threads)).touch()
        except OSError:
            return  # no writable temp dir: nothing is lent, nothing breaks
        self._idle = True

    def busy(self) -> None:
        """Take this worker's threads back (it starts work): delete its marker, lent or not."""
        if not self._idle:
            return
        self._idle = False
        # A borrower may rename the marker between the scan and the unlink; the renamed one then
        # shows in the next scan (a rename is atomic: the marker is always under one name).
        for _ in range(10):
            markers = self._markers(self.pid)
            if not markers:
                return
            for path in markers:
                path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- a working worker
    def refresh(self, force: bool = False) -> int:
        """Claim offered threads and drop those taken back; set torch's threads to own + claimed.

        Cheap between looks (a clock read); call it often (every training step). Returns the
        threads in use.
        """
        if not self.enabled:
            return self._current
        now = time.monotonic()
        if not force and now < self._next_look:
            return self._current
        self._next_look = now + REFRESH_SECONDS
        self.busy()
        # Lenders that took their threads back (or died) no longer lend.
        for pid in list(self._claimed):
            if not (self.dir / self._lent_name(pid, self._claimed[pid])).exists() or not _alive(pid):
                del self._claimed[pid]
        room = self._cores - self.threads - sum(self._claimed.values())
        for path in self._scan() if room > 0 else []:
            pid, threads, state = self._parse(path)
            if pid is None or pid == self.pid:
                continue
            if not _alive(pid):
                path.unlink(missing_ok=True)
                continue
            if state.startswith(_LENT):
                borrower = int(state[len(_LENT):]) if state[len(_LENT):].isdigit() else -1
                if borrower != self.pid and not _alive(borrower):  # a dead borrower's claim
                    self._rename(path, self.dir / _idle_name(pid, threads))
                continue
            if threads <= room and self._rename(path, self.dir / self._lent_name(pid, threads)):
                self._claimed[pid] = threads
                room -= threads
        self._set(self.threads + sum(self._claimed.values()))
        return self._current

    def release(self) -> None:
        """Give claimed threads back to their lenders (this worker stops working)."""
        for pid, threads in self._claimed.items():
            self._rename(self.dir / self._lent_name(pid, threads), self.dir / _idle_name(pid, threads))
        self._claimed.clear()
        self._set(self.threads)

    def close(self) -> None:
        """Leave the pool: give back what was claimed, take back what was offered."""
        self.release()
        self.busy()

    # ----------------------------------------------------------------- plumbing
    def _set(self, threads: int) -> None:
        if threads != self._current:
            torch.set_num_threads(threads)
            self._current = threads

    def _lent_name(self, pid: int, threads: int) -> str:
        return f"{pid}.{threads}.{_LENT}{self.pid}"

    def _scan(self) -> list[Path]:
        try:
            return sorted(self.dir.iterdir())
        except OSError:
            return []

    def _markers(self, pid: int) -> list[Path]:
        return [p for p in self._scan() if p.name.startswith(f"{pid}.")]

    @staticmethod
    def _parse(path: Path) -> tuple[int | None, int, str]:
        pid, _, rest = path.name.partition(".")
        threads, _, state = rest.partition(".")
        if not (pid.isdigit() and threads.isdigit()):
            return None, 0, ""
        return int(pid), int(threads), state

    @staticmethod
    def _rename(src: Path, dst: Path) -> bool:
        try:
            src.rename(dst)  # atomic: of two workers claiming one marker, one wins
        except OSError:
            return False
        return True
