"""Tests for safs_optuna.sparsity: magnitude pruning with fixed masks, reports, finalize, restore."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from safs_optuna.sparsity import (
    LayerSparsity,
    SparsityReport,
    finalize,
    magnitude_prune,
    prunable_modules,
    restore_masks,
    sparsity_report,
)


class TinyNet(nn.Module):
    """Conv -> Conv -> Linear -> Linear, Tanh so that no unit is dead and every weight gets a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 6, 3, padding=1), nn.Tanh()
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(6 * 6 * 6, 20), nn.Tanh(), nn.Linear(20, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


LAYERS = ["features.0", "features.2", "classifier.1", "classifier.3"]


def make_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 6, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights the network computes with, recomputed fresh (not the hook's cached copy)."""
    out = {}
    for name, m in prunable_modules(model).items():
        w = m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight
        out[name] = w.detach().clone()
    return out


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    x, y = batch()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_prunable_modules_are_every_conv_and_linear_in_order() -> None:
    assert list(prunable_modules(make_net())) == LAYERS


@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.99])
def test_layer_scope_prunes_every_layer_by_the_same_fraction(ratio: float) -> None:
    model = make_net()
    report = magnitude_prune(model, ratio, scope="layer")
    assert [layer.name for layer in report.layers] == LAYERS
    for layer in report.layers:
        assert layer.zeros == round(ratio * layer.total), layer
    assert report.ratio == pytest.approx(ratio, abs=1e-2)
    # The smallest magnitudes went: every surviving weight is at least as large as every pruned one.
    conv = model.features[2]
    kept = conv.weight_orig[conv.weight_mask.bool()].abs()
    gone = conv.weight_orig[~conv.weight_mask.bool()].abs()
    assert kept.min() >= gone.max()


def test_global_scope_reaches_the_total_ratio_with_different_layer_ratios() -> None:
    model = make_net()
    report = magnitude_prune(model, 0.8, scope="global")
    assert report.zeros == round(0.8 * report.total)
    ratios = [layer.ratio for layer in report.layers]
    assert max(ratios) - min(ratios) > 0.05  # global magnitude does not equalise layers
    threshold = max(
        (m.weight_orig[~m.weight_mask.bool()].abs().max() for m in prunable_modules(model).values()),
    )
    for m in prunable_modules(model).values():
        assert (m.weight_orig[m.weight_mask.bool()].abs() >= threshold).all()


def test_report_counts_and_table() -> None:
    model = make_net()
    dense = sparsity_report(model)
    assert dense.zeros == 0 and dense.ratio == 0.0
    assert dense.total == 4 * 9 + 6 * 4 * 9 + 216 * 20 + 20 * 3
    report = magnitude_prune(model, 0.5)
    assert report == sparsity_report(model)
    assert report.total == sum(layer.total for layer in report.layers)
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "weights", "zeros", "sparsity"]
    assert [line.split()[0] for line in lines[1:5]] == LAYERS
    assert lines[-1].split()[0] == "total" and lines[-1].endswith(f"{report.ratio:.2%}")
    assert LayerSparsity("x", 4, 1).ratio == 0.25 and SparsityReport().ratio == 0.0


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    ],
    ids=["sgd-momentum-wd", "adam-wd", "adamw"],
)
def test_masks_stay_fixed_under_training(make_optimizer) -> None:
    model = make_net()
    magnitude_prune(model, 0.7, scope="global")
    before = effective_weights(model)
    masks = {name: m.weight_mask.clone() for name, m in prunable_modules(model).items()}
    train_steps(model, make_optimizer(model.parameters()), steps=5)
    after = effective_weights(model)
    for name, mask in masks.items():
        pruned, kept = mask == 0, mask == 1
        assert (after[name][pruned] == 0).all(), name  # exactly the pruned weights are zero...
        assert (after[name][kept] != before[name][kept]).all(), name  # ...and the others all moved
        assert (after[name][kept] != 0).all(), name
        assert torch.equal(prunable_modules(model)[name].weight_mask, mask)
    # The forward pass uses the masked weights (the hook refreshes them).
    model(batch()[0])
    for name, m in prunable_modules(model).items():
        assert torch.equal(m.weight, after[name])


def test_pruning_again_combines_masks_towards_the_target_ratio() -> None:
    model = make_net()
    magnitude_prune(model, 0.5)
    first = {name: m.weight_mask.clone() for name, m in prunable_modules(model).items()}
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), steps=3)
    report = magnitude_prune(model, 0.8)
    for layer in report.layers:
        assert layer.zeros == round(0.8 * layer.total), layer
    for name, m in prunable_modules(model).items():
        assert (m.weight_mask <= first[name]).all()  # a pruned weight never comes back
        assert sum(1 for h in m._forward_pre_hooks.values() if isinstance(h, torch.nn.utils.prune.BasePruningMethod)) == 1
    # A lower target than the current sparsity leaves the model as it is.
    assert magnitude_prune(model, 0.3).zeros == report.zeros
    # Global on top of layer-wise also only adds zeros.
    assert magnitude_prune(model, 0.9, scope="global").ratio == pytest.approx(0.9, abs=1e-3)


def test_skip_keeps_modules_dense() -> None:
    model = make_net()
    report = magnitude_prune(model, 0.9, skip=["features.0", "classifier.3"])
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["features.0"].zeros == 0 and by_name["classifier.3"].zeros == 0
    assert not hasattr(model.features[0], "weight_mask")
    assert by_name["features.2"].zeros == round(0.9 * by_name["features.2"].total)
    # A path skips everything below it.
    model = make_net()
    report = magnitude_prune(model, 0.9, scope="global", skip="classifier")
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["classifier.1"].zeros == by_name["classifier.3"].zeros == 0
    pruned = by_name["features.0"].zeros + by_name["features.2"].zeros
    assert pruned == round(0.9 * (by_name["features.0"].total + by_name["features.2"].total))


def test_bad_arguments_are_rejected_with_the_valid_values() -> None:
    model = make_net()
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
            magnitude_prune(model, ratio)
    with pytest.raises(TypeError, match="ratio"):
        magnitude_prune(model, True)
    with pytest.raises(ValueError, match="unknown sparsity scope 'network'; valid: layer, global"):
        magnitude_prune(model, 0.5, scope="network")
    with pytest.raises(ValueError, match="'features.1' matches no prunable module") as info:
        magnitude_prune(model, 0.5, skip=["features.1"])
    assert ", ".join(LAYERS) in str(info.value)
    with pytest.raises(ValueError, match="no Conv or Linear"):
        magnitude_prune(nn.Sequential(nn.ReLU()), 0.5)
    assert not hasattr(model.features[0], "weight_mask")  # failed calls changed nothing


def test_ratio_zero_adds_masks_without_zeros() -> None:
    model = make_net()
    assert magnitude_prune(model, 0.0).zeros == 0
    assert all(m.weight_mask.all() for m in prunable_modules(model).values())


def test_finalize_keeps_zeros_and_removes_the_reparametrisation() -> None:
    model = make_net()
    magnitude_prune(model, 0.9)
    train_steps(model, torch.optim.Adam(model.parameters(), lr=0.01), steps=2)
    expected = effective_weights(model)
    x = batch()[0]
    out = model(x)
    assert finalize(model) is model
    for name, m in prunable_modules(model).items():
        assert isinstance(m.weight, nn.Parameter)
        assert torch.equal(m.weight.detach(), expected[name])
        assert not hasattr(m, "weight_orig") and not hasattr(m, "weight_mask")
        assert not m._forward_pre_hooks and not m._forward_hooks
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert torch.allclose(model(x), out)
    assert sparsity_report(model).ratio == pytest.approx(0.9, abs=1e-2)
    # The state_dict now loads into a plain dense model.
    fresh = make_net(seed=5)
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(fresh(x), out)
    finalize(make_net())  # an unpruned model is left as it is


def test_sparse_state_dict_round_trips_through_restore_masks() -> None:
    model = make_net()
    magnitude_prune(model, 0.8, scope="global")
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), steps=2)
    state = model.state_dict()
    assert "features.0.weight_mask" in state and "features.0.weight" not in state
    fresh = make_net(seed=7)
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(state)
    restore_masks(fresh, state)
    fresh.load_state_dict(state)
    x = batch()[0]
    assert torch.equal(fresh(x), model(x))
    assert sparsity_report(fresh) == sparsity_report(model)
    fresh = copy.deepcopy(fresh)
    # The restored masks are live: training keeps the pruned weights zero.
    train_steps(fresh, torch.optim.Adam(fresh.parameters(), lr=0.01, weight_decay=0.1), steps=2)
    for name, w in effective_weights(fresh).items():
        assert (w[state[f"{name}.weight_mask"] == 0] == 0).all()


def test_restore_masks_reports_modules_the_model_lacks() -> None:
    model = make_net()
    magnitude_prune(model, 0.5)
    state = dict(model.state_dict())
    state["head.weight_mask"] = torch.ones(3, 20)
    state["head.weight_orig"] = torch.ones(3, 20)
    with pytest.raises(ValueError, match="no module 'head'"):
        restore_masks(make_net(), state)
    state = {"classifier.3.weight_orig": torch.ones(3, 21), "classifier.3.weight_mask": torch.ones(3, 21)}
    with pytest.raises(ValueError, match="mask shape"):
        restore_masks(make_net(), state)


def test_deepcopy_keeps_masks_independent_of_the_original() -> None:
    model = make_net()
    magnitude_prune(model, 0.9)
    copy.deepcopy(model)  # right after pruning...
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), steps=1)
    model(batch()[0]).sum()  # ...and after a forward with autograd on (pytorch/pytorch#37322)
    clone = copy.deepcopy(model)
    masks = {name: m.weight_mask.clone() for name, m in prunable_modules(model).items()}
    original = effective_weights(model)
    train_steps(clone, torch.optim.SGD(clone.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01), steps=3)
    for name, w in effective_weights(clone).items():
        assert (w[masks[name] == 0] == 0).all()
        assert not torch.equal(w, original[name])
    for name, w in effective_weights(model).items():
        assert torch.equal(w, original[name])  # the original did not move with its copy
    assert sparsity_report(clone).zeros == sparsity_report(model).zeros


def test_a_pruned_model_pickles_with_torch_save(tmp_path) -> None:
    model = make_net()
    magnitude_prune(model, 0.9)
    x = batch()[0]
    out = model(x)  # with autograd on
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert torch.equal(loaded(x), out)
    assert sparsity_report(loaded) == sparsity_report(model)
