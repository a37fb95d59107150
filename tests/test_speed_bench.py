"""The speed benchmark's reading of its kernel timings (benchmarks/speed.py)."""

from __future__ import annotations

import pytest

import speed


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


def test_device_section_times_the_table_and_the_candidate_epochs(monkeypatch):
    """The GPU figures' code path, run on the CPU: every selected tree gets a row beside relu(x),
    and every model an epoch row with its ratio to relu(x)."""
    import argparse

    import gpu_epochs

    monkeypatch.setitem(gpu_epochs.MODELS, "lenet5", (1, 28, 256, 64))  # 4 batches: a time, not a benchmark
    args = argparse.Namespace(device="cpu", trees=["relu(x)", "srs(x)", "max(x, sin(x))"], before=None,
                              repeats=2, steps=1, warmup=0, seed=0, epoch_models=["lenet5"],
                              epoch_tree="add(x, sin(x))")
    text = speed.section_device(args)
    assert text.startswith("## On cpu")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for label in ("relu(x)", "srs(x)", "max(x, sin(x))", "dense torch LeNet-5, nn.ReLU (reference)"):
        cells = rows[label].strip("| ").split(" | ")
        assert float(cells[1]) > 0 and float(cells[2]) > 0, rows[label]
    epoch = rows["lenet5"].strip("| ").split(" | ")
    assert epoch[1:4] == ["1×28×28", "256", "64"]
    relu_s, tree_s, ratio = map(float, epoch[4:])
    rounding = 0.0005 * (1 / relu_s + tree_s / relu_s**2) + 0.005  # the seconds' 3 decimals, the ratio's 2
    assert relu_s > 0 and tree_s > 0 and ratio == pytest.approx(tree_s / relu_s, abs=rounding)
    assert "unary operators above 1.3× relu(x)" in text and "binary trees above 1.6× relu(x)" in text


def test_device_option_names_what_this_machine_has(monkeypatch):
    import argparse

    monkeypatch.setattr(speed.torch.cuda, "is_available", lambda: False)
    with pytest.raises(argparse.ArgumentTypeError, match=r"'cuda'.*no CUDA device.*valid here: cpu"):
        speed._device("cuda")
    with pytest.raises(argparse.ArgumentTypeError, match=r"'gpu' is not a torch device"):
        speed._device("gpu")
    assert speed._device("cpu") == "cpu"


def test_a_partial_run_does_not_overwrite_the_full_table():
    results = speed.ROOT / "benchmarks" / "results"
    assert speed.default_out(list(speed.DEFAULT_SECTIONS)) == results / "speed.md"
    assert speed.default_out(["device"]) == results / "speed_device.md"
    assert speed.default_out(["overhead", "scaling"]) == results / "speed_overhead_scaling.md"
