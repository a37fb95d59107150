"""Tests for safs_optuna.sparsity: allocations, fixed masks, gradual pruning, reports, finalize."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torchvision
from torch import nn

from safs_optuna.models import build_model, make_searchable
from safs_optuna.sparsity import (
    SCOPES,
    LayerSparsity,
    SparsityReport,
    cubic_sparsity,
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
@pytest.mark.parametrize("scope", SCOPES)
def test_masks_stay_fixed_under_training(make_optimizer, scope: str) -> None:
    model = make_net()
    magnitude_prune(model, 0.7, scope=scope)
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
    valid = "valid: layer, global, erk, lamp$"
    with pytest.raises(ValueError, match=f"unknown sparsity scope 'network'; {valid}"):
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


# --- allocations on the project's models ------------------------------------------------------


@functools.cache
def _dense(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "mobilenet_v3_small":
        return make_searchable(torchvision.models.mobilenet_v3_small(weights=None))
    return build_model(name, num_classes=10, in_channels=3, image_size=16)


def dense_model(name: str) -> nn.Module:
    return copy.deepcopy(_dense(name))


def assert_largest_kept(model: nn.Module) -> None:
    """Within every layer, each surviving weight is at least as large as each masked one."""
    for name, m in prunable_modules(model).items():
        mask = m.weight_mask.bool()
        if mask.all() or not mask.any():
            continue
        assert m.weight_orig[mask].abs().min() >= m.weight_orig[~mask].abs().max(), name


_BIG = pytest.mark.slow  # a few seconds per allocation for millions of weights
MODELS = [
    "lenet5",
    pytest.param("mobilenet_v3_small", marks=_BIG),
    pytest.param("vgg16", marks=_BIG),
    pytest.param("resnet18", marks=_BIG),
    pytest.param("efficientnet_b0", marks=_BIG),
]


@pytest.mark.parametrize("ratio", [0.9, 0.99])
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("name", MODELS)
def test_every_allocation_hits_the_target_on_real_models(name: str, scope: str, ratio: float) -> None:
    model = dense_model(name)
    report = magnitude_prune(model, ratio, scope=scope)
    assert report.total == sum(p.numel() for p in (m.weight_orig for m in prunable_modules(model).values()))
    assert abs(report.ratio - ratio) < 1e-3, report.ratio
    if scope in ("global", "lamp"):
        assert report.zeros == round(ratio * report.total)
    assert_largest_kept(model)
    ratios = [layer.ratio for layer in report.layers]
    if scope == "layer":
        assert max(ratios) - min(ratios) < 0.02
    else:
        assert max(ratios) - min(ratios) > 0.02  # the adaptive allocations do differ per layer
    if scope == "lamp":
        assert all(layer.zeros < layer.total for layer in report.layers)  # no layer is emptied


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("name", ["lenet5", pytest.param("mobilenet_v3_small", marks=_BIG)])
def test_min_density_holds_on_real_models(name: str, scope: str) -> None:
    model = dense_model(name)
    layers = list(prunable_modules(model))
    first, last = layers[0], layers[-1]
    report = magnitude_prune(model, 0.9, scope=scope, min_density={first: 1.0, last: 0.05})
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name[first].zeros == 0
    assert by_name[last].total - by_name[last].zeros >= 0.05 * by_name[last].total
    assert abs(report.ratio - 0.9) < 1e-3
    assert_largest_kept(model)


# --- ERK and LAMP against numbers worked out by hand ------------------------------------------

# TinyNet's weight shapes, and ERK's sum(shape) per layer (its density is sum/prod, so the weights
# it keeps are eps * sum(shape)):
#   features.0    (4, 1, 3, 3)   36 weights, sum 11
#   features.2    (6, 4, 3, 3)  216 weights, sum 16
#   classifier.1  (20, 216)    4320 weights, sum 236
#   classifier.3  (3, 20)        60 weights, sum 23        total 4632 weights, sum 286


def kept_per_layer(model: nn.Module) -> dict[str, int]:
    return {name: int(m.weight_mask.sum()) for name, m in prunable_modules(model).items()}


def test_erk_matches_hand_computed_densities_without_dense_layers() -> None:
    # ratio 0.9 keeps 463.2 weights: eps = 463.2 / 286 = 1.61958; no layer exceeds density 1.
    #   features.0    11 * eps = 17.815  -> round(36 - 17.815) = 18 zeros   -> 18 kept
    #   features.2    16 * eps = 25.913  -> round(216 - 25.913) = 190 zeros -> 26 kept
    #   classifier.1 236 * eps = 382.22  -> round(4320 - 382.22) = 3938     -> 382 kept
    #   classifier.3  23 * eps = 37.250  -> round(60 - 37.25) = round(22.75) = 23 -> 37 kept
    model = make_net()
    report = magnitude_prune(model, 0.9, scope="erk")
    expected = {"features.0": 18, "features.2": 26, "classifier.1": 382, "classifier.3": 37}
    assert kept_per_layer(model) == expected
    assert report.zeros == 4632 - 463
    assert_largest_kept(model)


def test_erk_makes_layers_dense_and_redistributes_until_none_exceeds_one() -> None:
    # ratio 0.8 keeps 926.4 weights.
    #   round 1: eps = 926.4 / 286 = 3.2392; classifier.3 would keep 23 * eps = 74.5 > 60: dense.
    #   round 2: eps = (926.4 - 60) / (286 - 23) = 3.2943; features.0 would keep 11 * eps = 36.24 > 36:
    #            dense.
    #   round 3: eps = (926.4 - 60 - 36) / (16 + 236) = 3.29524; nothing exceeds:
    #            features.2    16 * eps = 52.724  -> 216 - round(163.276) = 53 kept
    #            classifier.1 236 * eps = 777.676 -> 4320 - round(3542.324) = 778 kept
    model = make_net()
    report = magnitude_prune(model, 0.8, scope="erk")
    expected = {"features.0": 36, "features.2": 53, "classifier.1": 778, "classifier.3": 60}
    assert kept_per_layer(model) == expected
    assert report.zeros == 4632 - 927  # 926.4 asked, 0.6 from rounding per layer
    assert_largest_kept(model)


def lamp_net() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
        model[1].weight.copy_(torch.tensor([[0.1, -0.2], [0.35, 0.05], [0.4, -0.25]]))
    return model


# LAMP scores, w**2 over the sum of the squares at least as large:
#   layer 0: 1: 1/30 = 0.0333   -2: 4/29 = 0.1379   3: 9/25 = 0.36   4: 16/16 = 1
#   layer 1 (squares .0025 .01 .04 .0625 .1225 .16, sum .3975):
#     0.05: .0025/.3975 = 0.0063   0.1: .01/.395 = 0.0253    -0.2: .04/.385 = 0.1039
#    -0.25: .0625/.345 = 0.1812    0.35: .1225/.2825 = 0.4336  0.4: 1
# In ascending order: 0.05, 0.1, 1, -0.2, -2, -0.25, 3, 0.35, and the two 1s.
@pytest.mark.parametrize(
    ("ratio", "layer0", "layer1"),
    [
        # 3 of 10 go: 0.05, 0.1 and 1 (global magnitude would drop 0.05, 0.1, -0.2)
        (0.3, [[0, 1], [1, 1]], [[0, 1], [1, 0], [1, 1]]),
        # 5 of 10 go: also -0.2 and -2 (global magnitude would leave layer 1 only 0.4)
        (0.5, [[0, 0], [1, 1]], [[0, 0], [1, 0], [1, 1]]),
        # 8 of 10 go: only each layer's largest weight stays (both score 1)
        (0.8, [[0, 0], [0, 1]], [[0, 0], [0, 0], [1, 0]]),
    ],
)
def test_lamp_matches_hand_computed_masks(ratio: float, layer0: list, layer1: list) -> None:
    model = lamp_net()
    magnitude_prune(model, ratio, scope="lamp")
    assert model[0].weight_mask.tolist() == layer0
    assert model[1].weight_mask.tolist() == layer1


def test_lamp_differs_from_global_magnitude_on_the_hand_example() -> None:
    model = lamp_net()
    magnitude_prune(model, 0.5, scope="global")
    assert model[1].weight_mask.tolist() == [[0, 0], [0, 0], [1, 0]]


# --- minimum densities ------------------------------------------------------------------------


@pytest.mark.parametrize("scope", SCOPES)
def test_min_density_layers_get_their_density_and_the_total_holds(scope: str) -> None:
    plain = make_net()
    plain_report = magnitude_prune(plain, 0.9, scope=scope)
    model = make_net()
    report = magnitude_prune(model, 0.9, scope=scope, min_density={"features.0": 1.0, "classifier.3": 0.6})
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["features.0"].zeros == 0
    assert by_name["classifier.3"].total - by_name["classifier.3"].zeros >= 36  # 0.6 * 60
    assert abs(report.ratio - 0.9) < 1e-3
    # The layers without a minimum paid for it.
    plain_by_name = {layer.name: layer for layer in plain_report.layers}
    for name in ("features.2", "classifier.1"):
        assert by_name[name].zeros >= plain_by_name[name].zeros, name
    assert sum(by_name[n].zeros for n in ("features.2", "classifier.1")) > sum(
        plain_by_name[n].zeros for n in ("features.2", "classifier.1")
    )
    assert_largest_kept(model)


def test_min_density_layer_scope_prunes_the_others_uniformly() -> None:
    # features.0 dense keeps 36; the other 4596 weights keep 463.2 - 36 = 427.2, i.e. density
    # 427.2 / 4596 = 0.09295 each: features.2 216 -> 20.08 kept -> round(195.92) = 196 zeros.
    model = make_net()
    report = magnitude_prune(model, 0.9, scope="layer", min_density={"features.0": 1.0})
    zeros = {layer.name: layer.zeros for layer in report.layers}
    assert zeros == {
        "features.0": 0,
        "features.2": 196,  # 216 - 20.077
        "classifier.1": 3918,  # round(4320 - 401.55) = round(3918.45)
        "classifier.3": 54,  # round(60 - 5.577) = round(54.42)
    }


def test_min_density_globs_cover_modules_below_and_take_the_largest() -> None:
    model = make_net()
    report = magnitude_prune(model, 0.8, scope="global", min_density={"classifier": 0.1, "*.3": 0.5})
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["classifier.1"].total - by_name["classifier.1"].zeros >= 432
    assert by_name["classifier.3"].total - by_name["classifier.3"].zeros >= 30
    assert report.zeros == round(0.8 * 4632)


def test_min_density_errors_name_the_value_and_the_valid_range() -> None:
    model = make_net()
    # classifier.1 alone keeps 0.5 * 4320 = 2160 of 4632 weights: at most 1 - 2160/4632 = 0.533679.
    with pytest.raises(ValueError, match=r"ratio 0\.9 is out of reach .* valid ratio: \[0, 0\.533678\]"):
        magnitude_prune(model, 0.9, min_density={"classifier.1": 0.5})
    assert magnitude_prune(copy.deepcopy(model), 0.533678, scope="erk", min_density={"classifier.1": 0.5})
    no_match = "min_density glob 'head.*' matches no prunable module; valid: features.0, features.2"
    with pytest.raises(ValueError, match=no_match):
        magnitude_prune(model, 0.5, min_density={"head.*": 1.0})
    for bad in (0.0, 1.5, -0.2, True):
        with pytest.raises(ValueError, match=r"min_density\['features.0'\] must be a density in \(0, 1\]"):
            magnitude_prune(model, 0.5, min_density={"features.0": bad})
    with pytest.raises(TypeError, match="min_density must map"):
        magnitude_prune(model, 0.5, min_density=[("features.0", 1.0)])
    assert not hasattr(model.features[0], "weight_mask")  # failed calls changed nothing
    # A layer already pruned below its minimum cannot get its weights back.
    magnitude_prune(model, 0.9)
    below = "'features.0' to keep 36 of its 36 weights, but only 4 are unmasked"
    with pytest.raises(ValueError, match=below):
        magnitude_prune(model, 0.95, min_density={"features.0": 1.0})


# --- gradual pruning --------------------------------------------------------------------------


def test_cubic_sparsity_schedule() -> None:
    assert cubic_sparsity(0, 10, 0.9) == 0.0
    assert cubic_sparsity(0, 10, 0.9, initial=0.2) == pytest.approx(0.2)
    assert cubic_sparsity(10, 10, 0.9, initial=0.2) == pytest.approx(0.9)
    # midpoint: s_f + (s_i - s_f) * (1/2)**3 = 0.9 - 0.8 / 8
    assert cubic_sparsity(5, 10, 0.9, initial=0.1) == pytest.approx(0.8)
    assert cubic_sparsity(1, 4, 0.99) == pytest.approx(0.99 - 0.99 * 27 / 64)
    assert cubic_sparsity(15, 10, 0.9) == pytest.approx(0.9)  # stays at the end
    values = [cubic_sparsity(t, 8, 0.95) for t in range(9)]
    assert values == sorted(values)
    for kwargs, match in [
        (dict(step=-1, total_steps=10, final=0.9), "step must be >= 0, got -1"),
        (dict(step=0, total_steps=0, final=0.9), "total_steps must be >= 1, got 0"),
        (dict(step=0, total_steps=10, final=1.0), r"final must be in \[0, 1\), got 1.0"),
        (dict(step=0, total_steps=10, final=0.5, initial=0.6), r"initial must be in \[0, final\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            cubic_sparsity(**kwargs)
    with pytest.raises(TypeError, match="step must be an int"):
        cubic_sparsity(1.5, 10, 0.9)


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight_mask.clone() for name, m in prunable_modules(model).items()}


@pytest.mark.parametrize("scope", SCOPES)
def test_gradual_pruning_keeps_old_zeros_and_hits_every_step(scope: str) -> None:
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    magnitude_prune(model, 0.0, scope=scope)
    previous = current_masks(model)
    steps = 5
    for t in range(1, steps + 1):
        train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), steps=2)
        target = cubic_sparsity(t, steps, final=0.95, initial=0.0)
        report = magnitude_prune(model, target, scope=scope, min_density={"classifier.3": 0.5})
        assert abs(report.ratio - target) < 1e-3, (t, report.ratio, target)
        masks = current_masks(model)
        for name, mask in masks.items():
            assert (mask <= previous[name]).all(), (t, name)  # masks only grow
        assert int(masks["classifier.3"].sum()) >= 30
        previous = masks
    # the pruned weights are still exactly zero after training on
    train_steps(model, optimizer, steps=2)
    for name, w in effective_weights(model).items():
        assert (w[previous[name] == 0] == 0).all(), name


def test_raising_sparsity_with_another_allocation_still_hits_the_total() -> None:
    # Global magnitude leaves some layer sparser than a later uniform target; the others then
    # lose more, so that the total is the target rather than overshooting it.
    model = make_net()
    first = magnitude_prune(model, 0.8, scope="global")
    assert max(layer.ratio for layer in first.layers) > 0.82
    for scope, target in [("layer", 0.82), ("lamp", 0.85), ("erk", 0.88), ("global", 0.91), ("layer", 0.95)]:
        before = current_masks(model)
        report = magnitude_prune(model, target, scope=scope)
        assert abs(report.ratio - target) < 1e-3, (scope, report.ratio, target)
        for name, mask in current_masks(model).items():
            assert (mask <= before[name]).all(), (scope, name)


@pytest.mark.parametrize("scope", SCOPES)
def test_a_model_already_sparser_than_asked_is_left_alone(scope: str) -> None:
    model = make_net()
    report = magnitude_prune(model, 0.9, scope=scope)
    masks = current_masks(model)
    assert magnitude_prune(model, 0.5, scope=scope) == report
    for name, mask in current_masks(model).items():
        assert torch.equal(mask, masks[name])
