import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from safs_optuna.activation import OperatorTree, TreeActivation
from safs_optuna.models import (
    ACTIVATION_TREES,
    MODELS,
    OPTIONAL_ACTIVATION_TREES,
    build_model,
    make_searchable,
    set_module,
    sites,
)
from safs_optuna.operators import UNARY


def _outputs_equal_after_make_searchable(model: nn.Module, x: torch.Tensor, **kwargs) -> bool:
    model.eval()
    with torch.no_grad():
        before = model(x)
        make_searchable(model, **kwargs)
        after = model(x)
    return torch.allclose(before, after, atol=1e-6, rtol=1e-5)


def _count(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> int:
    return len({id(m) for m in model.modules() if type(m) in kinds})


def test_registry_names():
    assert set(MODELS) == {"lenet5", "vgg16", "resnet18", "efficientnet_b0"}


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'lenet'.*efficientnet_b0, lenet5, resnet18, vgg16"):
        build_model("lenet")


@pytest.mark.parametrize("mapping", [ACTIVATION_TREES, OPTIONAL_ACTIVATION_TREES])
def test_every_mapped_type_has_an_equivalent_operator(mapping):
    # Wide range, large values included: a guarded (clamped) operator must still agree here.
    x = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([-1e3, -50.0, 0.0, 50.0, 1e3])])
    for kind, name in mapping.items():
        assert name in UNARY, f"{kind.__name__} maps to unregistered operator {name!r}"
        slot = TreeActivation(OperatorTree.unary(name))
        with torch.no_grad():
            assert torch.allclose(kind()(x), slot(x), atol=1e-6, rtol=1e-5), kind.__name__


@pytest.mark.parametrize(
    ("name", "in_channels", "size", "expected_sites"),
    [
        ("lenet5", 1, 28, 4),
        ("lenet5", 1, 32, 4),
        ("resnet18", 3, 32, 17),
        ("vgg16", 3, 32, 15),
    ],
)
def test_builder_sites_shape_and_equivalence(name, in_channels, size, expected_sites):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels, image_size=size)
    assert not sites(model)  # builders return plain torch activations
    assert _count(model, (nn.ReLU,)) == expected_sites
    x = torch.randn(2, in_channels, size, size)
    assert _outputs_equal_after_make_searchable(model, x)
    assert len(sites(model)) == expected_sites
    assert _count(model, (nn.ReLU,)) == 0
    assert model(x).shape == (2, 7)


@pytest.mark.parametrize(("in_channels", "size"), [(3, 16), (3, 32), (1, 16)])
def test_efficientnet_every_silu_is_a_site(in_channels, size):
    torch.manual_seed(0)
    model = build_model("efficientnet_b0", num_classes=5, in_channels=in_channels, image_size=size)
    silus = _count(model, (nn.SiLU,))
    sigmoids = _count(model, (nn.Sigmoid,))
    assert silus == 49 and sigmoids == 16
    x = torch.randn(2, in_channels, size, size)
    assert _outputs_equal_after_make_searchable(model, x)
    assert len(sites(model)) == silus
    assert _count(model, (nn.Sigmoid,)) == sigmoids  # squeeze-excitation gates are not sites
    assert model(x).shape == (2, 5)


def test_efficientnet_small_input_uses_stride_one_stem():
    small = build_model("efficientnet_b0", in_channels=1, image_size=32)
    large = build_model("efficientnet_b0", in_channels=3, image_size=64)
    assert small.features[0][0].stride == (1, 1) and small.features[0][0].in_channels == 1
    assert large.features[0][0].stride == (2, 2) and large.features[0][0].in_channels == 3


def test_sigmoid_gates_become_sites_only_when_included():
    torch.manual_seed(0)
    model = build_model("efficientnet_b0", in_channels=3, image_size=16)
    x = torch.randn(2, 3, 16, 16)
    assert _outputs_equal_after_make_searchable(model, x, include=(nn.Sigmoid,))
    assert len(sites(model)) == 49 + 16
    assert _count(model, (nn.Sigmoid,)) == 0


def test_include_rejects_unknown_types():
    with pytest.raises(ValueError, match=r"cannot include 'PReLU'; valid: Sigmoid, Hardsigmoid, ReLU"):
        make_searchable(nn.Sequential(nn.Linear(2, 2)), include=(nn.PReLU,))


def test_lenet_sites_are_in_model_order_and_layout_is_classic():
    model = make_searchable(build_model("lenet5"))
    assert [name for name, _ in model.named_children()] == [
        "conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten", "fc1", "act3", "fc2", "act4", "fc3",
    ]
    assert sites(model) == ["act1", "act2", "act3", "act4"]
    assert model.fc1.in_features == 16 * 5 * 5  # 28 px with padding 2: the classic 400
    assert model[7] is model.fc1 and model[11].out_features == 10  # still indexable


def test_vgg16_site_names_follow_the_paper():
    model = make_searchable(build_model("vgg16", in_channels=3, image_size=32))
    blocks = [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]
    convs = [f"features.act{b}_{c}" for b, n in blocks for c in range(1, n + 1)]
    assert sites(model) == [*convs, "classifier.act6", "classifier.act7"]
    assert [name for name, _ in model.features.named_children()][:7] == [
        "conv1_1", "bn1_1", "act1_1", "conv1_2", "bn1_2", "act1_2", "pool1",
    ]
    assert [name for name, _ in model.classifier.named_children()] == ["fc6", "act6", "fc7", "act7", "fc8"]


def _numbered_lenet5(num_classes: int = 10) -> nn.Sequential:
    """LeNet-5 as it was built while its layers were numbered: a flat nn.Sequential."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


def _numbered_vgg16(num_classes: int = 10) -> nn.Module:
    """VGG-16 as it was built while its layers were numbered (same forward as models.VGG)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if item == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
            channels = item
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(
        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
    )
    return model


def _numbered_vgg16_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.classifier(torch.flatten(model.pool(model.features(x)), 1))


def test_named_lenet5_matches_the_numbered_one():
    torch.manual_seed(0)
    old = _numbered_lenet5()
    torch.manual_seed(0)
    new = build_model("lenet5")
    # Same construction order, so the same seed gives the same initial weights.
    assert all(torch.equal(a, b) for a, b in zip(old.parameters(), new.parameters(), strict=True))
    x = torch.randn(3, 1, 28, 28)
    torch.manual_seed(1)
    old = _numbered_lenet5().eval()
    new.load_state_dict(old.state_dict())  # keys "0.weight" ... land on "conv1.weight" ...
    make_searchable(new.eval())
    with torch.no_grad():
        assert torch.equal(new(x), old(x))


def test_named_vgg16_loads_numbered_state_dicts_with_masks_and_batch_norm_statistics():
    torch.manual_seed(0)
    old = _numbered_vgg16().eval()
    with torch.no_grad():
        for m in old.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-default running statistics must travel too
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    torch.nn.utils.prune.l1_unstructured(old.features[3], "weight", amount=0.5)
    new = build_model("vgg16", in_channels=3, image_size=32)
    torch.nn.utils.prune.identity(new.features.conv1_2, "weight")
    new.load_state_dict(old.state_dict())
    new.eval()
    assert torch.equal(new.features.conv1_2.weight_mask, old.features[3].weight_mask)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(new(x), _numbered_vgg16_forward(old, x))


def test_named_state_dicts_still_load_strictly():
    model = make_searchable(build_model("lenet5"))
    state = model.state_dict()
    assert "act1.alpha" in state and not any(key[0].isdigit() for key in state)
    build_model("lenet5").load_state_dict({k: v for k, v in state.items() if not k.startswith("act")})
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"fc9.weight\""):
        build_model("lenet5").load_state_dict({**build_model("lenet5").state_dict(), "fc9.weight": torch.ones(1)})


def test_vgg16_has_thirteen_convs_with_batch_norm():
    model = build_model("vgg16", in_channels=3, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len({id(m) for m in relus}) == len(relus) == 15  # every activation its own instance


def test_resnet18_cifar_layout():
    model = build_model("resnet18", in_channels=3, image_size=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8 and all(b.act1 is not b.act2 for b in blocks)
    make_searchable(model)
    assert sites(model)[:3] == ["act", "layer1.0.act1", "layer1.0.act2"]


def test_small_lenet_input_is_rejected():
    with pytest.raises(ValueError, match="image_size >= 12"):
        build_model("lenet5", image_size=8)


def test_torchvision_resnet18_shared_relu_is_one_site():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4)
    assert _outputs_equal_after_make_searchable(model, torch.randn(2, 3, 32, 32))
    # torchvision's BasicBlock calls its single `relu` twice: the stem plus one site per block.
    assert len(sites(model)) == 1 + 8
    assert sites(model)[:2] == ["relu", "layer1.0.relu"]


def test_torchvision_mobilenet_v3_small():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=4)
    expected = _count(model, (nn.ReLU, nn.Hardswish))
    hardsigmoids = _count(model, (nn.Hardsigmoid,))
    assert _outputs_equal_after_make_searchable(model, torch.randn(2, 3, 32, 32))
    assert len(sites(model)) == expected
    assert _count(model, (nn.Hardsigmoid,)) == hardsigmoids > 0  # no equivalent operator: left alone


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 3)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(3, 3)
        self.alias = self.act  # the same instance registered under a second path

    def forward(self, x):
        return self.alias(self.fc2(self.act(self.fc1(x))))


def test_instance_registered_twice_stays_one_shared_site():
    model = _Shared()
    assert _outputs_equal_after_make_searchable(model, torch.randn(4, 3))
    assert sites(model) == ["act"]
    assert isinstance(model.act, TreeActivation) and model.alias is model.act
    assert model.act.tree == OperatorTree.unary("tanh")


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(F.relu(self.fc(x)))


def test_functional_activations_are_not_sites_and_other_types_are_left_alone():
    model = nn.Sequential(_Functional(), nn.LeakyReLU(), nn.PReLU(), nn.Linear(3, 2), nn.Sigmoid(), nn.CELU())
    assert _outputs_equal_after_make_searchable(model, torch.randn(4, 3))
    assert sites(model) == ["0.act", "1"]
    assert isinstance(model[0].fc, nn.Linear)  # the F.relu inside forward stays
    assert [type(m) for m in model[2:]] == [nn.PReLU, nn.Linear, nn.Sigmoid, nn.CELU]


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.GELU(approximate="tanh"), r"cannot make 1 \(GELU\) searchable: approximate='tanh'"),
        (nn.ELU(alpha=0.5), r"cannot make 1 \(ELU\) searchable: alpha=0.5"),
        (nn.Softplus(beta=2.0), r"cannot make 1 \(Softplus\) searchable: beta=2.0"),
        (nn.LeakyReLU(0.2), r"cannot make 1 \(LeakyReLU\) searchable: negative_slope=0.2"),
        (nn.Hardtanh(-2.0, 2.0), r"cannot make 1 \(Hardtanh\) searchable: min_val=-2.0, max_val=2.0"),
    ],
)
def test_settings_without_equivalent_operator_raise(module, message):
    with pytest.raises(ValueError, match=message):
        make_searchable(nn.Sequential(nn.Linear(2, 2), module))


def test_all_default_activation_types_are_replaced_exactly():
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for kind in ACTIVATION_TREES:
        layers += [nn.Linear(6, 6), kind()]
    model = nn.Sequential(*layers)
    x = torch.randn(8, 6) * 3
    assert _outputs_equal_after_make_searchable(model, x)
    trees = [model[int(s)].tree for s in sites(model)]
    assert trees == [OperatorTree.unary(name) for name in ACTIVATION_TREES.values()]


def test_gradients_are_unchanged():
    torch.manual_seed(0)
    model = build_model("lenet5")
    x = torch.randn(2, 1, 28, 28)
    model(x).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    make_searchable(model)
    model(x).sum().backward()
    # The slots' own alpha/beta are frozen (no grad) and do not appear among the model's grads.
    after = [p.grad for p in model.parameters() if p.requires_grad]
    assert len(after) == len(before)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after, before))


def test_make_searchable_is_idempotent_and_returns_model():
    model = build_model("lenet5")
    assert make_searchable(model) is model
    slots = [model.get_submodule(s) for s in sites(model)]
    make_searchable(model)
    assert [model.get_submodule(s) for s in sites(model)] == slots


def test_slots_follow_model_dtype():
    model = make_searchable(build_model("lenet5").double())
    assert all(model.get_submodule(s).alpha.dtype == torch.float64 for s in sites(model))
    assert model(torch.randn(1, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64


def test_set_module_replaces_by_dotted_path_and_rejects_bad_paths():
    model = build_model("resnet18", in_channels=3, image_size=32)
    new = nn.Identity()
    set_module(model, "layer2.1.act1", new)
    assert model.layer2[1].act1 is new
    message = r"no submodule 'layer2.1.nope'; children of layer2.1: conv1, bn1, act1"
    with pytest.raises(ValueError, match=message):
        set_module(model, "layer2.1.nope", new)
    with pytest.raises(ValueError, match="no submodule 'layer9'"):
        set_module(model, "layer9.0", new)
    with pytest.raises(ValueError, match="not the model itself"):
        set_module(model, "", new)
