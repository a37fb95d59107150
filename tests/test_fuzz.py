"""Broken configs and files fail `safs-optuna run` cleanly: one line, the right exit, nothing written.

Every case of the table writes the tiny study config (tests/_tiny.py) into a fresh folder,
breaks one thing — the TOML, a key, a value, the storage, the data folder, a dataset download,
the dense checkpoint, an option — and runs ``safs_optuna.cli.main`` in-process. Each must exit 2
(a usage mistake: the config or the command line, or data it names that is not on this machine
and could not be fetched) or 1 (a file or place that cannot be used), print exactly one line on
stderr that starts ``safs-optuna: `` and names the key or file, print no traceback, and leave the
folder as it was: no database, no artifacts folder, no log, no half-downloaded data.

A second table breaks the artifact store while a run stores its checkpoints: the folder gone,
replaced by a file, unwritable, the disk full. Each must stop the run with one such line, exit 1.
"""

from __future__ import annotations

import errno
import gzip
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from safs_optuna import cli

from ._offline import FAILURES, block_network, serve
from ._tiny import TINY

BASE = TINY.format(trials=3)
CONFIG = "tiny.toml"
USAGE, RUNTIME = 2, 1


# --- building broken inputs -------------------------------------------------------------------


def set_key(text: str, section: str, key: str, raw: str) -> str:
    """``text`` with ``key = raw`` in ``[section]`` ("" for the top level), replacing its line."""
    lines = text.splitlines()
    start = 0
    if section:
        header = f"[{section}]"
        if header not in lines:
            return text + f"\n{header}\n{key} = {raw}\n"
        start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start, end):
        if re.match(rf"{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {raw}"
            return "\n".join(lines) + "\n"
    lines.insert(start, f"{key} = {raw}")
    return "\n".join(lines) + "\n"


def idx(array: np.ndarray, code: int = 0x08) -> bytes:
    """``array`` as an IDX file (the MNIST format)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0C: ">i4"}[code]
    head = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return head + np.ascontiguousarray(array, dtype=dtype).tobytes()


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def idx_folder(folder: Path, train: int = 40, size: int = 28, **replace: bytes | None) -> Path:
    """A valid IDX dataset in ``folder``; ``replace`` swaps a file's bytes (None: leaves it out)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": idx(rng.integers(0, 256, (train, size, size))),
        "train-labels-idx1-ubyte": idx(np.arange(train) % 10),
        "t10k-images-idx3-ubyte": idx(rng.integers(0, 256, (10, size, size))),
        "t10k-labels-idx1-ubyte": idx(np.arange(10) % 10),
    }
    for name, content in replace.items():
        files[name.replace("_", "-")] = content
    for name, content in files.items():
        if content is not None:
            (folder / name).write_bytes(content)
    return folder


def state_dict(**shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    from safs_optuna.models import build_model

    state = build_model("lenet5").state_dict()
    state.update({k: torch.zeros(v) for k, v in shapes.items()})
    return state


@dataclass
class Case:
    """One broken input: ``make(folder)`` writes it and returns the command line."""

    id: str
    make: Callable[[Path], list[str]]
    code: int
    names: tuple[str, ...]
    xfail: str = ""
    marks: list = field(default_factory=list)
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # e.g. the network blocked


def run_args(folder: Path, text: str = BASE, *extra: str, command: str = "run") -> list[str]:
    (folder / CONFIG).write_text(text)
    return [command, str(folder / CONFIG), *extra]


def edit(section: str, key: str, raw: str, code: int = USAGE, names: tuple[str, ...] = ()) -> Case:
    """A case that sets one key; the message must name the key (and ``names``)."""
    where = f"[{section}] {key}" if section else key
    return Case(f"{section or 'top'}.{key}={raw}"[:60],
                lambda d: run_args(d, set_key(BASE, section, key, raw)), code, (where, *names))


def text(id: str, content: str | bytes, names: tuple[str, ...] = ("tiny.toml",)) -> Case:
    """A case whose whole config file is ``content``."""

    def make(d: Path) -> list[str]:
        path = d / CONFIG
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["run", str(path)]

    return Case(id, make, USAGE, names)


def option(id: str, *extra: str, code: int = USAGE, names: tuple[str, ...] = (), command: str = "run",
           xfail: str = "") -> Case:
    """A case with the good config and a bad command-line option."""
    return Case(id, lambda d: run_args(d, BASE, *extra, command=command), code, names, xfail)


def with_file(id: str, section: str, key: str, raw: Callable[[Path], str],
              prepare: Callable[[Path], None], code: int, names: tuple[str, ...]) -> Case:
    """A case that prepares files in the folder, then points ``key`` at them."""

    def make(d: Path) -> list[str]:
        prepare(d)
        return run_args(d, set_key(BASE, section, key, raw(d)))

    return Case(id, make, code, names)


def data(id: str, code: int, names: tuple[str, ...], **files: bytes | None) -> Case:
    """``[data] name = "idx:data"`` with the dataset in folder data, some of its files broken."""

    def make(d: Path) -> list[str]:
        idx_folder(d / "data", **files)
        return run_args(d, set_key(BASE, "data", "name", '"idx:data"'))

    return Case(id, make, code, ("data", *names))


def checkpoint(id: str, content: Callable[[Path], None], names: tuple[str, ...] = ()) -> Case:
    """``[dense] checkpoint = "w.pt"``, its content written by ``content``."""
    return with_file(id, "dense", "checkpoint", lambda d: '"w.pt"', content, RUNTIME,
                     ("[dense] checkpoint", "w.pt", *names))


def storage(id: str, url: str | Callable[[Path], str], code: int, names: tuple[str, ...],
            prepare: Callable[[Path], None] = lambda d: None) -> Case:
    """``storage = <url>`` (a function of the folder, for paths)."""

    def make(d: Path) -> list[str]:
        prepare(d)
        value = url(d) if callable(url) else url
        return run_args(d, set_key(BASE, "", "storage", f'"{value}"'))

    return Case(id, make, code, names)


def download(dataset: str, folder: str, failure: str, offline: str) -> Case:
    """``[data] name = dataset`` with ``download = true`` into the empty folder ``data``, the
    network blocked, and the download failing as ``FAILURES[failure]`` says."""
    fetch, words = FAILURES[failure]

    def make(d: Path) -> list[str]:
        text = set_key(BASE, "data", "name", f'"{dataset}"')
        text = set_key(set_key(text, "data", "root", '"data"'), "data", "download", "true")
        return run_args(d, text)

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        from safs_optuna import data as data_mod

        block_network(monkeypatch)
        monkeypatch.setattr(data_mod, "SYSTEM_FASHION_MNIST_DIRS", ())  # a Debian copy would be used
        if fetch is not None:
            serve(monkeypatch, fetch)

    return Case(f"download-{dataset}-{failure}", make, USAGE,
                (f"dataset {dataset!r}", f"data/{folder}", words, "To run offline", "[data] root", offline),
                patch=patch)


def mkdir(*parts: str) -> Callable[[Path], None]:
    return lambda d: d.joinpath(*parts).mkdir(parents=True)


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(content)


def save(name: str, obj) -> Callable[[Path], None]:
    return lambda d: torch.save(obj, d / name)


class Opaque:
    """A pickled object of a class that ``torch.load(weights_only=True)`` refuses."""


def pickled(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(pickle.dumps(Opaque()))


def read_only(folder: Path) -> None:
    folder.mkdir()
    folder.chmod(0o555)


NOT_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
N = 40  # training images of idx_folder's dataset
GOOD_LABELS = idx(np.arange(N) % 10)

CASES: list[Case] = [
    # --- the file itself: TOML syntax, encoding, no file ---
    text("toml-unterminated-string", 'name = "tiny\n'),
    text("toml-unclosed-table", BASE.replace("[model]", "[model", 1)),
    text("toml-double-equals", BASE.replace("seed = 0", "seed = = 0", 1)),
    text("toml-missing-value", BASE.replace("seed = 0", "seed =", 1)),
    text("toml-duplicate-key", BASE.replace("seed = 0", "seed = 0\nseed = 1", 1)),
    text("toml-duplicate-table", BASE + '\n[model]\nname = "vgg16"\n'),
    text("toml-trailing-comma", BASE.replace("trials = 3\n", "trials = 3,\n", 1)),
    text("toml-unclosed-array", BASE + '[sparsity.x]\nskip = ["a"\n'),
    text("toml-bare-word", BASE.replace('name = "lenet5"', "name = lenet5", 1)),
    text("not-utf8", b'name = "tiny\xff\xfe"\n'),
    text("binary-garbage", bytes(range(256)) * 4),
    text("empty-file", "", ("tiny.toml", "name", "required")),
    text("only-comments", "# a study\n", ("tiny.toml", "name", "required")),
    Case("config-missing", lambda d: ["run", str(d / "nope.toml")], USAGE, ("nope.toml",)),
    Case("config-is-a-folder", lambda d: (d / "c.toml").mkdir() or ["run", str(d / "c.toml")], USAGE,
         ("c.toml",)),
    # --- wrong types ---
    edit("", "name", "5", names=("a string",)),
    edit("", "name", '"my study"'),
    edit("", "seed", '"0"', names=("an integer",)),
    edit("", "seed", "1.5", names=("an integer",)),
    edit("", "threads", "true", names=("an integer",)),
    edit("", "ablations", '"yes"', names=("true or false",)),
    edit("", "device", "1"),
    edit("", "storage", "3"),
    edit("", "artifacts", "[]"),
    text("section-as-a-value", BASE.replace('[model]\nname = "lenet5"', 'model = "lenet5"', 1),
         ("tiny.toml", "[model]", "expected a table")),
    edit("model", "name", "5"),
    edit("data", "val_size", '"0.1"'),
    edit("data", "download", "1"),
    edit("sparsity", "ratio", '"high"'),
    edit("sparsity", "skip", '"0"', names=("array",)),
    edit("sparsity", "skip", "[1]"),
    edit("sparsity", "gradual_epochs", "2.5", names=("an integer",)),
    edit("sparsity", "gradual_epochs", '"5"', names=("an integer",)),
    edit("dense", "epochs", "1.5"),
    edit("dense", "checkpoint", "3"),
    edit("protocol", "lr", '"fast"'),
    edit("protocol", "lr", "nan", names=("finite",)),
    edit("protocol", "lr", "inf", names=("finite",)),
    edit("protocol", "batch_size", "64.0"),
    edit("protocol", "nesterov", '"no"'),
    edit("activations", "trials", '"3"'),
    edit("activations", "epochs", '"forever"', names=('"auto"',)),
    edit("activations", "epochs", "2.5"),
    edit("activations", "unary", '"relu"'),
    edit("hpo", "epochs", '"auto"', names=('"final"',)),
    edit("hpo.space", "lr", "[0.1]"),
    edit("hpo.space", "lr", '[0.001, "a"]'),
    edit("hpo.space", "learn_scale", "true"),
    edit("final", "epochs", "-inf"),
    # --- unknown keys and tables ---
    edit("", "seeds", "[0]", names=("unknown key", "seed")),
    edit("", "extra", "1", names=("unknown key",)),
    edit("model", "width", "2", names=("unknown key",)),
    edit("data", "path", '"x"', names=("unknown key", "valid keys")),
    edit("sparsity", "amount", "0.9", names=("unknown key",)),
    edit("protocol", "learning_rate", "0.1", names=("unknown key",)),
    edit("activations", "trails", "3", names=("unknown key", "trials")),
    edit("hpo", "sampler_args", "1", names=("unknown key",)),
    edit("hpo.space", "lrs", "[0.1, 0.2]", names=("unknown key",)),
    edit("final", "epoch", "3", names=("unknown key", "epochs")),
    text("unknown-table", BASE + "\n[stage3]\ntrials = 1\n", ("tiny.toml", "stage3", "unknown key")),
    # --- out of range: every value names its valid range ---
    edit("", "seed", "-1", names=("2**32",)),
    edit("", "seed", "4294967296", names=("2**32",)),
    edit("", "threads", "-1", names=("[0, 1024]",)),
    edit("", "threads", "100000", names=("[0, 1024]",)),
    edit("data", "val_size", "0", names=("(0.0, 1.0)",)),
    edit("data", "val_size", "1.0", names=("(0.0, 1.0)",)),
    edit("sparsity", "ratio", "0", names=("(0.0, 1.0)", "nothing")),
    edit("sparsity", "ratio", "0.0", names=("(0.0, 1.0)",)),
    edit("sparsity", "ratio", "1", names=("1.0)",)),
    edit("sparsity", "ratio", "-0.5", names=("1.0)",)),
    edit("sparsity", "gradual_epochs", "-1", names=("[0, 100 000]", "one-shot", "-1")),
    edit("sparsity", "gradual_epochs", "1000000", names=("[0, 100 000]",)),
    edit("dense", "epochs", "0", names=("[1, 100 000]", "checkpoint")),
    edit("dense", "epochs", "1000000", names=("100 000",)),
    edit("protocol", "lr", "0", names=("(0.0, 10.0]",)),
    edit("protocol", "lr", "1e6", names=("(0.0, 10.0]",)),
    edit("protocol", "momentum", "1.5", names=("[0.0, 1.0)",)),
    edit("protocol", "weight_decay", "-1", names=("[0.0, 1.0]",)),
    edit("protocol", "weight_decay", "5", names=("[0.0, 1.0]",)),
    edit("protocol", "batch_size", "0", names=("[1, 65 536]",)),
    edit("protocol", "batch_size", "1000000", names=("65 536",)),
    edit("activations", "trials", "0", names=("[1, 100 000]",)),
    edit("activations", "trials", "1000000000", names=("100 000",)),
    edit("activations", "epochs", "0", names=("[1, 100 000]",)),
    edit("activations", "epochs", "1000000", names=("100 000",)),
    edit("activations", "fraction", "0", names=("[0.0001, 1.0]",)),
    edit("activations", "fraction", "1e-6", names=("0.0001",)),
    edit("activations", "fraction", "2", names=("1.0]",)),
    edit("activations", "history", "0", names=("[1, 1000]",)),
    edit("activations", "history", "1000000", names=("[1, 1000]",)),
    edit("hpo", "trials", "200000", names=("100 000",)),
    edit("hpo", "epochs", "0", names=("[1, 100 000]",)),
    edit("hpo", "fraction", "-0.1", names=("[0.0001, 1.0]",)),
    edit("final", "epochs", "0", names=("[1, 100 000]",)),
    edit("final", "epochs", "100001", names=("100 000",)),
    edit("hpo.space", "lr", "[0.1, 0.001]", names=("low < high",)),
    edit("hpo.space", "momentum", "[0.5, 1.5]", names=("[0.0, 1.0)",)),
    edit("hpo.space", "weight_decay", "[0, 1]", names=("log scale",)),
    edit("data", "name", '"imagenet16-0"', names=("1 to 1000",)),
    edit("data", "name", '"imagenet16-5000"', names=("1 to 1000",)),
    # --- unknown names: each lists the valid ones ---
    edit("model", "name", '"lenet6"', names=("lenet5", "resnet18")),
    edit("data", "name", '"mnits"', names=("mnist", "idx:<dir>")),
    edit("sparsity", "scope", '"random"', names=("layer", "global")),
    edit("protocol", "optimizer", '"lion"', names=("sgd", "adam")),
    edit("protocol", "schedule", '"cyclic"', names=("cosine",)),
    Case("protocol.nesterov-with-adam", lambda d: run_args(d, set_key(BASE, "protocol", "nesterov", "true")),
         USAGE, ("[protocol]", "nesterov", "'sgd'")),
    edit("activations", "preset", '"huge"', names=("safs",)),
    edit("activations", "unary", '["relu", "nope"]', names=("nope",)),
    edit("activations", "unary", '["relu", "relu"]', names=("twice",)),
    edit("activations", "binary", '["xor"]', names=("xor",)),
    edit("activations", "sampler", '"cmaes"', names=("lahc", "tpe")),
    edit("activations", "pruner", '"asha"', names=("median", "incumbent")),
    edit("hpo", "sampler", '"grid"', names=("random",)),
    edit("hpo.space", "optimizers", '["sgd", "lion"]', names=("lion",)),
    edit("hpo.space", "schedules", '["warm"]', names=("plateau",)),
    edit("", "device", '"gpu"', names=("cuda:N",)),
    # --- storage URLs (the config's, or --storage) ---
    storage("storage-no-scheme", "x.db", USAGE, ("storage", "sqlite:///")),
    storage("storage-unknown-scheme", "foo://host/db", USAGE, ("storage", "foo", "postgresql")),
    storage("storage-postgres-typo", "postgres://u@h/db", USAGE, ("storage", "postgresql")),
    storage("storage-sqlite-two-slashes", "sqlite://x.db", USAGE, ("storage", "sqlite:///")),
    storage("storage-pg-port-too-big", "postgresql://u@h:99999/db", USAGE, ("storage", "port")),
    storage("storage-pg-port-not-number", "postgresql://u@h:abc/db", USAGE, ("storage", "port")),
    storage("storage-pg-port-zero", "postgresql://u@h:0/db", USAGE, ("storage", "port 0")),
    storage("storage-pg-ipv6-unclosed", "postgresql://u@[::1/db", USAGE, ("storage", "IPv6")),
    storage("storage-pg-password-hidden", "postgresql://u:secret@h:x/db", USAGE, ("storage", "***")),
    option("storage-option", "--storage", "mysql://u@h:port/db", names=("storage", "(override)")),
    storage("storage-is-a-folder", "sqlite:///dir.db", RUNTIME, ("dir.db", "folder"), mkdir("dir.db")),
    storage("storage-under-a-file", "sqlite:///afile/x.db", RUNTIME, ("afile",), write("afile", b"x")),
    storage("storage-not-sqlite", "sqlite:///old.db", RUNTIME, ("old.db", "not a SQLite"),
            write("old.db", b"garbage " * 64)),
    storage("storage-damaged-sqlite", "sqlite:///bad.db", RUNTIME, ("bad.db", "damaged"),
            write("bad.db", b"SQLite format 3\x00" + b"\x10\x00" + b"\xff" * 4000)),
    Case("storage-in-a-read-only-folder", lambda d: read_only(d / "ro") or run_args(
        d, set_key(BASE, "", "storage", '"sqlite:///ro/x.db"')), RUNTIME, ("ro", "not writable"),
         marks=[NOT_ROOT]),
    # --- the artifacts folder ---
    with_file("artifacts-is-a-file", "", "artifacts", lambda d: '"arts"', write("arts", b"x"), RUNTIME,
              ("artifacts", "arts", "not a folder")),
    with_file("artifacts-under-a-file", "", "artifacts", lambda d: '"afile/arts"', write("afile", b"x"),
              RUNTIME, ("artifacts", "afile")),
    Case("artifacts-in-a-read-only-folder", lambda d: read_only(d / "ro") or run_args(
        d, set_key(BASE, "", "artifacts", '"ro/arts"')), RUNTIME, ("artifacts", "ro", "writable"),
         marks=[NOT_ROOT]),
    # --- IDX data folders: data.name = "idx:<dir>" ---
    edit("data", "name", '"idx:nowhere"', names=("nowhere",)),
    edit("data", "name", '"idx:"', names=("folder",)),
    Case("idx-empty-folder",
         lambda d: mkdir("data")(d) or run_args(d, set_key(BASE, "data", "name", '"idx:data"')),
         USAGE, ("data", "train-images-idx3-ubyte")),
    data("idx-missing-test-labels", USAGE, ("t10k-labels",), t10k_labels_idx1_ubyte=None),
    data("idx-garbage-images", RUNTIME, ("train-images", "magic"), train_images_idx3_ubyte=b"garbage" * 99),
    data("idx-empty-images", RUNTIME, ("train-images",), train_images_idx3_ubyte=b""),
    data("idx-unknown-type", RUNTIME, ("train-images", "type code"),
         train_images_idx3_ubyte=b"\x00\x00\x07\x03" + b"\x00" * 12),
    data("idx-truncated-header", RUNTIME, ("train-images", "truncated"),
         train_images_idx3_ubyte=b"\x00\x00\x08\x03\x00\x00"),
    data("idx-truncated-data", RUNTIME, ("train-images", "truncated"),
         train_images_idx3_ubyte=idx(np.zeros((N, 28, 28)))[:-100]),
    data("idx-trailing-bytes", RUNTIME, ("train-labels", "more"), train_labels_idx1_ubyte=GOOD_LABELS + b"\x00"),
    data("idx-oversized-header", RUNTIME, ("train-images", "more than"),
         train_images_idx3_ubyte=b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3),
    data("idx-header-claims-a-gigabyte", RUNTIME, ("train-images", "truncated"),
         train_images_idx3_ubyte=b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (1000, 1000, 1000))),
    data("idx-garbage-gzip", RUNTIME, ("train-images", "gzip"), train_images_idx3_ubyte=None,
         **{"train-images-idx3-ubyte.gz": b"\x1f\x8b" + b"garbage" * 20}),
    data("idx-cut-gzip", RUNTIME, ("train-images", "gzip"), train_images_idx3_ubyte=None,
         **{"train-images-idx3-ubyte.gz": gzip.compress(idx(np.zeros((N, 28, 28))))[:30]}),
    data("idx-images-2d", RUNTIME, ("train-images", "N x H x W"),
         train_images_idx3_ubyte=idx(np.zeros((N, 784)))),
    data("idx-label-count", RUNTIME, ("train-labels", "labels"), train_labels_idx1_ubyte=idx(np.zeros(N - 1))),
    data("idx-labels-2d", RUNTIME, ("train-labels",), train_labels_idx1_ubyte=idx(np.zeros((N, 2)))),
    data("idx-one-image", RUNTIME, ("[data] name", "training image"),
         train_images_idx3_ubyte=idx(np.zeros((1, 28, 28))), train_labels_idx1_ubyte=idx(np.zeros(1))),
    data("idx-not-square", RUNTIME, ("[data] name", "square"),
         train_images_idx3_ubyte=idx(np.zeros((N, 28, 20))), t10k_images_idx3_ubyte=idx(np.zeros((10, 28, 20)))),
    data("idx-test-size-differs", RUNTIME, ("[data] name", "test images"),
         t10k_images_idx3_ubyte=idx(np.zeros((10, 20, 20)))),
    data("idx-negative-labels", RUNTIME, ("[data] name", "non-negative"),
         train_labels_idx1_ubyte=idx(np.full(N, -1), code=0x09)),
    data("idx-images-too-small-for-lenet5", USAGE, ("[model] name", "lenet5", "12"),
         train_images_idx3_ubyte=idx(np.zeros((N, 8, 8))), t10k_images_idx3_ubyte=idx(np.zeros((10, 8, 8)))),
    data("idx-fewer-images-than-a-batch", USAGE, ("[protocol] batch_size", "256")),
    # --- named datasets that are not on this machine: not there, or the download fails ---
    Case("dataset-missing-download-off", lambda d: run_args(d, set_key(set_key(
        BASE, "data", "name", '"mnist"'), "data", "root", '"data"')), USAGE,
        ("'mnist'", "not found", "data/MNIST/raw", "download=True")),
    *(download(dataset, folder, failure, offline)
      for dataset, folder, offline in (("mnist", "MNIST/raw", "idx:<dir>"),
                                       ("fashion_mnist", "FashionMNIST/raw", "idx:<dir>"),
                                       ("cifar10", "cifar-10-batches-py", "folder:<dir>"))
      for failure in FAILURES),
    # --- sizes only the data can tell ---
    edit("activations", "fraction", "0.01", names=("batch_size", "256")),
    edit("hpo", "fraction", "0.001", names=("batch_size",)),
    # --- [sparsity] skip: names of the model's modules, checked before anything is written ---
    edit("sparsity", "skip", '["conv9"]', names=("conv9", "valid: conv1, conv2, fc1, fc2, fc3")),
    edit("sparsity", "skip", '["conv2", "features.1"]', names=("features.1", "lenet5")),
    edit("sparsity", "skip", '["act1"]', names=("'act1'", "valid: conv1, conv2")),  # an activation: no weights
    edit("sparsity", "skip", '[""]', names=("empty",)),
    # --- [sparsity] min_density: a table of densities, its globs checked against the model ---
    edit("sparsity", "min_density", "0.3", names=("a table of numbers",)),
    edit("sparsity", "min_density", '{ conv1 = "a" }', names=("a table of numbers",)),
    edit("sparsity", "min_density", "{ conv1 = 0 }", names=("'conv1'", "(0.0, 1.0]")),
    edit("sparsity", "min_density", "{ conv1 = 1.5 }", names=("'conv1'", "(0.0, 1.0]")),
    edit("sparsity", "min_density", "{ conv9 = 0.5 }", names=("'conv9'", "conv1, conv2, fc1, fc2, fc3")),
    edit("sparsity", "min_density", '{ "fc*" = 1.0 }', names=("out of reach", "valid ratio")),
    # --- [dense] checkpoint ---
    edit("dense", "checkpoint", '"none.pt"', names=("none.pt",)),
    with_file("checkpoint-is-a-folder", "dense", "checkpoint", lambda d: '"w.pt"', mkdir("w.pt"), USAGE,
              ("[dense] checkpoint", "w.pt")),
    checkpoint("checkpoint-garbage", write("w.pt", b"garbage" * 100), ("cannot be read",)),
    checkpoint("checkpoint-empty", write("w.pt", b""), ("cannot be read",)),
    checkpoint("checkpoint-text", write("w.pt", b"0.weight = 1\n"), ("cannot be read",)),
    checkpoint("checkpoint-foreign-pickle", pickled("w.pt"), ("cannot be read",)),
    checkpoint("checkpoint-a-tensor", save("w.pt", torch.zeros(3)), ("not a state_dict",)),
    checkpoint("checkpoint-empty-dict", save("w.pt", {}), ("does not fit", "Missing")),
    checkpoint("checkpoint-wrong-shape", save("w.pt", state_dict(**{"11.weight": (100, 84)})),
               ("does not fit", "size mismatch")),
    checkpoint("checkpoint-other-model", save("w.pt", {"state_dict": {"conv1.weight": torch.zeros(1)}}),
               ("does not fit", "conv1.weight")),
    # --- --set overrides and other options ---
    option("set-no-equals", "--set", "nonsense", names=("KEY=VALUE",)),
    option("set-no-key", "--set", "=3", names=("KEY=VALUE",)),
    option("set-unknown-key", "--set", "activations.trails=3", names=("(override)", "trials")),
    option("set-wrong-type", "--set", "activations.trials=abc", names=("[activations] trials (override)",)),
    option("set-into-a-value", "--set", "seed.x=1", names=("seed", "not a table")),
    option("set-empty-part", "--set", "activations..trials=1", names=("dotted key",)),
    option("set-huge-epochs", "--set", "final.epochs=1000000000", names=("[final] epochs (override)", "100 000")),
    option("set-table-to-value", "--set", "protocol=3", names=("[protocol] (override)", "table")),
    option("set-ratio-zero", "--set", "sparsity.ratio=0", names=("[sparsity] ratio (override)",)),
    option("set-unknown-section", "--set", "stage3.trials=1", names=("stage3",)),
    option("device-unknown", "--device", "gpu", names=("device (override)", "cuda:N")),
    option("device-missing", "--device", "cuda:99", names=("cuda:99",)),
    option("threads-negative", "--threads", "-1", names=("threads (override)",)),
    option("threads-absurd", "--threads", "99999", names=("threads (override)", "1024")),
    option("workers-zero", "--workers", "0", names=("--workers",)),
    # --- --seeds ---
    option("seeds-word", "--seeds", "a", names=("--seeds",)),
    option("seeds-empty", "--seeds", "", names=("--seeds",)),
    option("seeds-empty-item", "--seeds", "1,,2", names=("--seeds",)),
    option("seeds-negative", "--seeds", "-1", names=("--seeds",)),
    option("seeds-float", "--seeds", "1.5", names=("--seeds",)),
    option("seeds-empty-range", "--seeds", "3-1", names=("--seeds",)),
    option("seeds-duplicate", "--seeds", "1,1", names=("--seeds", "distinct")),
    option("seeds-too-big", "--seeds", "4294967296", names=("--seeds", "below 2**32")),
    option("seeds-too-big-status", "--seeds", "4294967296", names=("--seeds", "4294967296"), command="status"),
    option("seeds-too-many", "--seeds", "0-99999999999", names=("--seeds", "at most 1000")),
]


# --- the test -------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_pipeline(monkeypatch):
    # A case that passes every check would go on to run the study; stop it loudly instead.
    def reached(*args, **kwargs):
        raise AssertionError("the broken input passed every check: the pipeline was about to start")

    monkeypatch.setattr(cli, "_pipeline", reached)


def _params():
    for case in CASES:
        marks = list(case.marks)
        if case.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=case.xfail))
        yield pytest.param(case, id=case.id, marks=marks)


def test_the_table_is_large_and_every_case_is_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]


@pytest.mark.parametrize("case", _params())
def test_broken_input_fails_in_one_line_and_writes_nothing(case: Case, tmp_path, capsys, no_pipeline,
                                                            monkeypatch):
    if case.patch is not None:
        case.patch(monkeypatch)
    argv = case.make(tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("safs-optuna: "), err
    for name in case.names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    assert code == case.code, lines[0]
    assert out == ""
    assert _snapshot(tmp_path) == before, "files were written"


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("not-utf8", "checkpoint-wrong-shape",
                                                                 "checkpoint-foreign-pickle",
                                                                 "storage-pg-ipv6-unclosed")],
                         ids=lambda c: c.id)
def test_the_command_itself_exits_with_one_line(case: Case, tmp_path):
    """The installed entry point, in a process of its own, as a user or a script sees it."""
    argv = case.make(tmp_path)
    before = _snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "safs_optuna.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == case.code and len(lines) == 1, proc.stderr
    assert lines[0].startswith("safs-optuna: ") and all(n in lines[0] for n in case.names)
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_worker_finds_a_bad_checkpoint_only_when_the_dense_stage_reads_it(tmp_path, capsys):
    """``worker`` has no pre-flight of its own: it opens the study first, so the garbage dense
    checkpoint is found at runtime by the dense stage. Still exit 1, one ``safs-optuna:`` line."""
    argv = checkpoint("x", write("w.pt", b"garbage" * 100)).make(tmp_path)
    assert cli.main(["worker", *argv[1:]]) == RUNTIME
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("safs-optuna: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().endswith(errors[0])
    assert "[dense] checkpoint" in errors[0] and "w.pt" in errors[0]


@pytest.mark.slow
def test_a_worker_refuses_a_bad_skip_before_writing(tmp_path, capsys):
    argv = edit("sparsity", "skip", '["conv9"]').make(tmp_path)
    before = _snapshot(tmp_path)
    assert cli.main(["worker", *argv[1:]]) == USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("safs-optuna: ") and "conv9" in lines[0]
    assert _snapshot(tmp_path) == before


# --- artifacts that fail while a run stores them ---------------------------------------------


@dataclass
class Midrun:
    """The artifact store breaks during a run: ``damage(folder, monkeypatch)`` runs while the
    sparse stage writes its checkpoint (the dense one is stored already), or (``after_dense``)
    right after the dense checkpoint was uploaded, before the sparse stage reads it."""

    id: str
    damage: Callable[[Path, pytest.MonkeyPatch], None]
    names: tuple[str, ...]
    after_dense: bool = False


def _copy_into(then: Callable[[object], None]) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """Copies into the artifact folder (its writes) call ``then(destination)`` first."""

    def damage(arts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        real = shutil.copyfileobj

        def copy(src, dst, *args):
            if Path(getattr(dst, "name", "")).parent == arts:
                then(dst)
            return real(src, dst, *args)

        monkeypatch.setattr(shutil, "copyfileobj", copy)

    return damage


def _fail(exc: OSError) -> Callable[[object], None]:
    def then(dst) -> None:
        dst.write(b"half a checkpoint")
        raise exc

    return then


def _temp_disk_full(arts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(arts)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # torch.save's


def _replace_by_file(arts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(arts)
    arts.write_text("not a folder")


def _keeps_vanishing(dst) -> None:
    shutil.rmtree(Path(dst.name).parent)


MIDRUN = [
    Midrun("artifacts-and-parent-removed", lambda arts, mp: shutil.rmtree(arts.parent),
           ("cannot write sparse.pt", "parent", "are gone", "run the same command again")),
    Midrun("artifacts-replaced-by-a-file", _replace_by_file, ("cannot write sparse.pt", "is a file, not a folder")),
    Midrun("artifacts-keep-vanishing", _copy_into(_keeps_vanishing), ("vanished again after it was re-created",)),
    Midrun("artifacts-disk-full", _copy_into(_fail(OSError(errno.ENOSPC, "No space left on device"))),
           ("no space left", "free some space")),
    Midrun("artifacts-not-writable", _copy_into(_fail(PermissionError(errno.EACCES, "Permission denied"))),
           ("not writable",)),
    Midrun("artifacts-temporary-disk-full", _temp_disk_full, ("cannot write sparse.pt", "temporary folder",
                                                             "no space left")),
    Midrun("artifacts-removed-before-a-stage-reads-them", lambda arts, mp: shutil.rmtree(arts),
           ("stage 'dense'", "the folder is gone", "--rerun dense"), after_dense=True),
    Midrun("artifact-file-lost-before-a-stage-reads-it",
           lambda arts, mp: [f.unlink() for f in arts.iterdir()], ("stage 'dense'", "the file is missing",
                                                                  "--rerun dense"), after_dense=True),
]


@pytest.mark.parametrize("case", MIDRUN, ids=lambda c: c.id)
def test_an_artifact_that_fails_during_a_run_stops_it_in_one_line(case: Midrun, tmp_path, capsys, monkeypatch):
    from safs_optuna.pipeline import runner

    torch.save(state_dict(), tmp_path / "w.pt")  # no dense training: the failure comes in seconds
    text = set_key(set_key(BASE, "dense", "checkpoint", '"w.pt"'), "", "artifacts", '"out/arts"')
    argv = run_args(tmp_path, text)
    arts = tmp_path / "out" / "arts"
    calls = []
    if case.after_dense:
        real_store = runner.Pipeline._store

        def store(self, *args, **kwargs):
            real_store(self, *args, **kwargs)
            if not calls:
                calls.append(1)
                case.damage(arts, monkeypatch)

        monkeypatch.setattr(runner.Pipeline, "_store", store)
    else:
        real_save = runner.save_checkpoint

        def save(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the sparse stage's: the folder exists since the dense one
                case.damage(arts, monkeypatch)
            real_save(*args, **kwargs)

        monkeypatch.setattr(runner, "save_checkpoint", save)
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("safs-optuna: ")]
    assert "Traceback" not in err, err
    assert len(errors) == 1 and err.strip().endswith(errors[0]), err
    assert str(arts) in errors[0], errors[0]
    for name in case.names:
        assert name in errors[0], f"{name!r} not in {errors[0]!r}"
    assert code == RUNTIME, errors[0]
