"""A user's own project, written by the tests: things safs-optuna does not ship.

A model module (GELU, batch norm, a residual add), a data module whose datasets are not
``TensorDataset``s (a transform per item), a folder of PNG images, a training loop with label
smoothing and its own metric name, and checkpoints pruned with plain ``torch.nn.utils.prune``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

MODEL_MODULE = '''
import torch
from torch import nn


class Block(nn.Module):
    """conv-bn, a residual add, then GELU."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + x)


class SmallNet(nn.Module):
    def __init__(self, num_classes, in_channels, width=8):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.act = nn.GELU()
        self.block = Block(width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block(self.act(self.stem(x)))), 1))


def make_net(num_classes, in_channels, width=8):
    return SmallNet(num_classes, in_channels, width)


def make_other(num_classes, in_channels):
    return SmallNet(num_classes, in_channels, 4)


class Functional(nn.Module):
    """Activations called as functions: no module to replace, so no site."""

    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.fc = nn.Linear(in_channels * 12 * 12, num_classes)

    def forward(self, x):
        return torch.relu(self.fc(torch.flatten(x, 1)))


def make_functional(num_classes, in_channels):
    return Functional(num_classes, in_channels)


def make_wrong_width(in_channels):
    return SmallNet(7, in_channels)


def make_broken():
    raise RuntimeError("out of coffee")


def make_not_a_module():
    return "a string"
'''

DATA_MODULE = '''
import torch
from torch.utils.data import Dataset


class Stripes(Dataset):
    """Images with a bright stripe where the class says, normalised per item (a transform)."""

    def __init__(self, n, seed, size=12):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.images = torch.rand(n, 1, size, size, generator=g) * 0.5
        for i, c in enumerate(self.labels.tolist()):
            self.images[i, 0, :, c * 4 : c * 4 + 4] += 0.5

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return (self.images[i] - 0.5) / 0.3, int(self.labels[i])


def make_data():
    return Stripes(360, 0), None, Stripes(120, 1)


def quickstart_part():
    """A tenth of the quick-start data's training split (class-balanced), 300 val and test images."""
    from torch.utils.data import TensorDataset

    import safs_optuna as so

    full = so.data.load("quickstart")
    val, test = full.val.tensors, full.test.tensors
    return (full.search_subset(0.1, seed=0).train, TensorDataset(val[0][:300], val[1][:300]),
            TensorDataset(test[0][:300], test[1][:300]))
'''

FIT_MODULE = '''
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def fit(model, splits, hparams, epochs, report):
    """A plain loop with label smoothing that reports its own metric, top-1 as a fraction."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=hparams.lr, weight_decay=hparams.weight_decay)
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(splits.train, batch_size=hparams.batch_size, shuffle=True, generator=generator)
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = total = 0
        loss_sum = 0.0
        with torch.no_grad():
            for x, y in DataLoader(splits.val, batch_size=256):
                out = model(x.to(device))
                correct += int((out.argmax(1) == y.to(device)).sum())
                loss_sum += float(F.cross_entropy(out, y.to(device), reduction="sum"))
                total += len(y)
        report(epoch, correct / total, loss_sum / total)


def failing_fit(model, splits, hparams, epochs, report):
    raise ValueError("the loop fell over")


def no_sgd_fit(model, splits, hparams, epochs, report):
    if hparams.optimizer == "sgd":
        raise ValueError("this loop has no SGD")
    fit(model, splits, hparams, epochs, report)


def top1(model, dataset):
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=256):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(dataset)
'''


def write_modules(folder: Path) -> None:
    """``netmod.py``, ``datamod.py`` and ``fitmod.py`` in ``folder`` (beside the config)."""
    (folder / "netmod.py").write_text(textwrap.dedent(MODEL_MODULE))
    (folder / "datamod.py").write_text(textwrap.dedent(DATA_MODULE))
    (folder / "fitmod.py").write_text(textwrap.dedent(FIT_MODULE))


def write_images(folder: Path, per_class: int = 40, test_per_class: int = 12, size: int = 12,
                 classes: tuple[str, ...] = ("ant", "bee", "cat"), seed: int = 0) -> Path:
    """An ImageFolder tree of grayscale PNGs: ``train/<class>/*.png`` and ``test/<class>/*.png``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for k, name in enumerate(classes):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = rng.integers(0, 100, (size, size), dtype=np.uint8)
                image[:, (4 * k) % size : (4 * k) % size + 4] += 120
                Image.fromarray(image).save(folder / split / name / f"{i}.png")
    return folder


def write_pruned(folder: Path, in_channels: int = 1, num_classes: int = 3, amount: float = 0.9) -> tuple[Path, Path]:
    """The model of ``netmod.py`` pruned with ``torch.nn.utils.prune.global_unstructured``:
    saved with its ``weight_orig``/``weight_mask`` pairs, and again with the masks removed
    (plain zeros). Returns both paths."""
    import importlib.util

    import torch
    from torch import nn
    from torch.nn.utils import prune

    spec = importlib.util.spec_from_file_location("netmod_for_pruning", folder / "netmod.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.make_net(num_classes, in_channels)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    masked = folder / "pruned_masks.pt"
    torch.save(model.state_dict(), masked)
    for m, name in layers:
        prune.remove(m, name)
    zeros = folder / "pruned_zeros.pt"
    torch.save(model.state_dict(), zeros)
    return masked, zeros


def tiny_config(folder: Path, name: str, model: str, data: str, extra: str = "",
                batch_size: int = 32, fraction: float = 1.0, val_size: float = 0.1, final_epochs: int = 2) -> Path:
    """A config with tiny budgets for the user's sources (2-epoch candidates, no ablations)."""
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(f'''
        name = "{name}"
        seed = 0
        threads = 1
        ablations = false

        [model]
        name = "{model}"

        [data]
        name = "{data}"
        val_size = {val_size}

        [sparsity]
        ratio = 0.9
        scope = "lamp"

        [dense]
        epochs = 1

        [protocol]
        batch_size = {batch_size}

        [activations]
        trials = 4
        epochs = 2
        fraction = {fraction}

        [hpo]
        trials = 2
        epochs = 1
        fraction = {fraction}

        [final]
        epochs = {final_epochs}
    ''') + textwrap.dedent(extra))
    return path
