"""The example projects in examples/ run end to end, as their README says, at tiny budgets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
TINY = ["--set", "activations.trials=2", "--set", "activations.epochs=1", "--set", "activations.fraction=0.1",
        "--set", "hpo.trials=1", "--set", "hpo.epochs=1", "--set", "hpo.fraction=0.1", "--set", "final.epochs=1",
        "--set", "ablations=false", "--set", "threads=1"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=ENV, timeout=900)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def test_your_own_network_prunes_with_torch_and_runs_the_pipeline(tmp_path):
    project = tmp_path / "your_own_network"
    shutil.copytree(EXAMPLES / "your_own_network", project)
    pruned = _run(sys.executable, "prune.py", "--epochs", "1", cwd=project)
    assert "pruned 99% of the weights" in pruned.stdout and (project / "pruned.pt").is_file()

    cli = [sys.executable, "-m", "safs_optuna.cli"]
    run = _run(*cli, "run", "study.toml", "--workers", "2", *TINY, cwd=project)
    assert "| your_own_network (measured) |" in run.stdout
    status = _run(*cli, "status", "study.toml", *TINY, cwd=project)
    assert "of the pruned checkpoint pruned.pt" in status.stdout
    _run(*cli, "export", "study.toml", "model.pt2", *TINY, cwd=project)
    assert (project / "model.pt2").stat().st_size > 0
