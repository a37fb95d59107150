"""benchmarks/bench_args.py: which data a benchmark runs on, and the names it gives it."""

from __future__ import annotations

import sys

import pytest

import bench_args


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


def test_the_stated_command_leaves_out_what_does_not_change_the_numbers(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sparsity_sweep.py", "--jobs", "4", "--seeds", "0,1", "--finished-only"])
    assert bench_args.command("sparsity_sweep.py") == "python benchmarks/sparsity_sweep.py --seeds 0,1"


def test_a_results_files_plot_does_not_repeat_the_dataset(tmp_path):
    assert bench_args.plot_path(tmp_path / "sweep_fashion_mnist.md", "fashion_mnist").name == "sweep_fashion_mnist.svg"
    assert bench_args.plot_path(tmp_path / "sweep.md", "quickstart").name == "sweep_quickstart.svg"
