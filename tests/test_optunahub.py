"""The OptunaHub package (package/samplers/lahc): laid out as the registry wants, its README's
header passes the registry's check, it loads with optunahub, and its example runs a study with
LAHCSampler."""

from __future__ import annotations

import configparser
import math
import re
import runpy
import shutil
from pathlib import Path

import optuna
import optunahub
import pytest
import yaml

from safs_optuna.samplers.lahc import LAHCSampler


ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "package"
PACKAGE = REGISTRY / "samplers" / "lahc"
FRONT_MATTER = ("author", "title", "description", "tags", "optuna_versions", "license")
# The tag the registry's template asks of a package in each category folder.
CATEGORY_TAG = {"samplers": "sampler", "pruners": "pruner", "visualization": "visualization"}


def front_matter(readme: str) -> dict | None:
    """The YAML between the ``---`` lines that open a README, as python-frontmatter reads it."""
    match = re.match(r"---\s*\n(.*?)\n---\s*\n", readme, re.DOTALL)
    return None if match is None else (yaml.safe_load(match.group(1)) or {})


def header_problems(readme: str, category: str) -> list[str]:
    """What optunahub-registry would refuse in a package README's front matter (empty if nothing).

    The first loop is the registry's own CI check (``optunahub-registry/header_confirm.py`` on its
    main branch): every key present and neither empty nor null. The rest are the rules that its
    ``template/README.md`` states and an earlier version of that check enforced: strings and lists
    of strings, the category's tag, and the MIT License.
    """
    meta = front_matter(readme)
    if meta is None:
        return ["no front matter between '---' lines at the top"]
    problems = []
    for key in FRONT_MATTER:
        if key not in meta:
            problems.append(f"{key} is not found")
        elif meta[key] == "" or meta[key] is None:
            problems.append(f"{key} is empty")
    if problems:
        return problems
    for key in ("author", "title", "description", "license"):
        if not isinstance(meta[key], str):
            problems.append(f"{key} is not a string")
    for key in ("tags", "optuna_versions"):
        if not isinstance(meta[key], list) or not all(isinstance(v, str) for v in meta[key]):
            problems.append(f"{key} is not a list of strings")
    tag = CATEGORY_TAG.get(category)
    if tag is not None and tag not in meta["tags"]:
        problems.append(f"{tag} tag must be in tags")
    if meta["license"] != "MIT License":
        problems.append("license must be 'MIT License'")
    return problems


def test_package_has_the_files_the_registry_wants():
    for name in ("__init__.py", "README.md", "LICENSE", "example.py", "requirements.txt"):
        assert (PACKAGE / name).is_file(), name
    assert header_problems((PACKAGE / "README.md").read_text(), "samplers") == []
    assert (PACKAGE / "LICENSE").read_text().startswith("MIT License")
    assert "LAHCSampler" in (PACKAGE / "README.md").read_text().split("---\n", 2)[2]
    assert "safs-optuna" in (PACKAGE / "requirements.txt").read_text().split()


GOOD = """---
author: A
title: T
description: D
tags: [sampler, local search]
optuna_versions: [4.0.0, 5.1.0]
license: MIT License
---
body
"""


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("author: A\n", ""), "author is not found"),
        (("---\nauthor", "author"), "no front matter between '---' lines at the top"),
        (("title: T", "title:"), "title is empty"),
        (("[4.0.0, 5.1.0]", "4.0.0"), "optuna_versions is not a list of strings"),
        (("[4.0.0, 5.1.0]", "[4.0, 5.1]"), "optuna_versions is not a list of strings"),
        (("[sampler, local search]", "[local search]"), "sampler tag must be in tags"),
        (("MIT License", "MIT"), "license must be 'MIT License'"),
    ],
)
def test_the_header_check_refuses_what_the_registry_refuses(change, problem):
    assert header_problems(GOOD, "samplers") == []
    assert problem in header_problems(GOOD.replace(*change), "samplers")


def test_optuna_versions_lists_the_optuna_that_runs_the_example():
    # CI runs this file on the newest Optuna and again on the oldest that setup.cfg admits, so
    # each of them must be listed, and the oldest listed must be that lower bound.
    listed = front_matter((PACKAGE / "README.md").read_text())["optuna_versions"]
    assert optuna.__version__ in listed, (
        f"Optuna {optuna.__version__} runs the package's example here, but "
        f"package/samplers/lahc/README.md lists optuna_versions {listed}"
    )
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lower = re.search(r"^optuna>=([\d.]+)", setup["options"]["install_requires"], re.MULTILINE)
    assert lower is not None
    oldest = min(listed, key=lambda v: tuple(int(p) for p in v.split(".")))
    assert oldest.startswith(lower.group(1) + "."), (oldest, lower.group(1))


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
