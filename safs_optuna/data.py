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
* ``folder:<dir>`` — images in torchvision's ``ImageFolder`` layout: ``<dir>/train/<class>/*.png``
  (or ``.jpg``…), ``<dir>/test/<class>/…`` and, when present, ``<dir>/val/<class>/…``. Decoded
  into memory when the float tensors take at most :data:`IN_MEMORY_BYTES`, read through a
  ``DataLoader`` otherwise.
* ``<module>:<callable>`` — the user's own function (see :func:`as_splits`): it returns
  :class:`Splits` or ``(train, val, test)`` map-style datasets, ``val`` possibly ``None``.

Splits of user datasets may hold any map-style ``torch.utils.data.Dataset`` of ``(input, label)``
pairs; :func:`safs_optuna.training.fit` reads those through a ``DataLoader`` and keeps its fast
path for ``TensorDataset``.
"""

from __future__ import annotations

import contextlib
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

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = [
    "DATASETS",
    "DatasetFormatError",
    "DatasetDownloadError",
    "DatasetNotFoundError",
    "IN_MEMORY_BYTES",
    "Splits",
    "as_splits",
    "default_root",
    "labels_of",
    "load",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("quickstart", "mnist", "fashion_mnist", "cifar10", "imagenet16")
"""Registered dataset names; ``idx:<dir>`` and ``imagenet16-<classes>`` are accepted as well."""

QUICKSTART_FILE = "fashion_mnist_quickstart.npz"

IN_MEMORY_BYTES = 1 << 30
"""An image folder whose decoded float32 images take at most this many bytes is held in memory."""
# Images read from a folder too large for memory: the mean and std come from this many of them.
_STATS_SAMPLE = 10_000

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


class DatasetDownloadError(DatasetNotFoundError):
    """A dataset download failed (no network, a proxy, a refusing host, a checksum mismatch, a full
    disk); the message names the dataset, the folder, the cause and how to get the data offline.
    Whatever the download had written is removed again."""


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
        train: Training images (float32 NCHW, normalised) and labels (int64): a
            ``TensorDataset`` for the built-in datasets, any map-style ``Dataset`` of
            ``(input, label)`` pairs for user data.
        val: Validation split, carved from the official training set with a fixed seed.
        test: The official test split; never use it for selection.
        num_classes: Number of classes; labels are ``0 .. num_classes - 1``.
        in_channels: Image channels (1 or 3).
        image_size: Height and width of the (square) images.
        name: The dataset name given to :func:`load`.
        mean: Per-channel mean used for normalisation (of pixel values scaled to 0..1); empty
            for data a user function normalised itself.
        std: Per-channel standard deviation used for normalisation.
    """

    train: Dataset
    val: Dataset
    test: Dataset
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
        if fraction == 1.0:
            return dataclasses.replace(self)
        index = _stratified_subset(labels_of(self.train), fraction, seed)
        if isinstance(self.train, TensorDataset):
            images, labels = self.train.tensors
            return dataclasses.replace(self, train=TensorDataset(images[index], labels[index]))
        return dataclasses.replace(self, train=Subset(self.train, index.tolist()))

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
    image_size: int | None = None,
    channels: int | None = None,
    num_classes: int | None = None,
    search_dir: str | os.PathLike[str] | None = None,
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
        image_size: ``folder:`` only: resize every image to this square size (default: the
            images' own size, which must then be the same for all).
        channels: ``folder:`` only: read images as 1 (grayscale) or 3 (RGB) channels (default:
            1 when the first training image is grayscale, else 3).
        num_classes: Classes of a user function's data (default: the largest label + 1).
        search_dir: Where a ``<module>:<callable>`` source is looked for before ``sys.path``.

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
    if key.startswith("folder:"):
        return _load_folder(Path(key[len("folder:"):]).expanduser(), key, val_size, seed, image_size, channels)
    from .sources import call_accepting, is_import_path, resolve

    if is_import_path(key):
        source = resolve(key, search_dir, "[data] name")
        value = call_accepting(source, {"root": str(root_path), "seed": seed}, {}, f"[data] name {key!r}")
        return as_splits(value, key, val_size=val_size, seed=seed, num_classes=num_classes)
    num_classes = None  # known for named datasets; from the labels for idx:
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
            valid = ", ".join(DATASETS + ("imagenet16-<classes>", "idx:<dir>", "folder:<dir>",
                                          "<module>:<callable>"))
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
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as exc:
        # torchvision says "Dataset not found" when the files are absent.
        if "not found" not in str(exc).lower():
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
    if download:  # only now: files already on this machine are never fetched again
        with _download_guard(key, root):
            train = cls(str(root), train=True, download=True)
            test = cls(str(root), train=False, download=True)
        return _torchvision_arrays(train) + _torchvision_arrays(test)
    how = f"pass download=True to fetch it into {root} (needs the internet)"
    if key == "fashion_mnist":
        how = "`apt-get install dataset-fashion-mnist`, or " + how
    raise DatasetNotFoundError(
        f"dataset {key!r} not found; looked in: {'; '.join(looked)}. To get it: {how}, "
        f"or set $SAFS_OPTUNA_DATA / root= to a folder that holds it"
    )


# What torchvision writes under root for each dataset (removed again after a failed download),
# and how to put the data there by hand.
_DOWNLOAD_PATHS = {
    "mnist": ("MNIST",),
    "fashion_mnist": ("FashionMNIST",),
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
}
_OFFLINE = {
    "mnist": "copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
             "and t10k-labels-idx1-ubyte.gz (or the unpacked files) into {folder}",
    "cifar10": "unpack cifar-10-python.tar.gz into {root} (giving {folder}/data_batch_1 .. data_batch_5, "
               "test_batch, batches.meta)",
}
_OFFLINE["fashion_mnist"] = _OFFLINE["mnist"]
# Another source that needs no download, for each dataset.
_OFFLINE_SOURCE = {
    "mnist": '"idx:<dir>" (a folder of those four files)',
    "fashion_mnist": '"idx:<dir>" (a folder of those four files)',
    "cifar10": '"folder:<dir>" (images in <dir>/train/<class>/ and <dir>/test/<class>/)',
}
# How common download failures read, in the texts of urllib, http.client, ssl and torchvision,
# and what each means in a few words.
_DOWNLOAD_CAUSES = (
    (r"No space left|Disk quota exceeded|\[Errno 28\]", "no space left on the device"),
    (r"HTTP Error 407|Proxy Authentication Required", "the proxy asks for a login (HTTP 407)"),
    (r"Tunnel connection failed:?\s*([^>]*)", "the proxy refused the connection ({0})"),
    (r"Name or service not known|name resolution|nodename nor servname|getaddrinfo failed|"
     r"No address associated", "the host name cannot be resolved (no network, or no DNS)"),
    (r"Connection refused", "the host refused the connection"),
    (r"Network is unreachable|No route to host", "no network (the host is unreachable)"),
    (r"timed out", "the connection timed out"),
    (r"CERTIFICATE_VERIFY_FAILED|\bSSL", "the TLS certificate check failed (a proxy that intercepts HTTPS?)"),
    (r"HTTP Error (\d+):\s*([^>]*)", "the server answered HTTP {0} {1}"),
    (r"corrupted|checksum|MD5", "a checksum mismatch: the downloaded file is damaged"),
    (r"<urlopen error ([^>]*)>", "{0}"),
)


@contextlib.contextmanager
def _download_guard(key: str, root: Path) -> Iterator[None]:
    """Around torchvision's download of ``key`` into ``root``: a failure becomes one
    :class:`DatasetDownloadError`, and every file and folder the download made or changed is
    removed, so that a cut-off file never passes for the data on a later run."""
    paths = [root / p for p in _DOWNLOAD_PATHS[key]]
    before = _tree(root, paths)
    try:
        yield
    except BaseException as exc:
        _undo(root, paths, before)
        if not isinstance(exc, Exception):
            raise  # Ctrl-C: the partial files are gone, the interrupt goes on
        folder = root / _TORCHVISION[key][1]
        how = _OFFLINE[key].format(folder=folder, root=root)
        raise DatasetDownloadError(
            f"dataset {key!r}: the download into {folder} failed: {_download_cause(exc)}. To run offline: "
            f"{how} (torchvision's layout), or set [data] root to a folder with that layout, or set "
            f"[data] name to {_OFFLINE_SOURCE[key]}"
        ) from exc


def _tree(root: Path, paths: list[Path]) -> dict[Path, tuple[int, int] | None]:
    """Every file (size, mtime) and folder (None) at or below ``paths``, and ``root`` itself."""
    found: dict[Path, tuple[int, int] | None] = {root: None} if root.is_dir() else {}
    for path in paths:
        if not path.exists():
            continue
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            stat = p.stat()
            found[p] = None if p.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return found


def _undo(root: Path, paths: list[Path], before: dict[Path, tuple[int, int] | None]) -> None:
    """Remove what appeared or changed since ``before`` (folders only when empty, deepest first)."""
    after = _tree(root, paths)
    for p, stamp in after.items():
        if stamp is not None and before.get(p, ()) != stamp:
            with contextlib.suppress(OSError):
                p.unlink()
    for p in sorted((p for p, stamp in after.items() if stamp is None and p not in before),
                    key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            p.rmdir()


def _download_cause(exc: BaseException) -> str:
    """Why a download failed, in a few words: the first known pattern in the texts of ``exc`` and
    its causes, else the innermost text."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(" ".join(str(exc).split()) or type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    text = " ".join(texts)
    for pattern, words in _DOWNLOAD_CAUSES:
        found = re.search(pattern, text, re.IGNORECASE)
        if found:
            return words.format(*(g.strip() for g in found.groups()))
    return texts[-1][:160]


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
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> Splits:
    """Normalised splits; the validation split is ``val`` when given, else carved from train."""
    if x_train.shape[2] != x_train.shape[3]:
        raise ValueError(f"dataset {name!r}: images are {x_train.shape[2:]}, only square ones are supported")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"dataset {name!r}: train images {x_train.shape[1:]} but test images {x_test.shape[1:]}")
    train_images = _to_float(x_train)
    test_images = _to_float(x_test)
    val_images = _to_float(val[0]) if val is not None else None
    # Statistics of the whole official training set, as the usual published constants are, so
    # the network's input does not depend on the validation seed.
    std, mean = torch.std_mean(train_images, dim=(0, 2, 3))
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays finite
    for images in (train_images, test_images, val_images):
        if images is not None:
            images.sub_(mean[None, :, None, None]).div_(std[None, :, None, None])

    train_labels = torch.as_tensor(np.asarray(y_train, dtype=np.int64))
    test_labels = torch.as_tensor(np.asarray(y_test, dtype=np.int64))
    n = len(train_labels)
    n_val = int(round(val_size * n))
    if val is not None:
        val_labels = torch.as_tensor(np.asarray(val[1], dtype=np.int64))
        train_set, val_set = TensorDataset(train_images, train_labels), TensorDataset(val_images, val_labels)
        n_val, n = 1, 2  # the checks below are about carving, which a given split does not need
    if n < 2:
        raise ValueError(f"dataset {name!r} has {n} training image(s): at least 2 are needed to "
                         "hold one out for validation")
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"val_size={val_size} leaves {n_val} of {n} training images for validation and "
            f"{n - n_val} for training; for this dataset use val_size from {1 / n:.6g} "
            f"to {(n - 1) / n:.6g}"
        )
    if val is None:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        # Sorted so that each split keeps the file's order; training shuffles anyway.
        val_index, train_index = perm[:n_val].sort().values, perm[n_val:].sort().values
        train_set = TensorDataset(train_images[train_index], train_labels[train_index])
        val_set = TensorDataset(train_images[val_index], train_labels[val_index])
    largest = int(max(train_labels.max(), test_labels.max() if len(test_labels) else 0))
    if int(min(train_labels.min(), test_labels.min() if len(test_labels) else 0)) < 0:
        raise ValueError(f"dataset {name!r}: labels must be non-negative class indices")
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"dataset {name!r}: label {largest} out of range for {num_classes} classes")
    return Splits(
        train=train_set,
        val=val_set,
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


# --- user data: any map-style Dataset ------------------------------------------------------------

_LABELS: "weakref.WeakKeyDictionary[Any, torch.Tensor]" = weakref.WeakKeyDictionary()


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The int64 labels of a map-style dataset of ``(input, label)`` pairs, in index order.

    Read without touching the inputs where the dataset says them (``TensorDataset``, a
    ``targets`` attribute as torchvision's datasets have, a ``Subset`` of those); otherwise by
    reading every item once, remembered for the dataset object.
    """
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(np.asarray(targets), dtype=torch.long)
    try:
        cached = _LABELS.get(dataset)
    except TypeError:  # not weakly referable: read it every time
        cached = None
    if cached is not None:
        return cached
    labels = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)
    try:
        _LABELS[dataset] = labels
    except TypeError:
        pass
    return labels


def _is_dataset(value: Any) -> bool:
    return hasattr(value, "__getitem__") and hasattr(value, "__len__")


def as_splits(value: Any, name: str, *, val_size: float = 0.1, seed: int = 0,
              num_classes: int | None = None) -> Splits:
    """What a user's data function returned, as :class:`Splits`.

    Args:
        value: :class:`Splits` (used as it is), or ``(train, val, test)``: map-style datasets of
            ``(input, label)`` pairs with integer labels ``0 .. num_classes - 1``; ``val`` may be
            ``None``, and is then carved from ``train`` (``val_size``, seeded by ``seed``).
        name: How the data is named in messages and reports.
        num_classes: The number of classes (default: the largest label + 1).

    Raises:
        ValueError: Not one of those shapes, an empty split, or labels out of range.
    """
    if isinstance(value, Splits):
        return value
    if not (isinstance(value, (tuple, list)) and len(value) == 3):
        raise ValueError(f"[data] name {name!r} returned {type(value).__name__}; expected Splits or a "
                         "(train, val, test) tuple of map-style datasets (val may be None)")
    train, val, test = value
    for split, ds in (("train", train), ("val", val), ("test", test)):
        if ds is None and split == "val":
            continue
        if not _is_dataset(ds):
            raise ValueError(f"[data] name {name!r}: {split} is {type(ds).__name__}, not a map-style "
                             "torch.utils.data.Dataset (with __getitem__ and __len__)")
        if len(ds) == 0:
            raise ValueError(f"[data] name {name!r}: the {split} split is empty")
    if val is None:
        train, val = _carve_val(train, name, val_size, seed)
    sample = train[0]
    if not (isinstance(sample, (tuple, list)) and len(sample) >= 2 and isinstance(sample[0], torch.Tensor)):
        raise ValueError(f"[data] name {name!r}: train[0] is {type(sample).__name__}; items must be "
                         "(input tensor, label) pairs")
    shape = tuple(sample[0].shape)
    labels = [labels_of(ds) for ds in (train, val, test)]
    largest = max(int(x.max()) for x in labels)
    if min(int(x.min()) for x in labels) < 0:
        raise ValueError(f"[data] name {name!r}: labels must be class indices >= 0")
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"[data] name {name!r}: label {largest} out of range for [data] num_classes "
                         f"= {num_classes}")
    return Splits(train=train, val=val, test=test, num_classes=num_classes,
                  in_channels=int(shape[0]) if len(shape) == 3 else 1,
                  image_size=int(shape[-1]) if shape else 1, name=name)


def _carve_val(train: Dataset, name: str, val_size: float, seed: int) -> tuple[Dataset, Dataset]:
    n = len(train)
    n_val = int(round(val_size * n))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"[data] name {name!r}: val_size={val_size} leaves {n_val} of {n} training "
                         "items for validation; give a val split or another val_size")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_index, train_index = perm[:n_val].sort().values, perm[n_val:].sort().values
    if isinstance(train, TensorDataset):
        return (TensorDataset(*(t[train_index] for t in train.tensors)),
                TensorDataset(*(t[val_index] for t in train.tensors)))
    return Subset(train, train_index.tolist()), Subset(train, val_index.tolist())


# --- image folders -------------------------------------------------------------------------------


def _load_folder(folder: Path, name: str, val_size: float, seed: int, image_size: int | None,
                 channels: int | None) -> Splits:
    """``folder:<dir>`` (see the module docstring)."""
    from torchvision.datasets import ImageFolder

    layout = f"expected {folder}/train/<class>/<image> and {folder}/test/<class>/<image>"
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise DatasetNotFoundError(f"{name}: no folder {folder / split}; {layout}")
    try:
        found = {split: ImageFolder(str(folder / split)) for split in ("train", "val", "test")
                 if (folder / split).is_dir()}
    except FileNotFoundError as exc:  # a split without class folders or images
        raise DatasetNotFoundError(f"{name}: {' '.join(str(exc).split())}; {layout}") from None
    train = found["train"]
    if len(train.classes) < 2:
        raise ValueError(f"{folder / 'train'} has {len(train.classes)} class folder(s) "
                         f"({', '.join(train.classes)}); a classifier needs at least 2")
    for split in ("val", "test"):
        if split in found and found[split].classes != train.classes:
            other = sorted(set(found[split].classes) ^ set(train.classes))
            raise ValueError(f"{folder / split} has other classes than {folder / 'train'} "
                             f"(differ: {', '.join(other)}); both need the same class folders")
    from PIL import Image

    with Image.open(train.samples[0][0]) as first:  # as stored: ImageFolder's loader makes RGB of all
        first.load()
    channels = channels or (1 if first.mode in ("L", "1", "I", "I;16", "F") else 3)
    if channels not in (1, 3):
        raise ValueError(f"[data] channels must be 1 or 3, got {channels}")
    if image_size is None:
        if first.size[0] != first.size[1]:
            raise ValueError(f"{train.samples[0][0]} is {first.size[0]}x{first.size[1]}; set "
                             "[data] image_size to resize every image to a square")
        image_size = first.size[0]
    transform = _folder_transform(channels, image_size)
    for ds in found.values():
        ds.transform = transform
    n = sum(len(ds) for ds in found.values())
    if n * channels * image_size * image_size * 4 <= IN_MEMORY_BYTES:
        arrays = {split: _decode(ds, name, image_size) for split, ds in found.items()}
        val = arrays.get("val")
        return _make_splits(name, *arrays["train"], *arrays["test"], val_size=val_size, seed=seed,
                            num_classes=len(train.classes), val=val)
    return _lazy_folder_splits(found, name, val_size, seed, channels, image_size)


def _folder_transform(channels: int, image_size: int) -> Callable[[Any], torch.Tensor]:
    from torchvision import transforms

    mode = transforms.Grayscale(1) if channels == 1 else transforms.Lambda(lambda im: im.convert("RGB"))
    return transforms.Compose([mode, transforms.Resize((image_size, image_size)), transforms.PILToTensor()])


def _decode(ds: Any, name: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image of an ImageFolder as uint8 NCHW, and its labels."""
    images = np.empty((len(ds), *ds[0][0].shape), dtype=np.uint8) if len(ds) else np.empty((0,))
    for i in range(len(ds)):
        try:
            images[i] = ds[i][0].numpy()
        except (OSError, ValueError) as exc:  # a damaged or non-image file
            raise DatasetFormatError(f"{name}: {ds.samples[i][0]} cannot be read as an image ({exc})") from None
    return images, np.asarray(ds.targets, dtype=np.int64)


class _Normalized(Dataset):
    """A dataset of uint8 images, as float32 normalised with fixed per-channel statistics."""

    def __init__(self, base: Dataset, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.base, self.mean, self.std = base, mean[:, None, None], std[:, None, None]
        self.targets = getattr(base, "targets", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return (image.float().div_(255.0) - self.mean) / self.std, label


def _lazy_folder_splits(found: dict[str, Any], name: str, val_size: float, seed: int, channels: int,
                        image_size: int) -> Splits:
    """An image folder too large for memory: decoded image by image, as a DataLoader reads it."""
    train = found["train"]
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(len(train), generator=generator)[:_STATS_SAMPLE].tolist()
    pixels = torch.stack([train[i][0].float().div_(255.0) for i in sample])
    std, mean = torch.std_mean(pixels, dim=(0, 2, 3))
    std = torch.where(std > 0, std, torch.ones_like(std))
    wrapped = {split: _Normalized(ds, mean, std) for split, ds in found.items()}
    val = wrapped.get("val")
    train_ds = wrapped["train"]
    if val is None:
        train_ds, val = _carve_val(train_ds, name, val_size, seed)
    return Splits(train=train_ds, val=val, test=wrapped["test"], num_classes=len(train.classes),
                  in_channels=channels, image_size=image_size, name=name,
                  mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
