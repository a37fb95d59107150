"""The speed benchmark's reading of its kernel timings (benchmarks/speed.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import speed  # noqa: E402


def _times(**over: float) -> dict[str, float]:
    times = {name: 100.0 for name in speed.KERNELS}
    times.update(over)
    return times


def test_kernel_reading_names_the_kernels_whose_time_does_not_change():
    # exp and log keep their time without PyTorch's vectorized code; the others get 5x slower.
    native = _times(exp=250.0, log=300.0, sigmoid=150.0)
    scalar = {name: 5 * t for name, t in native.items()}
    scalar.update(exp=260.0, log=240.0)  # +4 %, -20 %: the same code
    generic = dict(native, exp=700.0, log=320.0)  # exp slows down without MKL's fast code, log +7 %
    outside, mkl, (fewest, most) = speed.kernel_reading(native, scalar, generic)
    assert outside == ["exp", "log"]
    assert mkl == ["exp"]
    assert (fewest, most) == (pytest.approx(1.0), pytest.approx(3.0))  # passes of 100 µs


def test_kernel_reading_none_outside():
    native = _times()
    scalar = {name: 3 * t for name, t in native.items()}
    outside, mkl, _ = speed.kernel_reading(native, scalar, native)
    assert outside == [] and mkl == []
