"""Offline, and with files lost during a run: every failure ends in one line, never a traceback.

* Downloads that fail (no network, a host name that does not resolve, a refusing host, a proxy,
  a checksum mismatch, a full disk) raise one :class:`DatasetDownloadError` and leave the data
  folder as it was.
* Every shipped config in ``studies/``, run through the real command with the network blocked at
  the socket level and no dataset on the machine, exits 0 (embedded data) or 2 with one line,
  writing nothing.
* An artifact folder removed while a worker trains stops the run with one line and exit 1.

No request leaves the machine: the sockets of this process are blocked for every test here, and
each command runs in a process that blocks its own before it imports anything else.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safs_optuna import data
from safs_optuna.config import load_config
from safs_optuna.data import DatasetDownloadError, DatasetNotFoundError

from ._offline import BLOCKED, FAILURES, OFFLINE_MAIN, block_network, offline_env, partly, refuse, serve
from ._tiny import write_config

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("*.toml"))
# Budgets that make a config on the embedded data finish in seconds.
TINY_RUN = ["--set", "dense.epochs=1", "--set", "activations.trials=1", "--set", "activations.epochs=1",
            "--set", "activations.fraction=0.1", "--set", "hpo.trials=1", "--set", "hpo.epochs=1",
            "--set", "hpo.fraction=0.1", "--set", "final.epochs=1", "--set", "ablations=false"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    block_network(monkeypatch)
    # A machine with Debian's Fashion-MNIST package installed would need no download at all.
    from safs_optuna import data

    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIRS", (str(tmp_path / "no-system-data"),))


def _snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and folder (None) below ``folder``; a folder's own mtime changes
    when something made in it is removed again, so it is left out."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


# --------------------------------------------------------------------------- failed downloads
@pytest.mark.parametrize("key, folder, offline", [
    ("mnist", "MNIST/raw", '"idx:<dir>"'),
    ("fashion_mnist", "FashionMNIST/raw", '"idx:<dir>"'),
    ("cifar10", "cifar-10-batches-py", '"folder:<dir>"'),
])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_download_is_one_line_and_leaves_the_folder_as_it_was(tmp_path, monkeypatch, key, folder,
                                                                         offline, failure):
    fetch, words = FAILURES[failure]
    if fetch is not None:
        serve(monkeypatch, fetch)
    root = tmp_path / "data"
    (root / "other").mkdir(parents=True)
    (root / "other" / "keep.txt").write_text("another dataset's file")
    before = _snapshot(root)
    with pytest.raises(DatasetDownloadError) as info:
        data.load(key, root=root, download=True)
    message = str(info.value)
    assert isinstance(info.value, DatasetNotFoundError) and "\n" not in message
    for name in (repr(key), str(root / folder), words, "To run offline", "[data] root", offline):
        assert name in message, f"{name!r} not in {message!r}"
    assert _snapshot(root) == before  # nothing half-downloaded looks like the data next time


def test_a_download_cut_off_after_some_files_removes_them_all(tmp_path, monkeypatch):
    import gzip

    import torchvision.datasets.utils as tv_utils

    fetched = []

    def fetch(url: str, path) -> None:  # two files arrive whole and are unpacked, then the disk is full
        fetched.append(url)
        if len(fetched) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        Path(path).write_bytes(gzip.compress(b"\x00" * 100))

    serve(monkeypatch, fetch)
    monkeypatch.setattr(tv_utils, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "notes.txt").write_text("was here before")
    with pytest.raises(DatasetDownloadError, match="no space left"):
        data.load("mnist", root=tmp_path, download=True)
    assert "t10k-images" in fetched[-1]  # the third file (torchvision tries http after https)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["MNIST", "notes.txt", "raw"]


def test_ctrl_c_during_a_download_removes_the_partial_file_and_goes_on(tmp_path, monkeypatch):
    serve(monkeypatch, partly(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        data.load("cifar10", root=tmp_path / "data", download=True)
    assert not (tmp_path / "data").exists()


def test_files_copied_in_by_hand_are_used_without_a_download(tmp_path, monkeypatch):
    from .test_data import make_idx_folder

    serve(monkeypatch, refuse(AssertionError("nothing may be downloaded")))
    make_idx_folder(tmp_path / "MNIST" / "raw", n_train=30, n_test=10, classes=10, gz=True)
    assert len(data.load("mnist", root=tmp_path, download=True).test) == 10


# --------------------------------------------------------------------------- shipped configs
def _embedded(path: Path) -> bool:
    return load_config(path).data.name == "quickstart"


@pytest.mark.parametrize("study", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if _embedded(p) else [])
                                   for p in STUDIES])
def test_every_shipped_config_offline_ends_in_exit_0_or_one_line(tmp_path, study: Path):
    folder = tmp_path / "studies"
    folder.mkdir()
    config = folder / study.name
    shutil.copy(study, config)
    env = offline_env(tmp_path, REPO)
    before = _snapshot(tmp_path)
    extra = TINY_RUN if _embedded(study) else []
    proc = subprocess.run([sys.executable, "-c", OFFLINE_MAIN, "run", str(config), "--device", "cpu", *extra],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if _embedded(study):
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "finished in" in proc.stdout
        return
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    cfg = load_config(config)
    assert lines[0].startswith("safs-optuna: dataset ") and str(tmp_path / "data") in lines[0]
    assert cfg.data.name.split("-")[0] in lines[0]
    if cfg.data.download:  # it tried, the sockets refused, and it says how to do without
        assert BLOCKED in lines[0] and "To run offline" in lines[0]
    assert proc.stdout == ""
    assert _snapshot(tmp_path) == before, "files were written"


# --------------------------------------------------------------------------- lost artifacts
def test_an_artifact_folder_removed_while_a_worker_trains_stops_the_run_in_one_line(tmp_path):
    """The folder and its parent go (as with a drive that is unmounted) while the baseline trains,
    after the dense and sparse checkpoints were stored and read: the baseline's upload fails, in
    one line, and the run exits 1."""
    import threading

    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('name = "tiny"', 'name = "tiny"\nartifacts = "out/arts"', 1)
                    .replace("[final]\nepochs = 1", "[final]\nepochs = 4"))
    run = subprocess.Popen([sys.executable, "-c", OFFLINE_MAIN, "run", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=offline_env(tmp_path, REPO))
    err: list[str] = []
    training = threading.Event()

    def read() -> None:
        for line in run.stderr:
            err.append(line)
            if "baseline epoch 1/" in line:  # its input is read; three more epochs to go
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert training.wait(timeout=300), "".join(err)[-3000:]
    shutil.rmtree(tmp_path / "out")
    # stderr belongs to the reader thread: communicate() would read it too and take lines from it.
    out = run.stdout.read()
    run.wait(timeout=300)
    reader.join(timeout=60)
    text = "".join(err)
    assert run.returncode == 1, text[-3000:]
    assert "Traceback" not in text and "finished in" not in out, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("safs-optuna:")]
    assert len(errors) == 1 and text.strip().endswith(errors[0]), text[-3000:]
    line = errors[0]
    assert f"artifact store {tmp_path / 'out' / 'arts'}: cannot write baseline.pt" in line, line
    assert "are gone" in line and "run the same command again" in line
    assert not (tmp_path / "out").exists()  # nothing landed where the drive was
