import torch

# Several test processes may share two cores; one thread each keeps them from thrashing.
torch.set_num_threads(1)


# --------------------------------------------------------------------------- PostgreSQL
# A throwaway PostgreSQL server for tests/test_postgres.py, started once per session on demand:
# initdb into a temporary folder, pg_ctl start on a free 127.0.0.1 port with its unix socket in
# that folder, stopped and deleted at the end. The server refuses to run as root, so as root (CI)
# it runs as the "postgres" user that the Debian package creates. SAFS_TEST_POSTGRES_URL (the URL
# of a role that may create roles and databases) uses an existing server instead. A server that
# cannot be had fails the tests that need it, with the reason: never a silent skip.
import dataclasses  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import pytest  # noqa: E402

_INSTALL = "install the server with `apt-get install -y postgresql` (.ci/run does)"


def _pg_bindir() -> str:
    """The folder of initdb and pg_ctl: $SAFS_PG_BINDIR, PATH, or the newest Debian install."""
    if os.environ.get("SAFS_PG_BINDIR"):
        bindir = os.environ["SAFS_PG_BINDIR"]
        if not all(os.path.exists(os.path.join(bindir, b)) for b in ("initdb", "pg_ctl")):
            pytest.fail(f"SAFS_PG_BINDIR={bindir} has no initdb and pg_ctl", pytrace=False)
        return bindir
    found = shutil.which("pg_ctl")
    if found and os.path.exists(os.path.join(os.path.dirname(os.path.realpath(found)), "initdb")):
        return os.path.dirname(os.path.realpath(found))
    debian = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if debian:
        newest = max(debian, key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
        return os.path.dirname(newest)
    pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {_INSTALL}", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(url: str):
    try:
        import psycopg2
    except ImportError:
        pytest.fail("the PostgreSQL tests need psycopg2: pip install -e '.[test,postgres]'", pytrace=False)
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
        con = _connect(self.admin_url)
        try:
            with con.cursor() as cur:
                for name, role in reversed(self.created):
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    if role:
                        cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            con.close()


def _as_server_user() -> dict:
    """subprocess arguments that run a command as a user PostgreSQL accepts (not root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, and PostgreSQL refuses root: no 'postgres' user to run the test "
                    f"server as; {_INSTALL}, or run the tests as another user", pytrace=False)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


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
        pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}", pytrace=False)
    for _ in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -k '{folder}' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        start = run(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60",
                    "-o", options, "start")
        if start.returncode == 0:
            return port
    try:
        with open(log) as f:
            tail = f.read()[-3000:]
    except OSError:
        tail = ""
    pytest.fail(f"pg_ctl start failed ({start.returncode}):\n{start.stdout}\n{start.stderr}\n{tail}",
                pytrace=False)


@pytest.fixture(scope="session")
def postgres_server():
    """A running PostgreSQL server for the session (see the comment above)."""
    if os.environ.get("SAFS_TEST_POSTGRES_URL"):
        server = PostgresServer(os.environ["SAFS_TEST_POSTGRES_URL"])
        _connect(server.admin_url).close()
        yield server
        server.drop_created()
        return
    bindir = _pg_bindir()
    run_as = _as_server_user()
    folder = tempfile.mkdtemp(prefix="safs-pg-", dir="/tmp" if run_as else None)  # short socket path
    password = secrets.token_hex(8)
    data = os.path.join(folder, "data")
    started = False
    try:
        port = _start_server(bindir, folder, password, run_as)
        started = True
        yield PostgresServer(f"postgresql://safs:{password}@127.0.0.1:{port}/postgres")
    finally:
        if started:
            subprocess.run([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                           cwd=folder, capture_output=True, timeout=60, **run_as)
        shutil.rmtree(folder, ignore_errors=True)
