"""The OptunaHub package (package/samplers/lahc): laid out as the registry wants, loadable with
optunahub, and its example runs a study with LAHCSampler."""

from __future__ import annotations

import math
import runpy
import shutil
from pathlib import Path

import optuna
import optunahub
import pytest
import yaml

from safs_optuna.samplers.lahc import LAHCSampler


REGISTRY = Path(__file__).resolve().parents[1] / "package"
PACKAGE = REGISTRY / "samplers" / "lahc"
FRONT_MATTER = ("author", "title", "description", "tags", "optuna_versions", "license")


def test_package_has_the_files_the_registry_wants():
    for name in ("__init__.py", "README.md", "LICENSE", "example.py", "requirements.txt"):
        assert (PACKAGE / name).is_file(), name
    _, front, body = (PACKAGE / "README.md").read_text().split("---\n", 2)
    meta = yaml.safe_load(front)
    assert set(FRONT_MATTER) <= set(meta), sorted(set(FRONT_MATTER) - set(meta))
    assert "sampler" in meta["tags"]  # the registry's rule for package/samplers/
    assert all(isinstance(v, str) for v in (meta["author"], meta["title"], meta["description"]))
    assert meta["license"] == "MIT License"
    assert (PACKAGE / "LICENSE").read_text().startswith("MIT License")
    assert "LAHCSampler" in body
    assert "safs-optuna" in (PACKAGE / "requirements.txt").read_text().split()


def test_load_local_module_gives_the_projects_sampler():
    module = optunahub.load_local_module(package="samplers/lahc", registry_root=str(REGISTRY))
    assert module.LAHCSampler is LAHCSampler  # re-exported, not a second copy


def test_example_runs_a_study_with_lahc(tmp_path, monkeypatch, capsys):
    # optunahub.load_module("samplers/lahc") reads its cache before the network; put the package
    # where the cache keeps the official registry's packages (optunahub >= 0.3).
    cached = tmp_path / "github.com" / "optuna" / "optunahub-registry" / "main" / "package"
    shutil.copytree(PACKAGE, cached / "samplers" / "lahc")
    monkeypatch.setenv("OPTUNAHUB_CACHE_HOME", str(tmp_path))
    verbosity = optuna.logging.get_verbosity()
    try:
        example = runpy.run_path(str(PACKAGE / "example.py"), run_name="__main__")
    finally:
        optuna.logging.set_verbosity(verbosity)

    study = example["study"]
    assert type(study.sampler).__name__ == "LAHCSampler"
    assert type(study.sampler).__module__ == LAHCSampler.__module__
    trials = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == len(study.trials) >= 10
    # LAHC's start: "relu" everywhere and the middle of the (log) learning-rate range.
    first = trials[0].params
    assert [first[f"layer{i}.act"] for i in range(3)] == ["relu"] * 3
    assert first["optimizer.lr"] == pytest.approx(math.sqrt(1e-4 * 1e-1))
    # It climbed: no configuration twice, and the best beats the start.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
    assert study.best_value > trials[0].value
    assert "Best params:" in capsys.readouterr().out
