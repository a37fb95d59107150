"""The sampler needs only Optuna and NumPy: it imports, and runs a study, where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# torch (and torchvision) made unimportable, as in an environment without them.
BLOCK = "import sys\nfor name in ('torch', 'torchvision'):\n    sys.modules[name] = None\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_the_samplers_pruners_and_ranking_import_and_run_without_torch():
    proc = _python(
        "import optuna\n"
        "import safs_optuna as so\n"
        "from safs_optuna.samplers import LAHCSampler, PositionSeededSampler\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "study = optuna.create_study(direction='maximize', sampler=so.LAHCSampler(seed=0, score=so.trial_score),\n"
        "                            pruner=so.IncumbentPruner())\n"
        "study.optimize(lambda t: t.suggest_float('x', -1, 1) ** 2, n_trials=5)\n"
        "assert len(study.trials) == 5\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n")
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_optunahub_package_imports_without_torch():
    package = ROOT / "package" / "samplers" / "lahc"
    proc = _python(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('lahc_package', {str(package / '__init__.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.LAHCSampler.__name__)\n")
    assert proc.stdout.strip() == "LAHCSampler", proc.stderr[-2000:]


def test_a_piece_that_needs_torch_says_so_where_it_is_missing():
    proc = _python("import safs_optuna as so\nso.fit\n")
    assert proc.returncode != 0 and "torch" in proc.stderr
