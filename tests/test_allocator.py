"""Workers keep freed tensor memory for reuse instead of page-faulting on fresh memory."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from safs_optuna.allocator import retain_freed_memory


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL(None).gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _glibc(), reason="the setting is glibc's malloc's")

# A 16 MiB tensor, allocated and freed: where does malloc take it from, and does it keep it?
# (mallinfo2: hblkhd = bytes in mmapped blocks, fordblks = free bytes kept in the heap.)
_WHERE = textwrap.dedent("""
    import ctypes, sys, torch
    from safs_optuna.allocator import retain_freed_memory
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "keep":
        assert retain_freed_memory() and retain_freed_memory()  # idempotent
    before = libc.mallinfo2()
    t = torch.ones(4 * 2**20)
    during = libc.mallinfo2()
    del t
    after = libc.mallinfo2()
    print((during.hblkhd - before.hblkhd) >> 20, after.fordblks >> 20)
""")


def _where(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _WHERE, mode], capture_output=True, text=True, check=True,
                         timeout=120)
    mapped, kept = map(int, out.stdout.split())
    return mapped, kept


@pytest.mark.skipif(not (_glibc() and hasattr(ctypes.CDLL(None), "mallinfo2")),
                    reason="mallinfo2 is glibc >= 2.33")
def test_a_worker_keeps_freed_tensor_memory_in_its_heap() -> None:
    # glibc's defaults: fresh mmapped pages for the tensor, handed back when it is freed (the
    # page faults of every training step). Kept: from the heap, and still there once freed.
    assert _where("default") == (16, pytest.approx(0, abs=4))
    mapped, kept = _where("keep")
    assert mapped == 0 and kept >= 16


def test_the_setting_reports_itself_in_effect() -> None:
    assert retain_freed_memory() is True
