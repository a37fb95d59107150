"""Zero-cost features: every feature on a sparse network, nothing changed by measuring, and a
feature that fails (at one site or as a whole) reported, not raised."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import safs_optuna as so
from safs_optuna.activation import OperatorTree
from safs_optuna.training import HParams
from safs_optuna.zero_cost import FEATURES, measure, probe_batch


def _data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def _sparse(op: str = "relu") -> nn.Module:
    torch.manual_seed(0)
    model = so.make_searchable(so.build_model("lenet5", num_classes=10, in_channels=1, image_size=28))
    so.magnitude_prune(model, 0.8)
    so.ActivationSpace.preset("safs").apply(model, {s: OperatorTree.unary(op) for s in so.sites(model)})
    return model


class _Net(nn.Module):
    """A network of the test's own, with batch norm and dropout: measuring must not move them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 26 * 26, 10)
        self.act2 = nn.Tanh()

    def forward(self, x):
        return self.head(self.act2(self.drop(self.act(self.bn(self.conv(x)))).flatten(1)))


def test_every_feature_is_measured_on_a_sparse_network():
    out = measure(_sparse(), probe_batch(_data(), 32), HParams())
    assert list(out.values) == list(FEATURES)
    assert not out.errors
    assert 0 <= out.values["zero_share"] <= 1 and 0 <= out.values["flat_share"] <= 1
    assert out.values["zero_share"] > 0.2  # ReLU zeroes about half of its inputs


def test_features_tell_activations_apart():
    probe = probe_batch(_data(), 32)
    relu, tanh = (measure(_sparse(op), probe, HParams()).values for op in ("relu", "tanh"))
    assert relu["zero_share"] > tanh["zero_share"]
    assert relu["response_mean"] > tanh["response_mean"]


def test_measuring_changes_nothing_and_is_repeatable():
    model = so.make_searchable(_Net())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    rng = torch.get_rng_state()
    probe = probe_batch(_data(), 32)
    first = measure(model, probe, HParams(lr=0.1))
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN statistics
    assert torch.equal(torch.get_rng_state(), rng)
    assert measure(model, probe, HParams(lr=0.1)).values == first.values  # dropout draws the same


def test_a_site_that_fails_is_reported_and_the_other_sites_still_count():
    model = _sparse()

    class Broken(nn.Module):
        def forward(self, x):
            if x.dim() == 1:  # the response of a site is measured on its flattened input
                raise RuntimeError("no flat inputs here")
            return torch.relu(x)

    good = measure(model, probe_batch(_data(), 32), HParams())
    model.act2.forward = Broken().forward  # one site of four breaks
    out = measure(model, probe_batch(_data(), 32), HParams())
    assert list(out.errors) == ["response at act2"]
    assert "no flat inputs here" in out.errors["response at act2"]
    assert list(out.values) == list(FEATURES)
    assert out.values["first_grad_norm"] == pytest.approx(good.values["first_grad_norm"])


def test_a_network_that_cannot_run_reports_every_feature_and_raises_nothing():
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.act = nn.ReLU()

        def forward(self, x):
            raise ValueError("shape mismatch in the user's model")

    out = measure(so.make_searchable(Fails()), probe_batch(_data(), 8), HParams())
    assert out.values == {}
    assert set(out.errors) == {"responses", "gradients", "loss_drop"}
    assert all("shape mismatch" in e for e in out.errors.values())


def test_a_diverging_feature_is_an_error_not_a_number():
    model = _sparse()
    with torch.no_grad():
        model.fc3.weight_orig.fill_(float("inf"))
    out = measure(model, probe_batch(_data(), 16), HParams())
    assert "gradients" in out.errors or "loss_drop" in out.errors
    assert all(v == v and abs(v) != float("inf") for v in out.values.values())


def test_probe_batch_is_seeded_and_sized():
    data = _data(20)
    a, b, c = probe_batch(data, 8, seed=1), probe_batch(data, 8, seed=1), probe_batch(data, 8, seed=2)
    assert a.inputs.shape == (8, 1, 28, 28) and a.targets.dtype == torch.int64
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    assert len(probe_batch(data, 100).targets) == 20
    with pytest.raises(ValueError, match="empty"):
        probe_batch(TensorDataset(torch.zeros(0, 1), torch.zeros(0)), 4)


def test_only_the_features_asked_for_are_measured_and_a_bad_name_is_named():
    probe = probe_batch(_data(), 16)
    out = measure(_sparse(), probe, HParams(), features=("response_gain", "loss_drop"))
    assert list(out.values) == ["response_gain", "loss_drop"]
    assert out.values["response_gain"] == measure(_sparse(), probe, HParams()).values["response_gain"]
    with pytest.raises(ValueError, match="'gain'.*response_gain"):
        measure(_sparse(), probe, HParams(), features=("gain",))


class _Broken(nn.Module):
    """An activation that fails on the flattened input the response feature measures it on."""

    def forward(self, x):
        if x.dim() == 1:
            raise RuntimeError("no flat inputs here")
        return torch.relu(x)


def _surrogate_cfg(features):
    from safs_optuna.config import parse_config

    return parse_config({"name": "t", "activations": {"sampler": "surrogate", "surrogate_features": features}})


def test_a_trial_records_its_features_and_a_failed_one_is_logged_not_raised():
    import optuna
    from types import SimpleNamespace

    from safs_optuna.pipeline.features import FEATURES_ATTR, record_features

    lines: list[str] = []
    probe = probe_batch(_data(), 16)
    pipe = SimpleNamespace(cfg=_surrogate_cfg(["response_gain", "first_grad_norm"]),
                           res=SimpleNamespace(probe=lambda: probe), log=lines.append)
    trial = optuna.create_study().ask()
    model = _sparse()
    model.act2.forward = _Broken().forward
    record_features(pipe, trial, model, "activations #3")
    assert set(trial.user_attrs[FEATURES_ATTR]) == {"response_gain", "first_grad_norm"}
    assert lines == ["activations #3: zero-cost feature failed (response at act2: RuntimeError: no flat inputs "
                     "here); the surrogate goes on without it"]


def test_the_sampler_sees_nan_for_a_feature_that_failed_everywhere():
    import math
    from types import SimpleNamespace

    from safs_optuna.pipeline.features import describer

    space = so.ActivationSpace.preset("safs")
    probe = probe_batch(_data(), 16)

    def fresh(trees):
        model = _sparse()
        space.apply(model, trees)
        return model

    res = SimpleNamespace(probe=lambda: probe, fresh=fresh, space=space)
    assert describer(_surrogate_cfg([]), res) is None  # no features: the operators alone
    describe = describer(_surrogate_cfg(["zero_share", "loss_drop"]), res)
    relu = describe(space.encode({s: OperatorTree.unary("relu") for s in ("act1", "act2", "act3", "act4")}))
    assert len(relu) == 2 and not any(math.isnan(v) for v in relu)
    res.fresh = lambda trees: so.make_searchable(nn.Sequential(nn.Flatten(), nn.Linear(3, 2), nn.ReLU()))
    assert all(math.isnan(v) for v in describe(space.encode({"act1": OperatorTree.unary("tanh")})))


def test_the_config_names_a_bad_feature_and_features_without_the_surrogate():
    from safs_optuna.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="unknown zero-cost feature 'gain'; valid: response_gain"):
        _surrogate_cfg(["gain"])
    with pytest.raises(ConfigError, match='only the surrogate sampler reads it.*"lahc"'):
        parse_config({"name": "t", "activations": {"sampler": "lahc", "surrogate_features": ["response_gain"]}})
