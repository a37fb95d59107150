"""Tests for safs_optuna.data: the packaged quickstart data, splits, and the local loaders.

Nothing here downloads: the tests use the packaged quickstart file and tiny IDX / pickle files
they write themselves.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from safs_optuna import data
from safs_optuna.data import DatasetFormatError, DatasetNotFoundError, Splits, load, read_idx

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` in the IDX format, gzip-compressed when ``path`` ends in .gz."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[big_endian.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + big_endian.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def make_idx_folder(folder: Path, n_train: int = 200, n_test: int = 50, size: int = 4,
                    classes: int = 5, gz: bool = False, stem_sep: str = "-") -> None:
    """Tiny MNIST-format dataset; training image i has pixel (0, 0) == i, an id to track it by."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        if prefix == "train":
            images[:, 0, 0] = np.arange(n)
        labels = (np.arange(n) % classes).astype(np.uint8)
        write_idx(folder / f"{prefix}-images{stem_sep}idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels{stem_sep}idx1-ubyte{ext}", labels)


def image_ids(dataset, splits: Splits) -> list[int]:
    """Recover the ids written by make_idx_folder from normalised images."""
    pixel = dataset.tensors[0][:, 0, 0, 0] * splits.std[0] + splits.mean[0]
    return torch.round(pixel * 255).long().tolist()


@pytest.fixture(scope="module")
def quickstart() -> Splits:
    return load("quickstart")


def test_quickstart_shapes_dtypes_and_sizes(quickstart: Splits) -> None:
    assert (quickstart.num_classes, quickstart.in_channels, quickstart.image_size) == (10, 1, 28)
    assert (len(quickstart.train), len(quickstart.val), len(quickstart.test)) == (9000, 1000, 2000)
    for split in (quickstart.train, quickstart.val, quickstart.test):
        images, labels = split.tensors
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28)
        assert images.is_contiguous()
        assert labels.dtype == torch.int64
        assert int(labels.min()) == 0 and int(labels.max()) == 9
    # Class balanced: the packaged subset has 1 000 + 200 images per class.
    all_train = torch.cat([quickstart.train.tensors[1], quickstart.val.tensors[1]])
    assert torch.bincount(all_train).tolist() == [1000] * 10
    assert torch.bincount(quickstart.test.tensors[1]).tolist() == [200] * 10
    assert "quickstart" in repr(quickstart) and "9000" in repr(quickstart)


def test_quickstart_is_normalised_with_the_training_statistics(quickstart: Splits) -> None:
    # Fashion-MNIST's published statistics are mean 0.2860, std 0.3530.
    assert quickstart.mean[0] == pytest.approx(0.286, abs=0.01)
    assert quickstart.std[0] == pytest.approx(0.353, abs=0.01)
    train_all = torch.cat([quickstart.train.tensors[0], quickstart.val.tensors[0]])
    assert float(train_all.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(train_all.std()) == pytest.approx(1.0, abs=1e-3)
    # The test split uses the training statistics, not its own.
    assert abs(float(quickstart.test.tensors[0].mean())) < 0.05
    # Raw pixel values come back exactly from the stored statistics.
    pixels = quickstart.test.tensors[0] * quickstart.std[0] + quickstart.mean[0]
    assert float(pixels.min()) == pytest.approx(0.0, abs=1e-5)
    assert float(pixels.max()) == pytest.approx(1.0, abs=1e-5)


def test_val_is_carved_from_train_without_overlap(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    splits = load(f"idx:{tmp_path}", val_size=0.25, seed=3)
    train_ids, val_ids = image_ids(splits.train, splits), image_ids(splits.val, splits)
    assert len(val_ids) == 50 and len(train_ids) == 150
    assert set(train_ids).isdisjoint(val_ids)
    assert sorted(train_ids + val_ids) == list(range(200))
    # Labels travel with their images (label == id % 5 in the generated data).
    assert splits.val.tensors[1].tolist() == [i % 5 for i in val_ids]
    assert len(splits.test) == 50


def test_val_split_is_deterministic_by_seed(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    a, b = load(f"idx:{tmp_path}", seed=1), load(f"idx:{tmp_path}", seed=1)
    c = load(f"idx:{tmp_path}", seed=2)
    assert image_ids(a.val, a) == image_ids(b.val, b)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert image_ids(a.val, a) != image_ids(c.val, c)
    # Normalisation does not depend on the validation seed.
    assert a.mean == c.mean and a.std == c.std


@pytest.mark.parametrize("val_size", [0.0, 1.0, -0.1, 1.5])
def test_bad_val_size_is_rejected(val_size: float) -> None:
    with pytest.raises(ValueError, match="val_size"):
        load("quickstart", val_size=val_size)


def test_search_subset_size_stratification_and_determinism(quickstart: Splits) -> None:
    sub = quickstart.search_subset(0.1, seed=0)
    assert len(sub.train) == 900
    assert sub.val is quickstart.val and sub.test is quickstart.test
    assert (sub.num_classes, sub.name) == (quickstart.num_classes, quickstart.name)
    # Every class keeps its share (largest-remainder rounding: off by at most one).
    full = torch.bincount(quickstart.train.tensors[1], minlength=10).double()
    part = torch.bincount(sub.train.tensors[1], minlength=10).double()
    assert torch.all((part - full * 0.1).abs() < 1.0)
    again = quickstart.search_subset(0.1, seed=0)
    assert torch.equal(sub.train.tensors[0], again.train.tensors[0])
    other = quickstart.search_subset(0.1, seed=1)
    assert not torch.equal(sub.train.tensors[0], other.train.tensors[0])
    # The subset's images are images of the training split (a spot check by exact match).
    first = sub.train.tensors[0][0]
    assert (quickstart.train.tensors[0] == first).flatten(1).all(dim=1).any()
    assert len(quickstart.search_subset(1.0).train) == len(quickstart.train)
    assert len(quickstart.search_subset(1e-6).train) == 1


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.01])
def test_search_subset_rejects_fractions_outside_unit_interval(quickstart: Splits, fraction: float) -> None:
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        quickstart.search_subset(fraction)


def test_search_subset_rejects_non_numbers(quickstart: Splits) -> None:
    with pytest.raises(TypeError, match="fraction"):
        quickstart.search_subset("0.5")  # type: ignore[arg-type]


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader_reads_raw_and_gzipped_files(tmp_path: Path, gz: bool) -> None:
    make_idx_folder(tmp_path, size=6, classes=7, gz=gz)
    splits = load(f"idx:{tmp_path}")
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (7, 1, 6)
    assert splits.train.tensors[0].shape == (180, 1, 6, 6)
    assert splits.test.tensors[0].dtype == torch.float32
    assert splits.test.tensors[1].tolist() == [i % 7 for i in range(50)]
    assert splits.name == f"idx:{tmp_path}"


def test_idx_loader_gives_the_same_data_from_gz_and_raw(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "raw")
    make_idx_folder(tmp_path / "gz", gz=True)
    a, b = load(f"idx:{tmp_path / 'raw'}"), load(f"idx:{tmp_path / 'gz'}")
    for x, y in zip(a.train.tensors + a.test.tensors, b.train.tensors + b.test.tensors):
        assert torch.equal(x, y)


def test_idx_loader_accepts_the_original_mnist_file_names(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, stem_sep=".")  # train-images.idx3-ubyte, as on the MNIST site
    assert len(load(f"idx:{tmp_path}").test) == 50


def test_read_idx_round_trips_other_dtypes_and_rejects_garbage(tmp_path: Path) -> None:
    values = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "ints.gz", values.astype(">i4"))
    out = read_idx(tmp_path / "ints.gz")
    assert out.shape == (2, 3, 4) and np.array_equal(out, values)
    floats = np.linspace(-1, 1, 6, dtype=np.float32)
    write_idx(tmp_path / "floats", floats.astype(">f4"))
    assert np.array_equal(read_idx(tmp_path / "floats"), floats)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="10"):
        read_idx(tmp_path / "short")


def test_missing_idx_folder_names_the_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load(f"idx:{tmp_path / 'nowhere'}")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert "train-images-idx3-ubyte[.gz]" in str(info.value)


def test_mnist_is_read_through_torchvision_from_root(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "MNIST" / "raw", size=28, n_train=30, n_test=10, classes=10)
    splits = load("mnist", root=tmp_path, val_size=0.2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 10)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 28)


def test_mnist_folder_with_only_the_gz_downloads_is_read_too(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "MNIST" / "raw", n_train=30, n_test=10, classes=10, gz=True)
    assert len(load("mnist", root=tmp_path).test) == 10


def test_labels_out_of_range_for_a_named_dataset_are_an_error(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "MNIST" / "raw", n_train=30, n_test=10, classes=12)
    with pytest.raises(ValueError, match="label 11 out of range for 10 classes"):
        load("mnist", root=tmp_path)


def test_fashion_mnist_falls_back_to_the_debian_folder(tmp_path: Path, monkeypatch) -> None:
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    make_idx_folder(system, gz=True, classes=10)
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIRS", (str(system),))
    splits = load("fashion_mnist", root=tmp_path / "empty")
    assert len(splits.test) == 50 and splits.num_classes == 10


def test_missing_dataset_names_every_place_looked_and_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    nowhere = tmp_path / "no-debian-package"
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIRS", (str(nowhere),))
    with pytest.raises(DatasetNotFoundError) as info:
        load("fashion_mnist", root=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "FashionMNIST" / "raw") in message and str(nowhere) in message
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message

    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing downloaded, nothing created


def test_default_root_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SAFS_OPTUNA_DATA", str(tmp_path / "data-home"))
    assert data.default_root() == tmp_path / "data-home"
    with pytest.raises(FileNotFoundError) as info:
        load("mnist")
    assert str(tmp_path / "data-home" / "MNIST" / "raw") in str(info.value)
    monkeypatch.delenv("SAFS_OPTUNA_DATA")
    assert data.default_root() == Path.home() / ".cache" / "safs_optuna"


def write_imagenet16(folder: Path, per_batch: int = 26, labels_upto: int = 130) -> None:
    """Tiny ImageNet16 pickles: channel c of every image is around 10 + 90 * c."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]
    for b, name in enumerate(names):
        images = np.empty((per_batch, 3, 16, 16), dtype=np.uint8)
        for c in range(3):
            images[:, c] = 10 + 90 * c + rng.integers(0, 10, size=(per_batch, 16, 16))
        labels = [1 + (b * per_batch + i) * 7 % labels_upto for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.reshape(per_batch, -1), "labels": labels}, f)


def test_imagenet16_keeps_the_first_120_classes(tmp_path: Path) -> None:
    write_imagenet16(tmp_path / "ImageNet16")
    splits = load("imagenet16", root=tmp_path, val_size=0.2)
    assert (splits.in_channels, splits.image_size) == (3, 16)
    labels = torch.cat([splits.train.tensors[1], splits.val.tensors[1]])
    # Labels 1..130 in the files: 1..120 kept and shifted to 0..119.
    assert int(labels.min()) >= 0 and int(labels.max()) <= 119
    expected = sum(
        1 + (b * 26 + i) * 7 % 130 <= 120 for b in range(10) for i in range(26)
    )
    assert len(labels) == expected
    assert splits.num_classes == 120  # by definition, even if a class is absent from the data
    assert splits.train.tensors[0].shape[1:] == (3, 16, 16)
    # Rows are channel-first (R plane, G plane, B plane): channel means stay apart.
    assert splits.mean[0] < splits.mean[1] < splits.mean[2]
    assert splits.mean[1] == pytest.approx((100 + 4.5) / 255, abs=0.01)


def test_imagenet16_class_count_in_the_name_and_files_directly_in_root(tmp_path: Path) -> None:
    write_imagenet16(tmp_path)
    splits = load("imagenet16-130", root=tmp_path)
    labels = torch.cat([splits.train.tensors[1], splits.val.tensors[1], splits.test.tensors[1]])
    assert len(labels) == 11 * 26 and int(labels.max()) <= 129
    with pytest.raises(ValueError, match="1 to 1000"):
        load("imagenet16-0", root=tmp_path)


def test_missing_imagenet16_names_the_folders_looked_in(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load("imagenet16", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "ImageNet16") in message and "train_data_batch_1" in message
    assert "Imagenet16_train" in message


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        load("svhn")
    message = str(info.value)
    assert "'svhn'" in message
    for name in data.DATASETS + ("idx:<dir>",):
        assert name in message
    assert data.DATASETS == ("quickstart", "mnist", "fashion_mnist", "cifar10", "imagenet16")


# --------------------------------------------------------------------------- damaged files
def _damaged_idx(folder: Path, damage: str, gz: bool) -> Path:
    """The training images of a tiny IDX folder, damaged; the path of the damaged file."""
    make_idx_folder(folder, gz=gz)
    path = folder / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    if damage == "truncated data":
        raw = raw[: len(raw) - 100]
    elif damage == "truncated header":
        raw = raw[:9]
    elif damage == "trailing bytes":
        raw = raw + b"\x00" * 7
    elif damage == "huge header":  # 2^32-1 cubed images: must be refused, not allocated
        raw = raw[:4] + struct.pack(">3I", *(3 * [0xFFFFFFFF])) + raw[16:]
    elif damage == "bad type":
        raw = raw[:2] + b"\x42" + raw[3:]
    payload = gzip.compress(raw) if gz else raw
    if damage == "cut gzip":
        payload = payload[: len(payload) // 2]
    elif damage == "corrupt gzip":
        payload = payload[:10] + bytes(b ^ 0xFF for b in payload[10:40]) + payload[40:]
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize("damage, gz", [
    ("truncated data", False), ("truncated data", True), ("truncated header", False),
    ("trailing bytes", False), ("trailing bytes", True), ("huge header", False), ("huge header", True),
    ("bad type", False), ("cut gzip", True), ("corrupt gzip", True),
])
def test_damaged_idx_file_is_one_error_naming_it(tmp_path: Path, damage: str, gz: bool) -> None:
    path = _damaged_idx(tmp_path, damage, gz)
    with pytest.raises(DatasetFormatError) as err:
        load(f"idx:{tmp_path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)  # callers catching ValueError keep working


@pytest.mark.parametrize("val_size", [0.001, 0.999])
def test_val_size_leaving_a_split_empty_names_the_valid_range(tmp_path: Path, val_size: float) -> None:
    make_idx_folder(tmp_path, n_train=200)
    with pytest.raises(ValueError) as err:
        load(f"idx:{tmp_path}", val_size=val_size)
    message = str(err.value)
    assert f"val_size={val_size}" in message and "from 0.005 to 0.995" in message
    # The ends of the range it names are accepted.
    assert len(load(f"idx:{tmp_path}", val_size=0.005).val) == 1
    assert len(load(f"idx:{tmp_path}", val_size=0.995).train) == 1


def test_one_training_image_cannot_be_split(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, n_train=1)
    with pytest.raises(ValueError, match="1 training image"):
        load(f"idx:{tmp_path}", val_size=0.5)


class _RunsCode:
    """Unpickles to a call of os.system, as a crafted dataset file would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["train_data_batch_3", "val_data"])
def test_imagenet16_pickle_that_would_run_code_is_refused(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "ImageNet16"
    write_imagenet16(folder)
    marker = tmp_path / "pwned"
    with open(folder / where, "wb") as f:
        pickle.dump({"data": _RunsCode(marker), "labels": [1]}, f, protocol=2)
    with pytest.raises(DatasetFormatError) as err:
        load("imagenet16", root=tmp_path)
    assert not marker.exists()
    assert str(folder / where) in str(err.value) and "system" in str(err.value)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_imagenet16_batches_of_any_protocol_still_load(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "ImageNet16"
    write_imagenet16(folder)
    batch = folder / "val_data"
    with open(batch, "rb") as f:
        entry = pickle.load(f)
    # As the published files: labels a list, data an array, plus the mean image as an array.
    entry["mean"] = np.zeros(768, dtype=np.float64)
    with open(batch, "wb") as f:
        pickle.dump(entry, f, protocol=protocol)
    assert len(load("imagenet16", root=tmp_path).test) > 0


@pytest.mark.parametrize("content", [b"garbage", b"", "not a dict", "bad shape"])
def test_damaged_imagenet16_batch_is_one_error_naming_it(tmp_path: Path, content) -> None:
    folder = tmp_path / "ImageNet16"
    write_imagenet16(folder)
    batch = folder / "train_data_batch_1"
    if content == "not a dict":
        batch.write_bytes(pickle.dumps([1, 2, 3]))
    elif content == "bad shape":
        batch.write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [1] * 4}))
    else:
        batch.write_bytes(content)
    with pytest.raises(DatasetFormatError, match=str(batch)):
        load("imagenet16", root=tmp_path)
