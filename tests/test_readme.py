"""The README's plugin example runs as written (with smaller budgets and a temporary storage)."""

import re
from pathlib import Path

import torch

import safs_optuna as so

README = Path(__file__).resolve().parent.parent / "README.md"


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
