"""Your own network, data, pruned weights and training loop, piece by piece and through `run`'s checks.

Everything here is written by the test — a model module, an image folder, a dataset with a
transform, a network pruned with plain ``torch.nn.utils.prune`` — never only the built-in names.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import safs_optuna as so
from safs_optuna import cli
from safs_optuna.checkpoint import CheckpointError, load_pruned_weights
from safs_optuna.config import ConfigError, load_config
from safs_optuna.data import as_splits, labels_of, load
from safs_optuna.models import build_model, require_sites
from safs_optuna.sources import SourceError, resolve
from safs_optuna.training import HParams, UserFitError, fit, fit_with

from ._user_project import tiny_config, write_images, write_modules, write_pruned

USER_MODULES = ("netmod", "datamod", "fitmod", "evilmod")


@pytest.fixture(autouse=True)
def fresh_modules():
    """Each test imports the user modules from its own folder: forget them (and the folders) after."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name in USER_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_modules(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- import paths


def test_a_module_beside_the_config_is_found_first(project):
    factory = resolve("netmod:make_net", project, "[model] name")
    assert factory.__module__ == "netmod"
    assert isinstance(factory(3, 1), nn.Module)


@pytest.mark.parametrize("path, words", [
    ("nosuchmod:make", ["no module 'nosuchmod'", "looked in", "sys.path"]),
    ("netmod:nosuch", ["'netmod'", "has no attribute 'nosuch'", "make_net"]),
    ("not a path", ["is not an import path"]),
])
def test_an_import_path_that_cannot_be_resolved_says_why(project, path, words):
    with pytest.raises(SourceError) as err:
        resolve(path, project, "[model] name")
    for word in words:
        assert word in str(err.value)


def test_a_module_that_raises_on_import_is_named(project):
    (project / "evilmod.py").write_text("raise ImportError('needs a GPU library')\n")
    with pytest.raises(SourceError, match="importing 'evilmod' failed: ImportError: needs a GPU library"):
        resolve("evilmod:x", project)


# ----------------------------------------------------------------------------- models


def test_torchvision_resnet18_takes_one_channel_and_every_activation_module_is_a_site():
    model = build_model("torchvision:resnet18", num_classes=10, in_channels=1, image_size=28)
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (7, 7)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    found = require_sites(so.make_searchable(model), "torchvision:resnet18")
    assert found[0] == "relu" and "layer4.1.relu" in found  # one shared module per block: one site


def test_a_timm_model_takes_the_data_s_channels_and_its_modules_are_sites():
    pytest.importorskip("timm", reason="timm is in the test extra; pip install -e '.[test]'")
    model = build_model("timm:resnet10t", num_classes=10, in_channels=1, image_size=28)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert len(require_sites(so.make_searchable(model), "timm:resnet10t")) > 5
    with pytest.raises(SourceError, match="timm could not build it"):
        build_model("timm:no_such_net")


def test_a_torchvision_name_that_does_not_exist_suggests_one():
    with pytest.raises(SourceError, match="torchvision has no model 'resnet19'.*resnet18"):
        build_model("torchvision:resnet19")


def test_a_user_factory_gets_what_it_accepts_and_its_kwargs(project):
    model = build_model("netmod:make_net", num_classes=5, in_channels=1, image_size=12,
                        kwargs={"width": 4}, search_dir=str(project))
    assert model.fc.out_features == 5 and model.stem.out_channels == 4
    with pytest.raises(SourceError, match="unexpected keyword argument 'depth'"):
        build_model("netmod:make_net", kwargs={"depth": 2}, search_dir=str(project))


def test_functional_activations_give_zero_sites_in_one_line(project):
    model = build_model("netmod:make_functional", 3, 1, 12, search_dir=str(project))
    with pytest.raises(SourceError, match=r"0 activation sites found.*F\.relu"):
        require_sites(so.make_searchable(model), "netmod:make_functional")


# ----------------------------------------------------------------------------- data


def test_an_image_folder_is_read_with_train_statistics_and_in_memory(tmp_path):
    write_images(tmp_path / "images")
    splits = load(f"folder:{tmp_path / 'images'}", val_size=0.25)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 1, 12)
    assert isinstance(splits.train, TensorDataset)
    assert len(splits.train) == 90 and len(splits.val) == 30 and len(splits.test) == 36
    images = torch.cat([splits.train.tensors[0], splits.val.tensors[0]])
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-2  # train statistics
    rgb = load(f"folder:{tmp_path / 'images'}", channels=3, image_size=8)
    assert (rgb.in_channels, rgb.image_size) == (3, 8)


def test_a_folder_too_large_for_memory_reads_the_same_images_lazily(tmp_path, monkeypatch):
    write_images(tmp_path / "images")
    eager = load(f"folder:{tmp_path / 'images'}")
    monkeypatch.setattr(so.data, "IN_MEMORY_BYTES", 0)
    lazy = load(f"folder:{tmp_path / 'images'}")
    assert not isinstance(lazy.train, TensorDataset)
    assert torch.equal(labels_of(lazy.train), eager.train.tensors[1])
    x, y = lazy.test[5]
    assert torch.allclose(x, eager.test.tensors[0][5], atol=1e-5) and y == int(eager.test.tensors[1][5])
    assert len(lazy.search_subset(0.5, seed=0).train) == 54


def test_a_val_folder_is_used_instead_of_carving(tmp_path):
    write_images(tmp_path / "images")
    write_images(tmp_path / "v", per_class=5, test_per_class=1)
    (tmp_path / "v" / "train").rename(tmp_path / "images" / "val")
    splits = load(f"folder:{tmp_path / 'images'}")
    assert len(splits.val) == 15 and len(splits.train) == 120


def test_a_user_dataset_with_none_for_val_is_carved_and_its_shape_read(project):
    sys.path.insert(0, str(project))
    import datamod

    splits = as_splits(datamod.make_data(), "datamod:make_data", val_size=0.25, seed=0)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 1, 12)
    assert len(splits.train) == 270 and len(splits.val) == 90
    assert not isinstance(splits.train, TensorDataset)
    with pytest.raises(ValueError, match="expected Splits or a .train, val, test. tuple"):
        as_splits([1, 2], "x")


class _Wrapped(Dataset):
    """A TensorDataset behind a plain Dataset: the DataLoader path over the same numbers."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, int(y)


def test_the_dataloader_path_trains_exactly_as_the_in_memory_path():
    splits = so.data.load("quickstart").search_subset(0.05, seed=0)
    wrapped = copy.copy(splits)
    wrapped.train, wrapped.val = _Wrapped(splits.train), _Wrapped(splits.val)
    torch.manual_seed(0)
    model = so.make_searchable(build_model("lenet5"))
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    hp = HParams(batch_size=64)
    fast = fit(a, splits, hp, 2, seed=3, progress=False)
    loader = fit(b, wrapped, hp, 2, seed=3, progress=False)
    assert [h.val_loss for h in fast.history] == pytest.approx([h.val_loss for h in loader.history], rel=1e-5)
    assert fast.best_val_accuracy == loader.best_val_accuracy


# ----------------------------------------------------------------------------- your own loop


def _splits() -> so.data.Splits:
    return so.data.load("quickstart").search_subset(0.02, seed=0)


def test_fit_with_keeps_the_best_reported_epoch_and_its_weights():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    seen = {}

    def my_fit(model, splits, hparams, epochs, report):
        for epoch in range(epochs):
            with torch.no_grad():
                model[1].bias.fill_(float(epoch))
            seen[epoch] = float(model[1].bias[0].detach())
            report(epoch, [0.2, 0.9, 0.5][epoch], 1.0 - epoch / 10)

    result = fit_with(my_fit, model, _splits(), HParams(), 3)
    assert (result.best_val_accuracy, result.best_epoch) == (0.9, 1)
    assert float(model[1].bias[0].detach()) == 1.0  # the weights of the best epoch, not the last
    low = fit_with(my_fit, model, _splits(), HParams(), 3, maximize=False)
    assert (low.best_val_accuracy, low.best_epoch) == (0.2, 0)


def test_fit_with_reports_to_the_trial_and_the_pruner_stops_it(tmp_path):
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.ThresholdPruner(upper=0.5))

    def my_fit(model, splits, hparams, epochs, report):
        for epoch in range(epochs):
            report(epoch, 0.3 + 0.2 * epoch, 0.1)

    def objective(trial):
        return fit_with(my_fit, nn.Linear(2, 2), _splits(), HParams(), 5, trial, maximize=False,
                        accuracy=False).best_val_accuracy

    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {0: 0.3, 1: 0.5, 2: pytest.approx(0.7)}
    assert trial.user_attrs["direction"] == "minimize" and trial.user_attrs["val_loss"] == [0.1] * 3
    assert so.trial_score(trial) == (-math.inf, -math.inf)  # pruned: worst


def test_a_minimized_metric_ranks_the_lower_curve_first():
    study = optuna.create_study(direction="minimize")
    for curve in ([3.0, 2.0], [1.5, 1.0]):
        def objective(trial, curve=curve):
            def my_fit(model, splits, hparams, epochs, report):
                for e, v in enumerate(curve):
                    report(e, v, v)
            return fit_with(my_fit, nn.Linear(2, 2), _splits(), HParams(), 2, trial, maximize=False,
                            accuracy=False).best_val_accuracy
        study.optimize(objective, n_trials=1)
    first, second = study.trials
    assert so.trial_score(second) > so.trial_score(first)


@pytest.mark.parametrize("body, message", [
    ("raise ValueError('the loop fell over')", "[training] fit raised ValueError: the loop fell over"),
    ("pass", "returned without calling report"),
    ("report(1, 0.5)", "epochs are reported in order from 0; expected 0"),
])
def test_a_loop_that_breaks_the_contract_says_how(body, message):
    namespace: dict = {}
    exec(f"def my_fit(model, splits, hparams, epochs, report):\n    {body}\n", namespace)
    with pytest.raises(UserFitError) as err:
        fit_with(namespace["my_fit"], nn.Linear(2, 2), _splits(), HParams(), 2)
    assert message in str(err.value)


# ----------------------------------------------------------------------------- pruned weights


def test_torch_prune_masks_are_taken_exactly_and_stay_fixed_under_training(project):
    masked, zeros = write_pruned(project)
    state = torch.load(masked, weights_only=True)
    for path in (masked, zeros):
        model = build_model("netmod:make_net", 3, 1, 12, search_dir=str(project))
        load_pruned_weights(model, path)
        assert torch.equal(model.block.conv.weight_mask, state["block.conv.weight_mask"])
        assert so.sparsity_report(model).ratio == pytest.approx(0.9, abs=0.01)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(4, 1, 12, 12)).sum().backward()
            optimizer.step()
        model(torch.randn(1, 1, 12, 12))
        assert bool((model.block.conv.weight[state["block.conv.weight_mask"] == 0] == 0).all())


def test_a_checkpoint_that_does_not_fit_names_the_keys(project):
    torch.save({"stem.weight": torch.zeros(3, 3), "extra.bias": torch.zeros(2)}, project / "bad.pt")
    model = build_model("netmod:make_net", 3, 1, 12, search_dir=str(project))
    with pytest.raises(CheckpointError) as err:
        load_pruned_weights(model, project / "bad.pt", name="netmod:make_net")
    text = str(err.value)
    assert "missing keys: stem.bias" in text and "unexpected keys: extra.bias" in text
    assert "mis-shaped: stem.weight (3, 3) (model (8, 1, 3, 3))" in text


# ----------------------------------------------------------------------------- config


def test_the_new_keys_are_read_and_resolved_against_the_config_folder(project):
    write_pruned(project)
    (project / "images").mkdir()
    path = tiny_config(project, "keys", "netmod:make_net", "folder:images", extra='''
        [training]
        fit = "fitmod:fit"
        metric = "top1"
    '''.replace("[training]", "[model.kwargs]\nwidth = 4\n\n[training]"))
    text = path.read_text().replace('scope = "lamp"', 'scope = "lamp"\ncheckpoint = "pruned_masks.pt"')
    text = text.replace('epochs = 2\nfraction', 'epochs = 2\nfraction', 1)
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.model.kwargs == {"width": 4} and cfg.data.name == f"folder:{project / 'images'}"
    assert cfg.sparsity.checkpoint == str(project / "pruned_masks.pt")
    assert (cfg.training.fit, cfg.training.metric, cfg.training.is_accuracy) == ("fitmod:fit", "top1", False)


@pytest.mark.parametrize("extra, words", [
    ('[training]\nmetric = "top1"\n', ["[training] metric", "needs your own [training] fit"]),
    ('[training]\nfit = "fitmod:fit"\nmetric = "top1"\n[activations]\nepochs = "auto"\n',
     ["[activations] epochs", '"auto" needs [training] metric = "val_accuracy"']),
    ('[training]\ndirection = "minimize"\n', ["[training] direction", "accuracy, which is maximized"]),
    ('[training]\nfit = "not a path"\n', ["[training] fit", "is not an import path"]),
    ('[data]\nname = "folder:nowhere"\n', ["[data] name", "no folder"]),
    ('[data]\nname = "quickstart"\nchannels = 2\n', ["[data] channels", "valid: 1, 3 (1 grayscale, 3 RGB)"]),
    ('[model]\nname = "lenet5"\nkwargs = { width = 2 }\n', ["[model] kwargs", "takes no keyword arguments"]),
])
def test_bad_new_keys_fail_with_the_key(tmp_path, extra, words):
    from ._tiny import TINY

    text = TINY.format(trials=3)
    for table in ("[training]", "[activations]", "[data]", "[model]"):
        if table in extra and table in text:  # replace the tiny config's table by the case's
            head, _, rest = text.partition(table + "\n")
            rest = rest.split("\n\n", 1)[1] if "\n\n" in rest else ""
            text = head + rest
    (tmp_path / "c.toml").write_text(text + "\n" + extra)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.toml")
    for word in words:
        assert word in str(err.value)


# ----------------------------------------------------------------------------- run's checks (fuzz)


def _folder(project: Path, name: str) -> Path:
    write_images(project / name)
    return project / name


CASES = {
    # id: (config edits, words that must be in the one line)
    "module-not-found": (dict(model="nosuchmod:make"), ["[model] name 'nosuchmod:make'", "no module 'nosuchmod'"]),
    "attribute-missing": (dict(model="netmod:make_nothing"), ["has no attribute 'make_nothing'"]),
    "factory-raises": (dict(model="netmod:make_broken"), ["make_broken", "RuntimeError: out of coffee"]),
    "not-a-module": (dict(model="netmod:make_not_a_module"), ["returned str, not a torch.nn.Module"]),
    "zero-sites": (dict(model="netmod:make_functional"), ["0 activation sites found"]),
    "wrong-classes": (dict(model="netmod:make_wrong_width"), ["returns (2, 7)", "must return (2, 3)"]),
    "data-module-not-found": (dict(data="nodata:make"), ["[data] name 'nodata:make'", "no module 'nodata'"]),
    "fit-module-not-found": (dict(extra='[training]\nfit = "nofit:fit"\nmetric = "top1"\n'),
                             ["[training] fit 'nofit:fit'", "no module 'nofit'"]),
    "one-class-folder": (dict(data="folder:one"), ["has 1 class folder(s)", "at least 2"]),
    "test-classes-differ": (dict(data="folder:differ"), ["other classes than", "(differ: cat, dog)"]),
    "checkpoint-missing-keys": (dict(checkpoint={"stem.weight": (8, 1, 3, 3)}),
                                ["[sparsity] checkpoint", "missing keys: stem.bias"]),
    "checkpoint-unexpected-keys": (dict(checkpoint="unexpected"), ["unexpected keys: head.weight"]),
    "checkpoint-mis-shaped": (dict(checkpoint="misshaped"), ["mis-shaped: fc.weight (3, 99)"]),
}


def _case_config(project: Path, case: str) -> Path:
    edits, _ = CASES[case]
    if case == "one-class-folder":
        write_images(project / "one", classes=("ant",))
    if case == "test-classes-differ":
        write_images(project / "differ")
        (project / "differ" / "test" / "cat").rename(project / "differ" / "test" / "dog")
    if "folder" not in str(edits.get("data", "folder")):
        pass
    write_images(project / "images")
    extra = edits.get("extra", "")
    if "checkpoint" in edits:
        import torch as t

        net = build_model("netmod:make_net", 3, 1, 12, search_dir=str(project))
        state = net.state_dict()
        if edits["checkpoint"] == "unexpected":
            state["head.weight"] = t.zeros(2)
        elif edits["checkpoint"] == "misshaped":
            state["fc.weight"] = t.zeros(3, 99)
        else:
            state = {k: t.zeros(v) for k, v in edits["checkpoint"].items()}
        t.save(state, project / "ckpt.pt")
        sys.modules.pop("netmod", None)
    path = tiny_config(project, "fuzz", edits.get("model", "netmod:make_net"), edits.get("data", "folder:images"),
                       extra)
    if "checkpoint" in edits:
        path.write_text(path.read_text().replace('scope = "lamp"', 'scope = "lamp"\ncheckpoint = "ckpt.pt"'))
    return path


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_source_that_does_not_fit_fails_in_one_line_and_writes_nothing(case, project, capsys):
    path = _case_config(project, case)
    before = _snapshot(project)
    capsys.readouterr()
    code = cli.main(["run", str(path)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("safs-optuna: "), err
    for word in CASES[case][1]:
        assert word in lines[0], (word, lines[0])
    assert code == 2, lines[0]
    assert _snapshot(project) == before, "files were written"


def test_a_checkpoint_sparser_than_the_ratio_gets_a_warning_and_is_used(project, capsys, monkeypatch):
    write_images(project / "images")
    masked, _ = write_pruned(project, amount=0.8)
    path = tiny_config(project, "warn", "netmod:make_net", "folder:images")
    path.write_text(path.read_text().replace('scope = "lamp"', f'checkpoint = "{masked.name}"'))
    monkeypatch.setattr(cli, "_pipeline", lambda *a, **k: (_ for _ in ()).throw(SystemExit(7)))
    with pytest.raises(SystemExit):
        cli.main(["run", str(path)])
    err = capsys.readouterr().err
    assert "warning:" in err and "not [sparsity] ratio 0.9" in err
    assert re.search(r"has sparsity (79\.9\d|80\.0\d) %", err), err


def test_an_import_path_read_back_from_the_storage_is_never_imported(project, capsys):
    """Whoever can write to the database must not make a worker run code: the stored config is
    compared with the worker's own, and a different import path there is refused, not imported."""
    write_images(project / "images")
    (project / "evilmod.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('PWNED').write_text('ran')\n"
        "def make(num_classes, in_channels):\n    raise SystemExit('ran')\n")
    path = tiny_config(project, "victim", "netmod:make_net", "folder:images")
    cfg = load_config(path)
    from safs_optuna.pipeline import Pipeline

    pipe = Pipeline(cfg)
    pipe.prepare_studies()
    for stage in pipe.stages:  # an attacker rewrites the stored config of every stage
        study = pipe.study(stage)
        stored = dict(study.user_attrs["config"])
        stored["model"] = {**stored["model"], "name": "evilmod:make"}
        study.set_user_attr("config", stored)
    assert cli.main(["status", str(path)]) == 1
    err = capsys.readouterr().err
    assert "model.name: stored 'evilmod:make', config 'netmod:make_net'" in err
    assert cli.main(["run", str(path)]) == 1
    assert "was made with a different config" in capsys.readouterr().err
    assert not (project / "PWNED").exists() and "evilmod" not in sys.modules
