"""checkpoint.py: sparse searchable models saved, rebuilt and exported to plain PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
import torch
from torch.utils.data import TensorDataset

import safs_optuna as so
from safs_optuna.checkpoint import (CheckpointError, export_program, load_checkpoint, program_accuracy,
                                   save_checkpoint)
from safs_optuna.models import set_trees

ARCH = {"name": "lenet5", "num_classes": 10, "in_channels": 1, "image_size": 28}
TREES = ("srs(x)", "max(x, tanh(x))", "srs(x)", "swish(x)")


def _sparse_lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = so.make_searchable(so.build_model("lenet5"))
    so.magnitude_prune(model, 0.9)
    set_trees(model, {site: so.OperatorTree.parse(f) for site, f in zip(so.sites(model), TREES)},
              learn_scale=True)
    # Move every parameter off its initial value, so that only a faithful round trip reproduces it.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("weight_orig"):
                p.add_(0.05 * torch.randn_like(p))
    return model


def _masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_mask")}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _sparse_lenet()
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, model, ARCH, learn_scale=True, note="hello")
    return model, path


def test_round_trip_gives_identical_outputs_and_structure(saved):
    model, path = saved
    loaded, ckpt = load_checkpoint(path)
    assert ckpt["note"] == "hello" and ckpt["arch"] == ARCH and ckpt["learn_scale"] is True
    assert so.sites(loaded) == so.sites(model)
    for site, formula in zip(so.sites(loaded), TREES):
        act = loaded.get_submodule(site)
        assert act.tree == so.OperatorTree.parse(formula)
        assert act.learn_scale  # alpha and beta stay trainable
    assert loaded.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(5, 1, 28, 28)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert so.sparsity_report(loaded).ratio == pytest.approx(so.sparsity_report(model).ratio)
    assert so.sparsity_report(loaded).ratio == pytest.approx(0.9, abs=0.01)


def test_loaded_model_keeps_its_masks_through_training(saved):
    model, path = saved
    loaded, _ = load_checkpoint(path)
    masks = _masks(model)
    assert masks and _masks(loaded).keys() == masks.keys()
    opt = torch.optim.SGD(loaded.parameters(), lr=0.5)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(loaded(x), y).backward()
        opt.step()
    with torch.no_grad():
        loaded(x)  # refreshes each pruned module's weight from weight_orig and the mask
    for key, mask in masks.items():
        weight = loaded.get_submodule(key.rsplit(".", 1)[0]).weight
        assert torch.all(weight[mask == 0] == 0), key
        assert torch.equal(_masks(loaded)[key], mask)
    # The learnable operators and the scales trained too: the step reached them.
    srs = loaded.get_submodule(so.sites(loaded)[0])
    assert srs.alpha.item() != model.get_submodule(so.sites(model)[0]).alpha.item()


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="plain.pt"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a safs-optuna checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "torn", "garbage", "empty", "missing", "folder",
                                    "pickled code", "bad arch"])
def test_damaged_checkpoint_is_one_clear_error_naming_it(saved, tmp_path, damage):
    _, good = saved
    path = tmp_path / "bad.pt"
    raw = good.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "torn":
        middle = len(raw) // 2
        path.write_bytes(raw[:middle] + os.urandom(4096) + raw[middle + 4096 :])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "folder":
        path.mkdir()
    elif damage == "pickled code":  # what weights_only refuses; torch then suggests turning it off
        torch.save({"format": "safs-optuna/1", "hook": zipfile.ZipFile}, path)
    elif damage == "bad arch":
        ckpt = torch.load(good, weights_only=True)
        torch.save({**ckpt, "arch": {**ARCH, "name": "lenet7"}}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "weights_only" not in message
    assert isinstance(err.value, ValueError)  # callers catching ValueError keep working


def _probe(path) -> str:
    """Load and run the program in a fresh interpreter that cannot import safs_optuna."""
    code = (
        "import sys; sys.modules['safs_optuna'] = None\n"
        "import torch\n"
        f"m = torch.export.load({str(path)!r}).module()\n"
        "w = [p for n, p in m.named_parameters() if n.endswith('weight') and p.dim() > 1]\n"
        "zeros = sum(int((p == 0).sum()) for p in w) / sum(p.numel() for p in w)\n"
        "print(tuple(m(torch.randn(3, 1, 28, 28)).shape), round(zeros, 3))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_export_of_lenet5_at_99_percent_is_small_and_plain_pytorch(tmp_path):
    torch.manual_seed(0)
    model = so.make_searchable(so.build_model("lenet5"))
    so.magnitude_prune(model, 0.99)
    split = torch.randn(2000, 1, 28, 28)  # the example is a view of a whole split, as in the CLI
    path = tmp_path / "m.pt2"
    export_program(model, split[:4], path)
    size = path.stat().st_size
    assert size < 100_000, size  # dense weights alone are 250 kB, the split 6.3 MB
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    program = torch.export.load(str(path))
    assert program.example_inputs[0][0].shape[0] == 1
    model.eval()
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-6)
    weights = [p for n, p in program.module().named_parameters() if n.endswith("weight") and p.dim() > 1]
    assert sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights) >= 0.98


@pytest.mark.slow  # a fresh interpreter imports torch
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compressed_export_runs_without_safs_optuna(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "m.pt2"
    export_program(model, torch.randn(4, 1, 28, 28), path)
    with zipfile.ZipFile(path) as archive:  # the weights are stored compressed
        assert any(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())
    shape, zeros = _probe(path).split(") ")
    assert shape == "(3, 10" and float(zeros) >= 0.89


def test_export_accepts_a_single_example_image(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "one.pt2"
    export_program(model, torch.randn(1, 1, 28, 28), path)
    program = torch.export.load(str(path)).module()
    model.eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-6)


def test_export_program_matches_the_model_at_any_batch_size(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "m.pt2"
    export_program(model, torch.randn(2, 1, 28, 28), path)
    program = torch.export.load(str(path)).module()
    model.eval()
    # The exported program needs no safs_optuna class and no pruning reparametrisation.
    assert not any("_mask" in k for k in program.state_dict())
    for batch in (1, 7):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-6)
    # Exporting did not touch the model: it is still sparse with masks, still trainable.
    assert _masks(model)


def test_program_accuracy_counts_over_batches():
    # The "model" answers the class written in the first pixel; labels 0..9 with 3 wrong answers.
    images = torch.arange(10).float().view(10, 1)
    labels = torch.arange(10)
    labels[[1, 4, 8]] = 0
    dataset = TensorDataset(images, labels)
    answer = lambda x: torch.nn.functional.one_hot(x[:, 0].long(), 10).float()  # noqa: E731
    assert program_accuracy(answer, dataset, batch_size=3) == pytest.approx(70.0)
    assert program_accuracy(answer, dataset) == pytest.approx(70.0)
    empty = TensorDataset(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long))
    assert program_accuracy(answer, empty) == 0.0
