"""Datasets as in-memory train / validation / test splits.

Every split is a :class:`~torch.utils.data.TensorDataset` of float32 NCHW images, normalised
with the per-channel mean and standard deviation of the dataset's official training set, and
int64 labels. Keeping everything in memory lets training slice tensors directly instead of
decoding images in a ``DataLoader`` worker, which is what makes many short fine-tunes cheap.

The validation split is carved from the official training set with a fixed seed; the official
test split is returned untouched and is never meant for selection.

Names (see :data:`DATASETS`):

* ``quickstart`` — a class-balanced 10 000 + 2 000 image subset of Fashion-MNIST shipped inside
  the package (``safs_optuna/datasets/``), so the quick start works offline anywhere.
* ``mnist``, ``fashion_mnist``, ``cifar10`` — through torchvision, from ``root``. Nothing is
  downloaded unless ``download=True``. ``fashion_mnist`` is also found where Debian's
  ``dataset-fashion-mnist`` package installs it.
* ``imagenet16`` — the downsampled ImageNet 16x16 pickles of Chrabaszcz et al. (2017), restricted
  to the first 120 classes as NAS-Bench-201's ImageNet16-120; ``imagenet16-<k>`` keeps the first
  ``k`` classes (``imagenet16-1000`` keeps all). Its official ``val_data`` is the test split.
* ``idx:<dir>`` — any folder of MNIST-format IDX files.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickle
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DATASETS",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "Splits",
    "default_root",
    "load",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("quickstart", "mnist", "fashion_mnist", "cifar10", "imagenet16")
"""Registered dataset names; ``idx:<dir>`` and ``imagenet16-<classes>`` are accepted as well."""

QUICKSTART_FILE = "fashion_mnist_quickstart.npz"

# Where Debian's ``dataset-fashion-mnist`` package puts the IDX files. A module-level tuple so
# that tests can point it at a folder of their own.
SYSTEM_FASHION_MNIST_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)

IMAGENET16_DIRS: tuple[str, ...] = ("ImageNet16", "imagenet16", "")
IMAGENET16_TRAIN = tuple(f"train_data_batch_{i}" for i in range(1, 11))
IMAGENET16_VAL = "val_data"
IMAGENET16_DEFAULT_CLASSES = 120

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# The usual spelling first, then the original MNIST site's ("train-images.idx3-ubyte").
_IDX_STEMS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on this machine; the message names every place looked and how to get it."""


class DatasetFormatError(ValueError):
    """A dataset file is damaged or not in its format; the message names the file and the fault."""


@dataclass(repr=False)
class Splits:
    """Train / validation / test splits of one dataset, in memory.

    Example:

        .. code::

            import safs_optuna as so

            splits = so.data.load("quickstart")
            print(splits)  # Splits(quickstart: train 9000, val 1000, test 2000, 10 classes, 1x28x28)
            images, labels = splits.train.tensors
            small = splits.search_subset(0.25, seed=0)  # for cheap search trials

    Attributes:
        train: Training images (float32 NCHW, normalised) and labels (int64).
        val: Validation split, carved from the official training set with a fixed seed.
        test: The official test split; never use it for selection.
        num_classes: Number of classes; labels are ``0 .. num_classes - 1``.
        in_channels: Image channels (1 or 3).
        image_size: Height and width of the (square) images.
        name: The dataset name given to :func:`load`.
        mean: Per-channel mean used for normalisation (of pixel values scaled to 0..1).
        std: Per-channel standard deviation used for normalisation.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def search_subset(self, fraction: float, seed: int = 0) -> Splits:
        """A seeded, class-stratified ``fraction`` of the training split; val and test unchanged.

        Every class keeps its share of the subset (largest-remainder rounding), so that a small
        search fidelity does not drop rare classes by chance.

        Args:
            fraction: Share of the training split to keep, in ``(0, 1]``.
            seed: Seed of the selection; the same seed gives the same subset.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction must be a number in (0, 1], got {fraction!r}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        images, labels = self.train.tensors
        if fraction == 1.0:
            return dataclasses.replace(self)
        index = _stratified_subset(labels, fraction, seed)
        return dataclasses.replace(self, train=TensorDataset(images[index], labels[index]))

    def __repr__(self) -> str:
        c, s = self.in_channels, self.image_size
        return (
            f"Splits({self.name}: train {len(self.train)}, val {len(self.val)}, "
            f"test {len(self.test)}, {self.num_classes} classes, {c}x{s}x{s})"
        )


def default_root() -> Path:
    """Where datasets are looked for: ``$SAFS_OPTUNA_DATA``, else ``~/.cache/safs_optuna``."""
    env = os.environ.get("SAFS_OPTUNA_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "safs_optuna"


def load(
    name: str,
    root: str | os.PathLike[str] | None = None,
    val_size: float = 0.1,
    seed: int = 0,
    *,
    download: bool = False,
) -> Splits:
    """Load a dataset as normalised in-memory train / validation / test splits.

    Args:
        name: One of :data:`DATASETS`, ``imagenet16-<classes>``, or ``idx:<dir>`` for a folder of
            MNIST-format IDX files.
        root: Folder holding the datasets; defaults to :func:`default_root`.
        val_size: Share of the official training set held out for validation, in ``(0, 1)``.
        seed: Seed of the validation split.
        download: Let torchvision download ``mnist``, ``fashion_mnist`` or ``cifar10`` into
            ``root`` when they are missing (needs the internet). Off by default: loading never
            touches the network unless asked to.

    Raises:
        ValueError: Unknown name or bad ``val_size``.
        DatasetNotFoundError: The data is not on this machine (a ``FileNotFoundError``); the
            message lists every place looked and how to get the data.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise TypeError(f"val_size must be a number in (0, 1), got {val_size!r}")
    if not 0.0 < val_size < 1.0:
        raise ValueError(f"val_size must be in (0, 1), got {val_size!r}")
    root_path = Path(root).expanduser() if root is not None else default_root()
    key = name.strip()
    num_classes: int | None = None  # known for named datasets; from the labels for idx:
    if key.startswith("idx:"):
        raw = _load_idx_folder(Path(key[4:]).expanduser())
    else:
        key = key.lower().replace("-", "_")
        match = re.fullmatch(r"imagenet16(?:_(\d+))?", key)
        if key == "quickstart":
            raw, num_classes = _load_quickstart(), 10
        elif key in ("mnist", "fashion_mnist", "cifar10"):
            raw, num_classes = _load_torchvision(key, root_path, download), 10
        elif match:
            num_classes = int(match.group(1) or IMAGENET16_DEFAULT_CLASSES)
            if not 1 <= num_classes <= 1000:
                raise ValueError(f"imagenet16 has 1 to 1000 classes, got {name!r}")
            raw = _load_imagenet16(root_path, num_classes)
        else:
            valid = ", ".join(DATASETS + ("imagenet16-<classes>", "idx:<dir>"))
            raise ValueError(f"unknown dataset {name!r}; valid: {valid}")
    return _make_splits(name.strip(), *raw, val_size=val_size, seed=seed, num_classes=num_classes)


# Larger than any real IDX dataset (ImageNet at full size is ~150 GB, not an IDX file): a
# header claiming more is damaged, and must not make us allocate it.
IDX_MAX_BYTES = 1 << 34


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or not, as a numpy array.

    The format: two zero bytes, a type code, the number of dimensions, then each dimension as a
    big-endian uint32, then the data in C order, big-endian.

    Raises:
        DatasetFormatError: The file is damaged, truncated, has trailing bytes, or its header
            claims more than :data:`IDX_MAX_BYTES` of data; the message names the file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            buffer = _read_idx_payload(path, f)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # damaged or cut-off gzip stream
        raise DatasetFormatError(f"{path}: damaged or truncated gzip data ({exc})") from None
    dtype = _IDX_DTYPES[buffer[2]]
    ndim = buffer[3]
    shape = tuple(int(d) for d in np.frombuffer(buffer, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(buffer, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


def _read_idx_payload(path: Path, f) -> bytearray:
    """The whole file, read only after its header shows how much there must be."""
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DatasetFormatError(f"{path} is not an IDX file (bad magic number)")
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"{c:#04x}" for c in sorted(_IDX_DTYPES))
        raise DatasetFormatError(f"{path}: unknown IDX type code {code:#04x}; valid: {valid}")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DatasetFormatError(f"{path}: truncated IDX header ({ndim} dimensions announced, "
                                 f"{len(dims) // 4} present)")
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = math.prod(shape) * _IDX_DTYPES[code].itemsize
    if expected > IDX_MAX_BYTES:
        raise DatasetFormatError(f"{path}: header says {shape} ({expected} bytes of data), more than "
                                 f"the {IDX_MAX_BYTES} an IDX file may hold; the file is damaged")
    payload = f.read(expected + 1)  # one more byte shows trailing data without reading it all
    if len(payload) != expected:
        found = "more" if len(payload) > expected else str(len(payload))
        raise DatasetFormatError(
            f"{path}: header says {shape} ({expected} bytes of data), file has {found}; "
            "the file is truncated or damaged"
        )
    return bytearray(head + dims + payload)  # writable, so torch.from_numpy can share it


# --- loaders: each returns (x_train, y_train, x_test, y_test) with x uint8/float NCHW ----------

_Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _load_quickstart() -> _Raw:
    ref = resources.files("safs_optuna") / "datasets" / QUICKSTART_FILE
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise DatasetNotFoundError(
                f"the packaged quickstart data is missing: looked in {path}. Reinstall safs-optuna, "
                "or rebuild it with `python safs_optuna/datasets/make_quickstart.py` "
                "(needs `apt-get install dataset-fashion-mnist`)"
            )
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return (
        arrays["x_train"][:, None],
        arrays["y_train"],
        arrays["x_test"][:, None],
        arrays["y_test"],
    )


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for role, stems in _IDX_STEMS.items():
        candidates = [folder / (stem + ext) for stem in stems for ext in ("", ".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found[role] = path
    return found


def _read_idx_split(files: dict[str, Path]) -> _Raw:
    out = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"])
        labels = read_idx(files[f"{split}_labels"])
        if images.ndim != 3:
            raise DatasetFormatError(
                f"{files[f'{split}_images']}: expected N x H x W images, got {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetFormatError(
                f"{files[f'{split}_labels']}: expected {len(images)} labels, got shape {labels.shape}"
            )
        out += [images[:, None], labels]
    return tuple(out)  # type: ignore[return-value]


def _idx_names() -> str:
    return ", ".join(stems[0] + "[.gz]" for stems in _IDX_STEMS.values())


def _load_idx_folder(folder: Path) -> _Raw:
    files = _find_idx_files(folder)
    if files is None:
        raise DatasetNotFoundError(
            f"no MNIST-format IDX files in {folder}: looked for {_idx_names()} there"
        )
    return _read_idx_split(files)


_TORCHVISION = {
    # name: (torchvision class name, folder under root it uses)
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}


def _load_torchvision(key: str, root: Path, download: bool) -> _Raw:
    import torchvision.datasets

    cls_name, sub = _TORCHVISION[key]
    cls = getattr(torchvision.datasets, cls_name)
    looked = [f"{root / sub} (torchvision layout)"]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        # torchvision says "Dataset not found" when the files are absent and download is off.
        if download or "not found" not in str(exc).lower():
            raise
    else:
        return _torchvision_arrays(train) + _torchvision_arrays(test)

    if key != "cifar10":
        # torchvision wants the unpacked files; a folder of the .gz downloads serves as well.
        files = _find_idx_files(root / sub)
        if files is not None:
            return _read_idx_split(files)
    if key == "fashion_mnist":
        for folder in map(Path, SYSTEM_FASHION_MNIST_DIRS):
            files = _find_idx_files(folder)
            if files is not None:
                return _read_idx_split(files)
            looked.append(f"{folder} (Debian package dataset-fashion-mnist)")
    how = f"pass download=True to fetch it into {root} (needs the internet)"
    if key == "fashion_mnist":
        how = "`apt-get install dataset-fashion-mnist`, or " + how
    raise DatasetNotFoundError(
        f"dataset {key!r} not found; looked in: {'; '.join(looked)}. To get it: {how}, "
        f"or set $SAFS_OPTUNA_DATA / root= to a folder that holds it"
    )


def _torchvision_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(ds.data)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # HWC -> CHW
    return images, np.asarray(ds.targets)


def _load_imagenet16(root: Path, classes: int) -> _Raw:
    names = IMAGENET16_TRAIN + (IMAGENET16_VAL,)
    folders = [root / sub if sub else root for sub in IMAGENET16_DIRS]
    folder = next((f for f in folders if all((f / n).is_file() for n in names)), None)
    if folder is None:
        raise DatasetNotFoundError(
            f"dataset 'imagenet16' not found; looked for {', '.join(names)} in: "
            f"{'; '.join(map(str, folders))}. To get it: download the 16x16 downsampled ImageNet "
            "(Imagenet16_train.zip / Imagenet16_val.zip, Chrabaszcz et al. 2017, "
            "https://image-net.org/download-images, needs an ImageNet account) and unpack both "
            f"into {root / 'ImageNet16'}"
        )
    train = [_read_imagenet16_batch(folder / n, classes) for n in IMAGENET16_TRAIN]
    x_test, y_test = _read_imagenet16_batch(folder / IMAGENET16_VAL, classes)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles ImageNet16 batches — dicts of numpy arrays and lists — and nothing else.

    ``pickle.load`` would run any callable a crafted file names; this one resolves only the
    globals that rebuild numpy arrays, dtypes and scalars, and plain containers.
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("builtins", "list"), ("builtins", "dict"), ("__builtin__", "list"), ("__builtin__", "dict"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: an ImageNet16 batch "
                                         "holds only numpy arrays and lists")
        return super().find_class(module, name)


def _read_imagenet16_batch(path: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as exc:  # what a damaged or foreign pickle can raise
        raise DatasetFormatError(f"{path}: not a readable ImageNet16 batch ({exc})") from None
    if not isinstance(entry, dict) or not {"data", "labels"} <= entry.keys():
        raise DatasetFormatError(f"{path}: not an ImageNet16 batch (expected a dict with 'data' "
                                 "and 'labels')")
    # Labels are 1-based; like NAS-Bench-201's ImageNet16-120, keep labels 1..classes.
    try:
        labels = np.asarray(entry["labels"], dtype=np.int64).reshape(-1)
        data = np.asarray(entry["data"], dtype=np.uint8)
        data = data.reshape(len(labels), 3, 16, 16)
    except (ValueError, TypeError) as exc:
        raise DatasetFormatError(f"{path}: 'data' is not {len(labels)} images of 3x16x16 bytes "
                                 f"matching 'labels' ({exc})") from None
    keep = (labels >= 1) & (labels <= classes)
    return data[keep], labels[keep] - 1


# --- splits --------------------------------------------------------------------------------------


def _make_splits(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    val_size: float,
    seed: int,
    num_classes: int | None = None,
) -> Splits:
    if x_train.shape[2] != x_train.shape[3]:
        raise ValueError(f"dataset {name!r}: images are {x_train.shape[2:]}, only square ones are supported")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"dataset {name!r}: train images {x_train.shape[1:]} but test images {x_test.shape[1:]}")
    train_images = _to_float(x_train)
    test_images = _to_float(x_test)
    # Statistics of the whole official training set, as the usual published constants are, so
    # the network's input does not depend on the validation seed.
    std, mean = torch.std_mean(train_images, dim=(0, 2, 3))
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays finite
    for images in (train_images, test_images):
        images.sub_(mean[None, :, None, None]).div_(std[None, :, None, None])

    train_labels = torch.as_tensor(np.asarray(y_train, dtype=np.int64))
    test_labels = torch.as_tensor(np.asarray(y_test, dtype=np.int64))
    n = len(train_labels)
    n_val = int(round(val_size * n))
    if n < 2:
        raise ValueError(f"dataset {name!r} has {n} training image(s): at least 2 are needed to "
                         "hold one out for validation")
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"val_size={val_size} leaves {n_val} of {n} training images for validation and "
            f"{n - n_val} for training; for this dataset use val_size from {1 / n:.6g} "
            f"to {(n - 1) / n:.6g}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    # Sorted so that each split keeps the file's order; training shuffles anyway.
    val_index, train_index = perm[:n_val].sort().values, perm[n_val:].sort().values
    largest = int(max(train_labels.max(), test_labels.max() if len(test_labels) else 0))
    if int(min(train_labels.min(), test_labels.min() if len(test_labels) else 0)) < 0:
        raise ValueError(f"dataset {name!r}: labels must be non-negative class indices")
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"dataset {name!r}: label {largest} out of range for {num_classes} classes")
    return Splits(
        train=TensorDataset(train_images[train_index], train_labels[train_index]),
        val=TensorDataset(train_images[val_index], train_labels[val_index]),
        test=TensorDataset(test_images, test_labels),
        num_classes=num_classes,
        in_channels=int(x_train.shape[1]),
        image_size=int(x_train.shape[2]),
        name=name,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def _to_float(images: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32).div_(255.0)
    return tensor.to(torch.float32)


def _stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    classes, counts = torch.unique(labels, return_counts=True)
    total = max(1, int(round(fraction * len(labels))))
    # Largest-remainder apportionment: per-class sizes sum to exactly `total`.
    quota = counts.to(torch.float64) * total / len(labels)
    take = quota.floor().long()
    remainder = total - int(take.sum())
    if remainder > 0:
        order = torch.argsort(quota - take, descending=True, stable=True)
        take[order[:remainder]] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values
