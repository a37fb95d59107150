"""benchmarks/bench_args.py: which data a benchmark runs on, and the names it gives it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_args  # noqa: E402


def test_an_idx_folder_is_named_by_the_folder_in_a_form_study_names_take(tmp_path):
    folder = tmp_path / "k mnist+v2"
    folder.mkdir()
    label, overrides = bench_args.dataset_overrides(f"idx:{folder}", None)
    assert label == "k_mnist_v2"
    assert overrides == [f'data.name="idx:{folder}"']


@pytest.mark.parametrize("dataset, says", [("kmnist", "valid: quickstart, fashion_mnist, idx:<folder>"),
                                           ("idx:/no/such/folder", "is not a folder")])
def test_an_unknown_dataset_stops_before_any_run(dataset, says):
    # Not silently Fashion-MNIST under another name.
    with pytest.raises(SystemExit, match=says):
        bench_args.dataset_overrides(dataset, None)


def test_the_quickstart_data_needs_nothing_installed():
    assert bench_args.dataset_overrides("quickstart", None) == ("quickstart", ['data.name="quickstart"'])
