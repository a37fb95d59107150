"""The command line: help, version, and user mistakes that fail cleanly (exit 2, nothing written)."""

import subprocess
import sys

import pytest

from safs_optuna import __version__
from safs_optuna.cli import main

from ._tiny import write_config


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    for command in ("run", "worker", "status", "report", "dashboard", "export"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "config" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run(["safs-optuna", "--help"], capture_output=True, text=True, check=True).stdout
    assert "run" in out and "export" in out


@pytest.mark.parametrize(
    "bad, named",
    [
        (('name = "lenet5"', 'name = "lenet6"'), ["lenet6", "lenet5", "resnet18"]),
        (("trials = 3", "trails = 3"), ["trails", "trials"]),
        (('preset = "safs"', 'preset = "safs"\nsampler = "annealing"'), ["annealing", "lahc"]),
        (("ratio = 0.99", "ratio = 1.5"), ["ratio", "1.5"]),
    ],
)
def test_config_error_exits_2_and_writes_no_database(tmp_path, capsys, bad, named):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(*bad, 1))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    for word in named:
        assert word in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.db")) and not list(tmp_path.glob("*.artifacts"))


def test_bad_override_and_missing_file(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["run", str(path), "--set", "activations.epochs=0"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["run", str(path), "--set", "nonsense"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.db"))


def test_status_before_any_run_says_how_to_start(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["status", str(path)]) == 1
    assert "safs-optuna run" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.parametrize("command", ["status", "report", "export"])
def test_reading_a_study_with_another_config_names_the_keys(tmp_path, capsys, command):
    from safs_optuna.config import load_config
    from safs_optuna.pipeline import Pipeline

    path = write_config(tmp_path)
    Pipeline(load_config(path)).studies.prepare()  # stored with scope "layer"
    # Read with another allocation, it would label the results (and build the model) wrongly.
    extra = [str(tmp_path / "model.pt2")] if command == "export" else []
    assert main([command, str(path), *extra, "--set", 'sparsity.scope="lamp"']) == 1
    err = capsys.readouterr().err
    assert "sparsity.scope: stored 'layer', config 'lamp'" in err
    assert "config it was made with" in err and "Traceback" not in err
    assert not (tmp_path / "model.pt2").exists()


def test_status_reads_a_study_with_the_config_it_was_made_with(tmp_path, capsys):
    from safs_optuna.config import load_config
    from safs_optuna.pipeline import Pipeline

    path = write_config(tmp_path)
    Pipeline(load_config(path)).studies.prepare()
    # A runtime key and a bigger budget do not make another study.
    assert main(["status", str(path), "--set", "activations.trials=9", "--set", "threads=2"]) == 0
    assert "activations" in capsys.readouterr().out


def test_output_cut_short_by_its_reader_ends_quietly(tmp_path):
    from safs_optuna.config import load_config
    from safs_optuna.pipeline import Pipeline

    path = write_config(tmp_path)
    Pipeline(load_config(path)).studies.prepare()
    # `status | head -1`: the reader is gone before the density table is printed.
    proc = subprocess.run(f"{sys.executable} -m safs_optuna.cli status {path} | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("tiny")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "safs_optuna.cli", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert __version__ in out


def test_a_worker_imports_neither_torchvision_nor_the_compiler():
    # Every worker process imports the CLI and the pipeline; torchvision.models pulls in
    # torch._dynamo, over a second of each worker's start. Only EfficientNet-B0 needs it.
    code = ("import sys, safs_optuna.cli, safs_optuna.pipeline, safs_optuna.models; "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_device_is_a_clean_usage_error(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["run", str(path), "--device", "cuda:99"]) == 2  # no machine has 100 GPUs
    err = capsys.readouterr().err
    assert "cuda:99" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.db"))


def test_missing_dataset_is_a_clean_error_and_writes_nothing(tmp_path, capsys):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('name = "quickstart"', f'name = "cifar10"\nroot = "{tmp_path}"'))
    assert main(["run", str(path)]) == 2  # as for a config mistake: the fix is in the config or that folder
    err = capsys.readouterr().err
    assert "cifar10" in err and str(tmp_path) in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.db"))
