"""Helpers for tests that run without the network: blocked sockets, and stand-ins for
torchvision's file download that fail the ways real downloads do."""

from __future__ import annotations

import errno
import os
import socket
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

BLOCKED = "network blocked by the test"

# The command as a user runs it, in a process whose sockets fail before anything is imported;
# SAFS_TEST_SYSTEM_DATA stands in for the folders where Debian's Fashion-MNIST package would be.
OFFLINE_MAIN = f"""
import os, socket, sys

def blocked(*args, **kwargs):
    raise OSError({BLOCKED!r})

socket.socket.connect = socket.socket.connect_ex = blocked
socket.create_connection = socket.getaddrinfo = blocked

from safs_optuna import data
data.SYSTEM_FASHION_MNIST_DIRS = (os.environ["SAFS_TEST_SYSTEM_DATA"],)
from safs_optuna.cli import main
sys.exit(main(sys.argv[1:]))
"""

Fetch = Callable[[str, str], None]


def _blocked(*args, **kwargs):
    raise OSError(BLOCKED)


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No request leaves this process: every socket connection and name lookup fails."""
    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                        (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, _blocked)


def serve(monkeypatch: pytest.MonkeyPatch, fetch: Fetch) -> None:
    """torchvision's downloads call ``fetch(url, path)`` instead of the network."""
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", fetch)


def offline_env(folder: Path, repo: Path) -> dict[str, str]:
    """The environment of a command run offline with no dataset on the machine: empty data and
    home folders in ``folder``, no proxy."""
    for name in ("data", "home"):
        (folder / name).mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "SAFS_OPTUNA_DATA": str(folder / "data"), "HOME": str(folder / "home"),
            "SAFS_TEST_SYSTEM_DATA": str(folder / "no-system-data"), "PYTHONPATH": str(repo),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def partly(then: BaseException, size: int = 1000) -> Fetch:
    """Writes ``size`` bytes of the file, then fails with ``then``."""

    def fetch(url: str, path: str) -> None:
        Path(path).write_bytes(b"\x1f\x8b" + b"x" * size)
        raise then

    return fetch


def refuse(exc: BaseException) -> Fetch:
    def fetch(url: str, path: str) -> None:
        raise exc

    return fetch


def garbage(url: str, path: str) -> None:
    Path(path).write_bytes(b"not the file the checksum describes")


FAILURES: dict[str, tuple[Fetch | None, str]] = {
    # id: (how torchvision's fetch fails, None = only the blocked sockets; words the line must hold)
    "no-network": (None, BLOCKED),
    "unknown-host": (refuse(urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))),
                     "host name cannot be resolved"),
    "refused": (refuse(urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))),
                "refused the connection"),
    "proxy-login": (refuse(urllib.error.HTTPError("http://x", 407, "Proxy Authentication Required", {}, None)),
                    "proxy asks for a login"),
    "proxy-tunnel": (refuse(urllib.error.URLError(OSError("Tunnel connection failed: 403 Forbidden"))),
                     "proxy refused the connection (403 Forbidden)"),
    "http-404": (refuse(urllib.error.HTTPError("http://x", 404, "Not Found", {}, None)),
                 "the server answered HTTP 404 Not Found"),
    "checksum": (garbage, "checksum mismatch"),
    "disk-full": (partly(OSError(errno.ENOSPC, "No space left on device")), "no space left"),
    "cut-off": (partly(urllib.error.URLError(TimeoutError("The read operation timed out"))), "timed out"),
}
