"""A real PostgreSQL server for tests: Debian's ``postgresql`` binaries.

``PgServer`` runs ``initdb`` and ``pg_ctl`` as the ``postgres`` user (the tests
run as root and PostgreSQL refuses to run as root) in a temporary directory of
its own, listening on 127.0.0.1 and on a unix socket in that directory only,
password (SCRAM) authentication over TCP. The ``pg_server`` fixture starts one
per test session and stops it at the end; ``pg_url`` gives each test a fresh
database owned by an unprivileged role, as a ``postgresql://`` URL with the
password in it (so the tests also see that it is masked). Missing binaries fail
the test with what to install; nothing is skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from provision_fixtures import free_tcp_port

ROLE = "cloudplan"
START_TIMEOUT_S = 60


def pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        pytest.fail(f"{tool} is required by this test and is not installed "
                    "(Debian package postgresql; see APT_PACKAGES in the Makefile)")
    return found[-1]


class PgServer:
    """``root``: a directory of the caller's (e.g. a small tmpfs) instead of a new temporary one;
    ``initdb_args``: more options for initdb (``--wal-segsize=1`` keeps a small file system small)."""

    def __init__(self, root: Path | None = None, initdb_args: tuple[str, ...] = ()):
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("the postgres user is missing (install the Debian package postgresql)")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        else:
            self.run_as = []
        self.dir = root or Path(tempfile.mkdtemp(prefix="cloudplan-pg-"))
        self.data = self.dir / "data"
        self.port = free_tcp_port()
        self.password = "pg-Secret-" + secrets.token_hex(6)
        if self.run_as:
            shutil.chown(self.dir, "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            shutil.chown(pwfile, "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", *initdb_args)
        pwfile.unlink()

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.run_as, pg_bin(tool), *args], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S + 30)
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{self.log()}")
        return proc

    def log(self) -> str:
        p = self.dir / "server.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def start(self) -> "PgServer":
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.dir / "server.log"),
                 "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=40 "
                       "-c shared_buffers=16MB", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: the server dies without a checkpoint, as in a crash."""
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")    # its data is deleted next: no shutdown checkpoint to wait for
        shutil.rmtree(self.dir, ignore_errors=True)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        """A superuser session over the unix socket."""
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname=dbname, autocommit=True)

    def new_database(self, name: str | None = None) -> str:
        """A fresh database owned by the unprivileged role; returns its URL (password included)."""
        name = name or "t_" + secrets.token_hex(6)
        with self.admin() as db:
            if not db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
                db.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
            db.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, dbname: str, password: str | None = None) -> str:
        return f"postgresql://{ROLE}:{password or self.password}@127.0.0.1:{self.port}/{dbname}"

    def data_bytes(self) -> bytes:
        """Every byte the server keeps on disk (tables, WAL), after a checkpoint."""
        with self.admin() as db:
            db.execute("CHECKPOINT")
        out = []
        for p in self.data.rglob("*"):
            if p.is_file():
                out.append(p.read_bytes())
        return b"".join(out)


@pytest.fixture(scope="session")
def pg_server():
    server = PgServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server) -> str:
    return pg_server.new_database()
