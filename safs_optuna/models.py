"""Model builders and the activation slots that the search fills.

:func:`make_searchable` turns any ``nn.Module`` into a searchable one: every activation *module*
becomes a :class:`~safs_optuna.activation.TreeActivation` slot holding the operator tree that
computes exactly the same function, so the network's output does not change until a search puts
another tree in a slot. :func:`sites` lists the slots by module path.

:data:`MODELS` is a timm-style registry: every builder takes the same keyword arguments
``num_classes``, ``in_channels`` and ``image_size`` and returns a network with plain torch
activations (``nn.ReLU``, ``nn.SiLU``); callers make it searchable afterwards.

The built-in models name their layers the way torchvision and the original papers do, and every
activation is its own named module, so a site reads ``act1`` (LeNet-5), ``features.act3_2``
(VGG-16), ``layer2.0.act1`` (ResNet-18) or ``features.1.0.block.0.2`` (torchvision's
EfficientNet-B0) in parameter names and in optuna-dashboard. State dicts saved while LeNet-5 and
VGG-16 numbered their layers (``"0.weight"``, ``"features.3.weight"``) still load into them.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor, nn

from .activation import OperatorTree, TreeActivation
from .operators import UNARY

__all__ = [
    "ACTIVATION_TREES",
    "OPTIONAL_ACTIVATION_TREES",
    "MODELS",
    "make_searchable",
    "sites",
    "set_module",
    "build_model",
    "adapt_stem",
    "require_sites",
    "MODEL_SOURCES",
    "lenet5",
    "vgg16",
    "resnet18",
    "efficientnet_b0",
]

# Activation module type -> the unary operator that computes the same function (with the
# module's default settings; non-default settings are checked in `_tree_for`).
ACTIVATION_TREES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.SiLU: "swish",
    nn.GELU: "gelu",
    nn.ELU: "elu",
    nn.Tanh: "tanh",
    nn.Hardswish: "hardswish",
    nn.Softplus: "softplus",
    nn.Mish: "mish",
    nn.LogSigmoid: "logsigmoid",
    nn.SELU: "selu",
    nn.Softsign: "softsign",
    nn.LeakyReLU: "leaky_relu",
    nn.Hardtanh: "hardtanh",
}

# Types that are activations by construction but usually serve as gates (the sigmoid of
# EfficientNet's and the hard sigmoid of MobileNetV3's squeeze-excitation scale channels; they are
# not activation sites of the paper). They become slots only through ``make_searchable(include=...)``.
OPTIONAL_ACTIVATION_TREES: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid",
    nn.Hardsigmoid: "hardsigmoid",
}


def _tree_for(module: nn.Module, path: str) -> OperatorTree:
    """The unary tree equivalent to ``module``; ValueError for settings no operator reproduces."""
    kind = type(module)
    name = ACTIVATION_TREES.get(kind) or OPTIONAL_ACTIVATION_TREES[kind]
    unsupported: str | None = None
    if isinstance(module, nn.GELU) and module.approximate != "none":
        unsupported = f"approximate={module.approximate!r} (only 'none' has an equivalent operator)"
    elif isinstance(module, nn.ELU) and module.alpha != 1.0:
        unsupported = f"alpha={module.alpha} (only alpha=1.0 has an equivalent operator)"
    elif isinstance(module, nn.Softplus) and (module.beta != 1.0 or module.threshold != 20.0):
        unsupported = (
            f"beta={module.beta}, threshold={module.threshold} "
            "(only beta=1, threshold=20 have an equivalent operator)"
        )
    elif isinstance(module, nn.LeakyReLU) and module.negative_slope != 0.01:
        unsupported = f"negative_slope={module.negative_slope} (only 0.01 has an equivalent operator)"
    elif kind is nn.Hardtanh and (module.min_val != -1.0 or module.max_val != 1.0):
        # kind, not isinstance: ReLU6 subclasses Hardtanh and has its own operator.
        unsupported = (
            f"min_val={module.min_val}, max_val={module.max_val} "
            "(only -1, 1 have an equivalent operator)"
        )
    if unsupported is not None:
        raise ValueError(
            f"cannot make {path or '<root>'} ({kind.__name__}) searchable: {unsupported}; "
            "replace it by a supported setting or by a TreeActivation yourself"
        )
    if name not in UNARY:
        raise ValueError(f"no unary operator {name!r} for {kind.__name__}; valid: {', '.join(sorted(UNARY))}")
    return OperatorTree.unary(name)


def make_searchable(model: nn.Module, include: Iterable[type[nn.Module]] = ()) -> nn.Module:
    """Replace every activation module of ``model``, in place, by an equivalent TreeActivation slot.

    The replaced types are the keys of :data:`ACTIVATION_TREES` (ReLU, ReLU6, SiLU, GELU, ELU, Tanh,
    Hardswish, Softplus, Mish, LogSigmoid, SELU, Softsign, LeakyReLU, Hardtanh), matched by exact
    type (a subclass may compute something else). ``include`` adds types from
    :data:`OPTIONAL_ACTIVATION_TREES` (``nn.Sigmoid``, ``nn.Hardsigmoid``): sigmoid gates, such as
    the squeeze-excitation scales of EfficientNet and MobileNetV3, are not sites unless asked for.
    Each slot holds the unary tree that computes the same function with α = β = 1, so the network's
    output is unchanged.

    Notes:
        - A module *instance* is one site however often it is used: torchvision's ResNet calls one
          ``relu`` module several times per block, and all those calls share one slot (registered under
          every path that held the instance).
        - Functional activations called inside ``forward`` (``F.relu(x)``, ``torch.tanh(x)``) are not
          modules and cannot be seen; they stay as they are.
        - PReLU (learnable per-channel slopes), CELU, GLU and other types without an equivalent
          operator are left alone.
        - Settings no operator reproduces raise ValueError naming the module's path: GELU with
          ``approximate='tanh'``, ELU with ``alpha != 1``, Softplus with non-default beta/threshold,
          LeakyReLU with ``negative_slope != 0.01``, Hardtanh with bounds other than (-1, 1).
          (An error rather than a skip, because a silently unsearched site would bias the search.)
        - Existing TreeActivation slots are kept, so calling it twice is harmless.

    Args:
        model: Any ``nn.Module``; modified in place.
        include: Extra activation types to replace, from :data:`OPTIONAL_ACTIVATION_TREES`.

    Returns:
        ``model`` itself.

    Example:
        .. code-block:: python

            model = make_searchable(torchvision.models.resnet18(weights=None))
            sites(model)  # ['relu', 'layer1.0.relu', ...]
    """
    types = dict(ACTIVATION_TREES)
    for kind in include:
        if kind not in OPTIONAL_ACTIVATION_TREES and kind not in ACTIVATION_TREES:
            valid = ", ".join(t.__name__ for t in (*OPTIONAL_ACTIVATION_TREES, *ACTIVATION_TREES))
            raise ValueError(f"cannot include {getattr(kind, '__name__', kind)!r}; valid: {valid}")
        types[kind] = OPTIONAL_ACTIVATION_TREES.get(kind) or ACTIVATION_TREES[kind]
    if type(model) in types:
        raise ValueError(f"{type(model).__name__} is itself an activation; wrap it in a container first")
    reference = _reference_tensor(model)
    # One replacement per instance (keyed by id) so a shared module stays shared.
    replacements: dict[int, nn.Module] = {}
    targets: list[tuple[str, nn.Module]] = [
        (path, m)
        for path, m in model.named_modules(remove_duplicate=False)
        if type(m) in types and path  # exact type: a subclass may compute something else
    ]
    for path, module in targets:
        if id(module) not in replacements:
            replacements[id(module)] = _slot_like(reference, _tree_for(module, path))
        set_module(model, path, replacements[id(module)])
    return model


def _slot_like(reference: Tensor | None, tree: OperatorTree) -> TreeActivation:
    """A TreeActivation for ``tree`` on the device and dtype of ``reference`` (the model's), if any."""
    slot = TreeActivation(tree)
    return slot if reference is None else slot.to(device=reference.device, dtype=reference.dtype)


def _reference_tensor(model: nn.Module) -> Tensor | None:
    """The model's first floating-point parameter or buffer: where its new slots should live."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return next((t for t in tensors if t.is_floating_point()), None)


def sites(model: nn.Module) -> list[str]:
    """Module paths of the TreeActivation slots of ``model``, in model (registration) order.

    A slot registered under several paths (a shared instance) is listed once, by its first path.
    """
    return [path for path, m in model.named_modules() if isinstance(m, TreeActivation)]


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule of ``model`` at dotted ``path`` (e.g. ``"features.act2_1"``) by ``module``."""
    if not path:
        raise ValueError("path must name a submodule, not the model itself")
    parent_path, _, name = path.rpartition(".")
    try:
        parent = model.get_submodule(parent_path)
    except AttributeError as err:
        raise ValueError(f"no submodule {parent_path!r} in {type(model).__name__}: {err}") from None
    if name not in parent._modules:
        children = ", ".join(parent._modules) or "none"
        raise ValueError(f"no submodule {path!r}; children of {parent_path or '<root>'}: {children}")
    setattr(parent, name, module)


def set_trees(model: nn.Module, trees: Mapping[str, OperatorTree], learn_scale: bool = False) -> None:
    """Put ``trees[site]`` into every given site of ``model`` (a new TreeActivation per site).

    The new slot keeps the old slot's device and dtype, and replaces the old one under every path
    it was registered at (a shared slot stays shared). Sites not in ``trees`` are left as they are.
    """
    slots = {path: m for path, m in model.named_modules(remove_duplicate=False)
             if isinstance(m, TreeActivation)}
    for site in trees:
        if site not in slots:
            valid = ", ".join(sites(model)) or "none"
            raise ValueError(f"unknown site {site!r}; the model's sites: {valid}")
    for site, tree in trees.items():
        old = slots[site]
        new = TreeActivation(tree, learn_scale=learn_scale).to(device=old.alpha.device,
                                                                dtype=old.alpha.dtype)
        for path, module in list(slots.items()):
            if module is old:
                set_module(model, path, new)
                slots[path] = new


# ----------------------------------------------------------------------------------------- builders


def _numbered_to_named(state: MutableMapping[str, Any], prefix: str, container: nn.Module) -> None:
    """Rename, in place, keys that address ``container``'s children by position (``"3.weight"``).

    The children keep the order they had when they were numbered, so position ``i`` is the ``i``-th
    named child; keys that already use names are left alone.
    """
    names = list(container._modules)
    for key in [k for k in state if k.startswith(prefix)]:
        head, dot, rest = key[len(prefix):].partition(".")
        if dot and head.isdigit() and int(head) < len(names):
            state[f"{prefix}{names[int(head)]}.{rest}"] = state.pop(key)


_LENET5_LAYERS: tuple[str, ...] = (
    "conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten", "fc1", "act3", "fc2", "act4", "fc3",
)


class LeNet5(nn.Sequential):
    """LeNet-5 as an ``nn.Sequential`` whose layers have names (``conv1``, ``act1``, ``pool1`` …).

    Indexing (``model[7]``) still works; a state dict keyed by position (``"0.weight"``) loads too.
    """

    def __init__(self, num_classes: int, in_channels: int, side: int) -> None:
        layers = (
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )
        super().__init__(OrderedDict(zip(_LENET5_LAYERS, layers)))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        _numbered_to_named(state_dict, prefix, self)
        super()._load_from_state_dict(state_dict, prefix, *args)


def lenet5(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> LeNet5:
    """Classic LeNet-5 with ReLU: 2 conv + 2 hidden fc activations, 4 sites.

    ``conv1`` 5x5 6ch (padding 2) -> ``act1`` -> ``pool1`` -> ``conv2`` 5x5 16ch -> ``act2`` ->
    ``pool2`` -> ``flatten`` -> ``fc1`` 120 -> ``act3`` -> ``fc2`` 84 -> ``act4`` -> ``fc3``
    ``num_classes``; the sites are ``act1`` … ``act4``. The first conv is always padded by 2, the
    common MNIST form: on 28 px input the flattened size is the classic 16·5·5 = 400, on 32 px it is
    16·6·6 = 576; it is computed from ``image_size`` (at least 12).
    """
    side = (image_size // 2 - 4) // 2  # after conv(pad 2) -> pool -> conv(5) -> pool
    if side < 1:
        raise ValueError(f"lenet5 needs image_size >= 12, got {image_size}")
    return LeNet5(num_classes, in_channels, side)


_VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """VGG with batch norm for small images: ``features`` (conv-bn-act blocks), ``pool``, ``classifier``.

    Layers carry the names of the VGG paper's released models: in ``features``, block ``b``'s
    ``c``-th convolution is ``conv{b}_{c}``, followed by ``bn{b}_{c}`` and ``act{b}_{c}``, and the
    block ends with ``pool{b}``; the classifier is ``fc6``, ``act6``, ``fc7``, ``act7``, ``fc8``.
    A state dict keyed by position (``"features.3.weight"``) loads too.
    """

    def __init__(self, config: Iterable[int | str], num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {}
        channels = in_channels
        block, conv = 1, 1
        for item in config:
            if item == "M":
                # ceil_mode keeps odd or tiny sizes (28 px: 28-14-7-4-2-1) from shrinking to zero;
                # on 32 px it is the plain 2x2 pooling.
                layers[f"pool{block}"] = nn.MaxPool2d(2, ceil_mode=True)
                block, conv = block + 1, 1
            else:
                assert isinstance(item, int)
                layers[f"conv{block}_{conv}"] = nn.Conv2d(channels, item, 3, padding=1)
                layers[f"bn{block}_{conv}"] = nn.BatchNorm2d(item)
                layers[f"act{block}_{conv}"] = nn.ReLU()
                channels, conv = item, conv + 1
        self.features = nn.Sequential(OrderedDict(layers))
        # 32 px input ends at 1x1 already; larger inputs are averaged down to it.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(OrderedDict(
            fc6=nn.Linear(channels, 512),
            act6=nn.ReLU(),
            fc7=nn.Linear(512, 512),
            act7=nn.ReLU(),
            fc8=nn.Linear(512, num_classes),
        ))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        _numbered_to_named(state_dict, f"{prefix}features.", self.features)
        _numbered_to_named(state_dict, f"{prefix}classifier.", self.classifier)
        super()._load_from_state_dict(state_dict, prefix, *args)


def vgg16(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> VGG:
    """True VGG-16 with batch norm (13 conv layers) for 32x32 input: 15 sites (13 conv + 2 fc).

    Sites ``features.act1_1`` … ``features.act5_3`` and ``classifier.act6``, ``classifier.act7``
    (see :class:`VGG`). Classifier Linear(512, 512)-act-Linear(512, 512)-act-Linear(512,
    ``num_classes``), no dropout. Every activation is its own module instance. Other image sizes
    work through ceil-mode pooling and a final adaptive average pool.
    """
    if image_size < 1:
        raise ValueError(f"vgg16 needs image_size >= 1, got {image_size}")
    return VGG(_VGG16_CONFIG, num_classes, in_channels)


class BasicBlock(nn.Module):
    """ResNet basic block with its own activation instances: act1 inside, act2 after the residual add."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stride-1 stem without max pool, four stages of BasicBlocks."""

    def __init__(self, blocks: tuple[int, ...], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act = nn.ReLU()
        stages: list[nn.Module] = []
        in_planes = 64
        for i, count in enumerate(blocks):
            planes = 64 * 2**i
            stage: list[nn.Module] = []
            for j in range(count):
                stage.append(BasicBlock(in_planes, planes, stride=2 if i > 0 and j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> CifarResNet:
    """CIFAR ResNet-18: 3x3 stride-1 stem, no max pool, BasicBlocks [2, 2, 2, 2]; 17 sites.

    The stem activation ``act`` plus two per block (``layer1.0.act1`` inside, ``layer1.0.act2``
    after the residual add, up to ``layer4.1.act2``), each its own module instance. Any image size works (global average pool before the classifier).
    """
    if image_size < 1:
        raise ValueError(f"resnet18 needs image_size >= 1, got {image_size}")
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels)


def efficientnet_b0(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """torchvision's EfficientNet-B0 (random weights); every SiLU is a site (49).

    Sites keep torchvision's module names (``features.0.2`` for the stem, ``features.1.0.block.0.2``
    …, ``features.8.2``), so torchvision's EfficientNet-B0 state dicts load as they are.

    Adaptations: for ``in_channels != 3`` the stem conv is replaced by one taking ``in_channels``;
    for small inputs (``image_size <= 32``, e.g. ImageNet-16 or CIFAR) the stem conv has stride 1 so
    the feature maps do not collapse to 1x1 early (total stride 16 instead of 32). The
    squeeze-excitation sigmoid gates stay plain ``nn.Sigmoid`` and are not sites by default.
    """
    # Imported here: torchvision.models pulls in torch._dynamo, a second of every worker's start.
    import torchvision.models

    model = torchvision.models.efficientnet_b0(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    assert isinstance(stem, nn.Conv2d)
    stride = 1 if image_size <= 32 else 2
    if in_channels != stem.in_channels or stride != stem.stride[0]:
        new = nn.Conv2d(in_channels, stem.out_channels, 3, stride=stride, padding=1, bias=False)
        model.features[0][0] = new
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": lenet5,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "efficientnet_b0": efficientnet_b0,
}
"""The built-in networks by name, each built by :func:`build_model`."""

MODEL_SOURCES: tuple[str, ...] = ("torchvision:<name>", "timm:<name>", "<module>:<callable>")
"""What ``[model] name`` takes besides the names of :data:`MODELS`."""


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    *,
    kwargs: Mapping[str, Any] | None = None,
    search_dir: str | None = None,
) -> nn.Module:
    """Build a network with plain torch activations from a model source.

    Args:
        name: A name of :data:`MODELS`; ``"torchvision:<name>"`` (``torchvision.models.get_model``,
            random weights, its stem adapted to ``in_channels``); ``"timm:<name>"`` (needs timm);
            or ``"<module>:<callable>"``, a function or class returning an ``nn.Module``, called
            with ``num_classes``, ``in_channels`` and ``image_size`` where its signature accepts
            them.
        num_classes / in_channels / image_size: What the data needs.
        kwargs: More keyword arguments for the builder (``[model.kwargs]``).
        search_dir: Where ``<module>`` is looked for before ``sys.path`` (the config's folder).

    Raises:
        ValueError: An unknown name (:class:`~safs_optuna.sources.SourceError` for a source that
            cannot be imported, raises, or returns something that is not an ``nn.Module``).
    """
    from .sources import SourceError, call_accepting, is_import_path, resolve

    arch = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    extra = dict(kwargs or {})
    what = f"[model] name {name!r}"
    if name in MODELS:
        if extra:
            raise SourceError(f"{what}: the built-in models take no [model.kwargs], got {', '.join(extra)}")
        model = MODELS[name](**arch)
    elif name.startswith("torchvision:"):
        model = _torchvision_model(name.split(":", 1)[1], arch, extra, what)
    elif name.startswith("timm:"):
        model = _timm_model(name.split(":", 1)[1], arch, extra, what)
    elif is_import_path(name):
        model = call_accepting(resolve(name, search_dir, "[model] name"), arch, extra, what)
    else:
        valid = ", ".join([*sorted(MODELS), *MODEL_SOURCES])
        raise ValueError(f"unknown model {name!r}; valid: {valid}")
    if not isinstance(model, nn.Module):
        raise SourceError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision_model(name: str, arch: Mapping[str, int], extra: dict[str, Any], what: str) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)``, stem adapted."""
    import torchvision.models

    from .sources import SourceError

    if "weights" in extra and extra["weights"] is not None:
        raise SourceError(f"{what}: weights are never downloaded; load yours with [dense] checkpoint")
    extra.pop("weights", None)
    valid = torchvision.models.list_models()
    if name not in valid:
        import difflib

        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SourceError(f"{what}: torchvision has no model {name!r}{hint}")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=arch["num_classes"], **extra)
    except Exception as exc:  # noqa: BLE001 - the builders raise many kinds on bad arguments
        raise SourceError(f"{what}: torchvision could not build it: {' '.join(str(exc).split())}") from None
    adapt_stem(model, arch["in_channels"])
    return model


def _timm_model(name: str, arch: Mapping[str, int], extra: dict[str, Any], what: str) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=..., in_chans=...)``."""
    from .sources import SourceError

    try:
        import timm
    except ImportError:
        raise SourceError(f"{what}: timm is not installed; pip install 'safs-optuna[timm]'") from None
    if extra.get("pretrained"):
        raise SourceError(f"{what}: weights are never downloaded; load yours with [dense] checkpoint")
    extra.pop("pretrained", None)
    try:
        return timm.create_model(name, pretrained=False, num_classes=arch["num_classes"],
                                 in_chans=arch["in_channels"], **extra)
    except Exception as exc:  # noqa: BLE001 - unknown names and bad arguments
        raise SourceError(f"{what}: timm could not build it: {' '.join(str(exc).split())}") from None


def adapt_stem(model: nn.Module, in_channels: int) -> nn.Module:
    """Make the network's first convolution take ``in_channels`` (torchvision's take 3).

    The first ``nn.Conv2d`` in module order is replaced by an ungrouped one with the same kernel,
    stride, padding and bias and ``in_channels`` inputs (freshly initialised: the weights are
    random anyway, as nothing is downloaded). A model that already takes ``in_channels`` is left
    as it is.
    """
    path, stem = next(((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if stem is None or stem.in_channels == in_channels:
        return model
    new = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stride=stem.stride,
                    padding=stem.padding, dilation=stem.dilation, bias=stem.bias is not None,
                    padding_mode=stem.padding_mode)
    set_module(model, path, new)
    return model


def require_sites(model: nn.Module, name: str) -> list[str]:
    """The model's sites (it must be searchable already); a model with none gets one clear line."""
    from .sources import SourceError

    found = sites(model)
    if not found:
        kinds = ", ".join(sorted(t.__name__ for t in ACTIVATION_TREES))
        raise SourceError(
            f"[model] name {name!r}: 0 activation sites found — the network has no activation "
            f"modules ({kinds}) to search; activations called as functions in forward (F.relu(x), "
            "torch.tanh(x)) have no module to replace: use nn.ReLU() and the like as submodules")
    return found
