import random

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from torch import nn

from safs_optuna.activation import OperatorTree, TreeActivation
from safs_optuna.models import build_model, make_searchable, sites
from safs_optuna.operators import BINARY, UNARY
from safs_optuna.space import ActivationSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAFS_13 = (
    "relu6 hardswish swish tanhsoft1 acon gelu srs elu tanh softplus logsigmoid symlog symexp".split()
)


def _study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def _random_trees(space: ActivationSpace, sites_: list[str], rng: random.Random) -> dict[str, OperatorTree]:
    return {
        s: OperatorTree(rng.choice(space.binary), rng.choice(space.unary), rng.choice(space.unary))
        for s in sites_
    }


def test_presets():
    safs = ActivationSpace.preset("safs")
    assert safs.binary == ("left",)
    assert safs.unary == ("relu", *SAFS_13)  # relu added so the all-ReLU start is a point
    core = ActivationSpace.preset("core")
    assert set(core.unary) == set(UNARY) and set(core.binary) == set(BINARY)
    assert core.unary[0] == "relu" and core.binary[0] == "left"
    compact = ActivationSpace.preset("compact")
    assert compact.binary == ("left", "max", "add", "mix")
    assert compact.unary[0] == "relu" and "x" in compact.unary and 6 <= len(compact.unary) <= 10
    assert ActivationSpace.PRESETS == ("safs", "core", "compact")
    assert all(ActivationSpace.preset(name).name == name for name in ActivationSpace.PRESETS)


def test_unknown_preset_lists_valid():
    message = r"unknown activation space preset 'paper'; valid: safs, core, compact"
    with pytest.raises(ValueError, match=message):
        ActivationSpace.preset("paper")


def test_custom_space_validates_names_and_lists_valid():
    with pytest.raises(ValueError, match=r"'foo'.*valid: .*\babs\b.*\bgelu\b"):
        ActivationSpace(["relu", "foo"])
    with pytest.raises(ValueError, match=r"'plus'.*valid: .*\badd\b.*\bmax\b"):
        ActivationSpace(["relu"], ["left", "plus"])
    with pytest.raises(ValueError, match="at least one"):
        ActivationSpace([])
    with pytest.raises(TypeError):
        ActivationSpace("relu")


def test_custom_space_orders_relu_and_left_first_and_drops_duplicates():
    space = ActivationSpace(["sin", "relu", "sin", "tanh"], ["max", "left"])
    assert space.unary == ("relu", "sin", "tanh")
    assert space.binary == ("left", "max")
    assert ActivationSpace(["sin", "tanh"]).unary == ("sin", "tanh")


@pytest.mark.parametrize(
    ("space", "parts"),
    [
        (ActivationSpace.preset("safs"), ["left"]),
        (ActivationSpace.preset("compact"), ["binary", "left", "right"]),
        (ActivationSpace.preset("core"), ["binary", "left", "right"]),
        (ActivationSpace(["sin", "tanh"], ["add"]), ["left", "right"]),
        (ActivationSpace(["sin", "tanh"], ["left", "mul"]), ["binary", "left", "right"]),
    ],
)
def test_suggest_uses_readable_categorical_params(space, parts):
    study = _study()
    site_names = ["features.0.act", "features.3", "classifier.1"]
    trial = study.ask()
    trees = space.suggest(trial, site_names)
    assert list(trees) == site_names
    expected = [f"{s}.{p}" for s in site_names for p in parts]
    assert list(trial.params) == expected
    assert space.param_names("features.3") == [f"features.3.{p}" for p in parts]
    for name, dist in trial.distributions.items():
        assert isinstance(dist, CategoricalDistribution)
        assert all(type(c) is str for c in dist.choices)
        choices = space.binary if name.endswith(".binary") else space.unary
        assert dist.choices == tuple(choices)
    assert space.decode(trial.params) == trees


def test_suggested_trees_follow_params_in_a_real_study():
    space = ActivationSpace.preset("compact")
    study = _study(seed=3)
    seen = set()
    for _ in range(20):
        trial = study.ask()
        trees = space.suggest(trial, ["a", "b"])
        for site, tree in trees.items():
            assert tree.binary == trial.params[f"{site}.binary"]
            assert tree.left == trial.params[f"{site}.left"]
            if not tree.is_unary:
                assert tree.right == trial.params[f"{site}.right"]
            seen.add(tree.binary)
        study.tell(trial, 0.0)
    assert len(seen) > 1


@pytest.mark.parametrize("preset", ["safs", "compact", "core"])
def test_decode_encode_roundtrip(preset):
    space = ActivationSpace.preset(preset)
    rng = random.Random(preset)
    site_names = ["s0", "block.1.act", "fc"]
    for _ in range(50):
        trees = _random_trees(space, site_names, rng)
        assert space.decode(space.encode(trees)) == trees
    # params -> trees -> params is exact for params of non-left trees.
    study = _study()
    for _ in range(10):
        trial = study.ask()
        trees = space.suggest(trial, site_names)
        params = dict(trial.params)
        encoded = space.encode(space.decode(params))
        assert set(encoded) == set(params)
        for site, tree in trees.items():
            if not tree.is_unary:
                assert all(encoded[k] == params[k] for k in space.param_names(site))


def test_encode_unary_tree_right_is_x_or_left():
    tree = OperatorTree.unary("erf")
    assert ActivationSpace.preset("compact").encode({"a": tree})["a.right"] == "x"
    no_x = ActivationSpace(["relu", "erf"], ["left", "add"])
    assert no_x.encode({"a": tree}) == {"a.binary": "left", "a.left": "erf", "a.right": "erf"}
    assert ActivationSpace.preset("safs").encode({"a": OperatorTree.unary("gelu")}) == {"a.left": "gelu"}


def test_encode_enqueued_trial_suggests_the_same_trees():
    space = ActivationSpace.preset("compact")
    wanted = {"a": OperatorTree("max", "x", "srs"), "b": OperatorTree.unary("elu")}
    study = _study()
    study.enqueue_trial(space.encode(wanted))
    trial = study.ask()
    assert space.suggest(trial, ["a", "b"]) == wanted


def test_encode_and_decode_reject_values_outside_the_space():
    space = ActivationSpace.preset("safs")
    message = r"a.left = 'sin' is not in activation space 'safs'; valid: relu, relu6"
    with pytest.raises(ValueError, match=message):
        space.encode({"a": OperatorTree.unary("sin")})
    with pytest.raises(ValueError, match=r"a.binary = 'add'.*valid: left"):
        space.encode({"a": OperatorTree("add", "relu", "tanh")})
    with pytest.raises(ValueError, match=r"a.left = 'sin'.*valid: relu"):
        space.decode({"a.left": "sin"})
    compact = ActivationSpace.preset("compact")
    with pytest.raises(ValueError, match=r"a.binary = 'min'.*valid: left, max, add, mix"):
        compact.decode({"a.binary": "min", "a.left": "relu", "a.right": "x"})


def test_encode_rejects_tree_with_other_binary_when_binary_is_fixed():
    space = ActivationSpace(["relu", "sin", "x"], ["add"])
    assert space.encode({"a": OperatorTree("add", "x", "sin")}) == {"a.left": "x", "a.right": "sin"}
    with pytest.raises(ValueError, match=r"a.binary = 'left'.*valid: add"):
        space.encode({"a": OperatorTree.unary("sin")})


def test_canonical_key_merges_equivalent_configurations():
    space = ActivationSpace.preset("compact")
    key = space.canonical_key
    # Commutative binary: operand order does not matter.
    a = {"s.binary": "add", "s.left": "x", "s.right": "srs"}
    b = {"s.binary": "add", "s.left": "srs", "s.right": "x"}
    assert key(a) == key(b)
    # A unary tree ignores its right operand.
    c = {"s.binary": "left", "s.left": "elu", "s.right": "srs"}
    d = {"s.binary": "left", "s.left": "elu", "s.right": "x"}
    assert key(c) == key(d)
    # Different activations differ; site order in the mapping does not matter.
    assert key(a) != key(c)
    two = {**a, "t.binary": "max", "t.left": "x", "t.right": "elu"}
    assert key(two) == key(dict(reversed(list(two.items()))))
    assert key(two) != key({**a, "t.binary": "max", "t.left": "x", "t.right": "srs"})
    hash(key(two))


def test_canonical_key_keeps_other_params():
    space = ActivationSpace.preset("safs")
    base = {"fc.left": "gelu", "optimizer": "sgd"}
    assert space.canonical_key({**base, "lr": 0.1}) != space.canonical_key({**base, "lr": 0.01})
    assert space.canonical_key({**base, "lr": 0.1}) == space.canonical_key({"lr": 0.1, **base})
    assert space.canonical_key({"fc.left": "gelu", "lr": 0.1}) == (
        ("fc", OperatorTree.unary("gelu").key),
        ("lr", 0.1),
    )


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return make_searchable(build_model("lenet5")).eval()


def test_apply_changes_what_the_model_computes():
    model = _lenet()
    space = ActivationSpace.preset("compact")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        space.apply(model, {s: OperatorTree("add", "x", "sin") for s in sites(model)})
        changed = model(x)
        space.apply(model, {s: OperatorTree.unary("relu") for s in sites(model)})
        back = model(x)
    assert not torch.allclose(before, changed)
    assert torch.allclose(before, back)
    assert [model.get_submodule(s).tree.formula for s in sites(model)] == ["relu(x)"] * 4


def test_apply_only_given_sites_and_learn_scale():
    model = _lenet()
    space = ActivationSpace.preset("safs")
    space.apply(model, {"act2": OperatorTree.unary("gelu")}, learn_scale=True)
    assert model[4].tree == OperatorTree.unary("gelu")
    assert model[4].alpha.requires_grad and model[4].beta.requires_grad
    assert model[1].tree == OperatorTree.unary("relu") and not model[1].alpha.requires_grad


def test_apply_keeps_dtype_and_shared_slots():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    model.add_module("alias", model[1])
    make_searchable(model.double())
    ActivationSpace.preset("compact").apply(model, {"1": OperatorTree("max", "x", "sin")})
    assert isinstance(model[1], TreeActivation) and model.alias is model[1]
    assert model[1].alpha.dtype == torch.float64
    assert model[1].tree.formula == "max(x, sin(x))"


def test_apply_unknown_site_lists_model_sites():
    model = _lenet()
    with pytest.raises(ValueError, match=r"unknown site '7'; the model's sites: act1, act2, act3, act4"):
        ActivationSpace.preset("safs").apply(model, {"7": OperatorTree.unary("gelu")})


def test_objective_end_to_end_with_study():
    model = _lenet()
    space = ActivationSpace.preset("compact")
    x = torch.randn(2, 1, 28, 28)

    def objective(trial: optuna.Trial) -> float:
        space.apply(model, space.suggest(trial, sites(model)))
        with torch.no_grad():
            return float(model(x).abs().mean())

    study = _study()
    study.optimize(objective, n_trials=3)
    best = space.decode(study.best_params)
    assert set(best) == set(sites(model))
    assert len({space.canonical_key(t.params) for t in study.trials}) == 3
