"""Every code block of the README and of the Getting started page runs, at tiny budgets.

Python blocks run; `safs-optuna` command lines run against a copy of the quick-start config with
tiny budgets (``--set`` overrides); `pip install` lines are checked, not run (the extras they name
exist, the versions they pin are the ones installed here); TOML blocks are validated as configs.
A block of another kind fails the test, so a new block cannot go untested by accident.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import safs_optuna as so

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GETTING_STARTED = ROOT / "docs" / "getting_started.md"
QUICKSTART = "studies/quickstart.toml"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
TINY = {"dense.epochs": 1, "activations.trials": 2, "activations.epochs": 1, "activations.fraction": 0.1,
        "hpo.trials": 1, "hpo.epochs": 1, "hpo.fraction": 0.1, "final.epochs": 1, "ablations": False,
        "threads": 1}
TINY_ARGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={str(value).lower()}")]


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), re.S | re.M)


def section_block(path: Path, heading: str, language: str) -> str:
    return re.search(rf"^#+ {re.escape(heading)}\n.*?^```{language}\n(.*?)^```", path.read_text(),
                     re.S | re.M).group(1)


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: one per line or per ``&&``, comments dropped."""
    out = []
    for line in code.splitlines():
        command: list[str] = []
        for token in shlex.split(line, comments=True) + ["&&"]:
            if token != "&&":
                command.append(token)
            elif command:
                out.append(command)
                command = []
    return out


def _extras() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return set(cfg["options.extras_require"])


def check_pip(args: list[str]) -> None:
    """A `pip install` line: the extras exist, the pinned versions are the installed ones."""
    assert args[:2] == ["pip", "install"], args
    for arg in args[2:]:
        if arg == "-e":
            continue
        local = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
        if local:
            assert set(filter(None, (local.group(1) or "").split(","))) <= _extras(), arg
            continue
        name, version = arg.split("==")
        assert importlib.metadata.version(name) == version, arg


def run_command(args: list[str], cwd: Path, config: Path) -> str:
    """Runs a documented command at tiny budgets; returns its stdout."""
    if args[0] == "pip":
        check_pip(args)
        return ""
    if args[:3] == ["python", "-m", "pytest"] or args[0] == "sphinx-build":
        return ""  # this test itself, and the docs build that tests/test_docs.py runs
    assert args[0] == "safs-optuna", f"a command this test does not know: {args}"
    args = [str(config) if a == QUICKSTART else a for a in args[1:]]
    if args[0] == "dashboard":  # serves until stopped: check that it parses
        from safs_optuna.cli import build_parser

        build_parser().parse_args(args)
        return ""
    if args[0] == "export":
        args[2] = str(cwd / args[2])
    proc = subprocess.run([sys.executable, "-m", "safs_optuna.cli", *args, *TINY_ARGS], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def run_python(code: str, cwd: Path, substitutions: dict[str, str]) -> str:
    for old, new in substitutions.items():
        assert old in code, old
        code = code.replace(old, new)
    script = cwd / "doc_block.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, script.name], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    """A copy of the quick-start config, shared by the README's and the Getting started page's
    commands: the second to run resumes what the first stored, as a reader doing both would."""
    workdir = tmp_path_factory.mktemp("quickstart")
    (workdir / "studies").mkdir()
    config = workdir / QUICKSTART
    config.write_text((ROOT / QUICKSTART).read_text())
    return config


def run_shell_and_python_blocks(path: Path, tmp_path: Path, config: Path) -> list[str]:
    """Runs every block of ``path`` in order; returns the languages run."""
    ran = []
    for language, code in code_blocks(path):
        if language in ("bash", ""):
            for args in commands(code):
                run_command(args, tmp_path, config)
        elif language == "python" and 'so.run("studies/quickstart.toml"' in code:
            out = run_python(code, tmp_path, {'so.run("studies/quickstart.toml"':
                                              f"so.run({str(config)!r}, overrides={TINY!r}"})
            assert "SAFS" in out
        elif language == "text":
            continue
        else:
            continue  # the README's other blocks have tests of their own below
        ran.append(language)
    return ran


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.slow
def test_getting_started_blocks_run(quickstart):
    blocks = code_blocks(GETTING_STARTED)
    assert {language for language, _ in blocks} <= {"bash", "python", "", "text"}, blocks
    ran = run_shell_and_python_blocks(GETTING_STARTED, quickstart.parent.parent, quickstart)
    assert ran.count("python") == 1 and "" in ran  # the Python call and the command-line block
    assert (quickstart.parent.parent / "model.pt2").stat().st_size > 0


@pytest.mark.slow
def test_readme_command_blocks_run(quickstart):
    (quickstart.parent.parent / "model.pt2").unlink(missing_ok=True)
    ran = run_shell_and_python_blocks(README, quickstart.parent.parent, quickstart)
    assert ran.count("bash") == 3 and "" in ran  # install, quick start, docs; the command line
    assert (quickstart.parent.parent / "model.pt2").stat().st_size > 0


def test_readme_config_is_valid(tmp_path):
    """The README's config for your own network is a valid study config (its import paths are
    imported by `run`, not by the config; its checkpoint must exist)."""
    from safs_optuna.config import parse_config

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    (code,) = [code for language, code in code_blocks(README) if language == "toml"]
    (tmp_path / "pruned.pt").write_bytes(b"")
    cfg = parse_config(tomllib.loads(code), tmp_path / "study.toml")
    assert cfg.model.name == "model:make_model" and Path(cfg.sparsity.checkpoint).name == "pruned.pt"


@pytest.mark.slow
def test_readme_own_network_block_runs(tmp_path):
    """The README's `so.run` call, in a copy of examples/your_own_network after its prune.py."""
    import shutil

    project = tmp_path / "your_own_network"
    shutil.copytree(ROOT / "examples" / "your_own_network", project)
    proc = subprocess.run([sys.executable, "prune.py", "--epochs", "1"], cwd=project, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = section_block(README, "Your own network", "python")
    out = run_python(code, project, {'so.run("study.toml"': f'so.run("study.toml", overrides={TINY!r}'})
    assert "your_own_network" in out


def test_readme_numbers_link_to_their_results_file():
    """Every number in the README's table links to a results file that holds it."""
    links = re.findall(r"\[([0-9.]+ ± [0-9.]+|[0-9]+ s)\]\(([^)]+)\)", README.read_text())
    assert len(links) >= 8
    for number, target in links:
        assert number in (ROOT / target).read_text(), (number, target)


def test_readme_links_exist():
    for target in re.findall(r"\]\(([^)#]+)\)", README.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def test_plugin_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    code = re.search(r"## Inside your own Optuna study.*?```python\n(.*?)```", text, re.S).group(1)
    assert "so.LAHCSampler" in code and "so.IncumbentPruner" in code and "so.trial_score" in code
    small = (code.replace("epochs=5", "epochs=1").replace("epochs=2", "epochs=1")
             .replace("n_trials=20", "n_trials=3").replace('so.data.load("quickstart")',
                                                            'so.data.load("quickstart").search_subset(0.1)'))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    torch.manual_seed(0)
    namespace = {"my_model": so.build_model("lenet5")}
    exec(compile(small, "README.md", "exec"), namespace)
    study = namespace["study"]
    assert len(study.trials) == 3
    assert set(study.trials[0].params.values()) == {"relu"}
    assert set(namespace["space"].decode(study.best_params)) == set(so.sites(namespace["model"]))
