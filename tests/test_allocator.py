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

# A new feature-map-sized block while the last is still held, as in a training step: with glibc's
# defaults it page-faults again and again (one block is 294 pages).
_FAULTS = textwrap.dedent("""
    import resource, torch
    from safs_optuna.allocator import retain_freed_memory
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
    a = torch.randn(64, 6, 28, 28)
    for _ in range(3):
        b = a * 2.0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        b = a * 2.0
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def test_a_worker_reuses_freed_memory_without_page_faults() -> None:
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True, timeout=120)
    assert int(out.stdout.strip()) < 30  # fewer than one block's pages in 100 allocations


def test_the_setting_reports_itself_in_effect() -> None:
    assert retain_freed_memory() is True
