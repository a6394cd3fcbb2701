"""The PostgreSQL state store against a real server (Debian's postgresql, started
by the tests as the postgres user): what only a shared store has to get right.
The store's general behaviour is in test_store.py, run there on both back ends."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from pg_fixture import PgServer, pg_server, pg_url  # noqa: F401 - fixtures
from provision_fixtures import fill_disk, wait_for, write_inventory

from cloudplan.cli import main
from cloudplan.errors import CloudplanError, StateFileError, UsageError
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import SQLiteStore, describe_state, open_store
from cloudplan.provision.store.postgresql import PostgresStore, mask_url


def test_the_state_option_picks_the_back_end(tmp_path, pg_url, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("rel.db") as st:
        assert isinstance(st, SQLiteStore) and st.path.name == "rel.db"
    with open_store("sqlite:///sub/rel.db") as st:
        assert isinstance(st, SQLiteStore) and str(st.path) == "sub/rel.db"
    with open_store(f"sqlite:///{tmp_path}/abs.db") as st:
        assert isinstance(st, SQLiteStore) and st.path == tmp_path / "abs.db"
    with open_store(pg_url) as st:
        assert isinstance(st, PostgresStore)
    with open_store(pg_url.replace("postgresql://", "postgres://")) as st:
        assert isinstance(st, PostgresStore)
    with pytest.raises(UsageError, match="unknown store scheme 'mysql'"):
        open_store("mysql://u@h/db")


def test_a_url_password_is_masked_everywhere(pg_server, pg_url, capsys, caplog):
    assert mask_url("postgresql://u:p%40ss@h:5/db?sslmode=require") == "postgresql://u:***@h:5/db?sslmode=require"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("postgresql://u@h/db?sslmode=require&password=s3cret") == \
        "postgresql://u@h/db?sslmode=require&password=***"
    assert pg_server.password not in describe_state(pg_url)
    for bad in ("postgresql://u:Bad-pw-987@[::1/db", "postgresql://u@[::1/db?password=Bad-pw-987",
                "postgresql://u:Bad-pw-987@127.0.0.1:notaport/db"):
        with pytest.raises(StateFileError, match="the URL is invalid") as err:
            open_store(bad)
        assert "Bad-pw-987" not in str(err.value) and "***" in str(err.value)
    caplog.set_level(logging.DEBUG)
    wrong = pg_server.url(pg_url.rsplit("/", 1)[1], password="Wrong-pw-1234")
    with pytest.raises(StateFileError, match="refused the credentials") as err:
        open_store(wrong)
    assert "Wrong-pw-1234" not in str(err.value) and "cloudplan:***@127.0.0.1" in str(err.value)
    assert main(["status", "--state", wrong]) == 1
    text = capsys.readouterr().err
    assert text.startswith("Error: postgresql://cloudplan:***@") and "Wrong-pw-1234" not in text
    with open_store(pg_url) as st:
        st.ensure_nodes(["a"])
        assert pg_server.password not in st.where
    assert main(["status", "--state", pg_url]) == 0
    assert main(["events", "--state", pg_url, "nope"]) == 1
    out = capsys.readouterr()
    assert pg_server.password not in out.out + out.err and "cloudplan:***@" in out.err
    assert pg_server.password not in caplog.text and "Wrong-pw-1234" not in caplog.text


def test_readers_find_no_state_in_an_empty_database(pg_url, capsys):
    with pytest.raises(CloudplanError, match="no cloudplan state in this database"):
        open_store(pg_url, create=False)
    assert main(["status", "--state", pg_url]) == 1
    assert "no cloudplan state" in capsys.readouterr().err


def test_a_dry_run_on_a_new_database_plans_every_node_and_writes_nothing(pg_server, pg_url, tmp_path, capsys):
    inv = write_inventory(tmp_path / "inv.yaml", [{"name": "n-1", "bmc_port": 1}, {"name": "n-2", "bmc_port": 2}],
                          http_port=1, ssh_port=22, ssh_key=tmp_path / "key")
    assert main(["provision", str(inv), "--state", pg_url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("(new)") == 2 and "n-1" in out and "n-2" in out
    with pg_server.admin(pg_url.rsplit("/", 1)[1]) as db:
        assert db.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                          "WHERE n.nspname = 'public'").fetchone()[0] == 0


def test_a_database_of_another_application_is_refused_untouched(pg_server, pg_url):
    dbname = pg_url.rsplit("/", 1)[1]
    with pg_server.admin(dbname) as db:
        db.execute("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(StateFileError, match="not a cloudplan state database .*tables customers"):
        open_store(pg_url, exclusive=True)
    with pg_server.admin(dbname) as db:
        tables = db.execute("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = 'public'").fetchall()
    assert tables == [("customers",)]


def test_hosts_opening_a_new_database_at_once_create_the_schema_once(pg_url):
    errors, barrier = [], threading.Barrier(4)

    def first_open():
        try:
            barrier.wait()
            with open_store(pg_url, exclusive=True) as st:
                st.ensure_nodes(["a", "b"])
        except Exception as err:  # collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=first_open) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with open_store(pg_url, create=False) as st:
        assert [r.name for r in st.nodes()] == ["a", "b"]
        assert len(st.events()) == 2          # each node added once
        assert st._read("SELECT version FROM cloudplan_schema") == [(1,)]


def test_runs_claiming_overlapping_nodes_at_once_split_them(pg_url):
    names = [f"n{i:02d}" for i in range(40)]
    with open_store(pg_url) as st:
        st.ensure_nodes(names)
    claims, barrier = {}, threading.Barrier(3)

    def run(i: int, wanted: list[str]):
        with open_store(pg_url, exclusive=True) as st:
            st.begin_run()
            barrier.wait()
            claims[i] = st.claim(wanted)
            barrier.wait()   # hold the claims until every run has tried

    wanted = {0: names, 1: names[::-1], 2: names[10:30]}
    threads = [threading.Thread(target=run, args=(i, w)) for i, w in wanted.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    taken = [n for c in claims.values() for n in c.claimed]
    assert sorted(taken) == names                       # every node claimed, by exactly one run
    for i, c in claims.items():
        assert set(c.claimed) | set(c.held) == set(wanted[i])
        assert all(h.startswith("provision run ") for h in c.held.values())


def test_claims_of_a_killed_run_are_released_and_its_run_counts_as_interrupted(pg_url):
    code = textwrap.dedent(f"""
        import time
        from cloudplan.provision.store import open_store
        s = open_store({pg_url!r}, exclusive=True)
        s.ensure_nodes(["a", "b", "c"])
        s.begin_run()
        print(s.claim(["a", "b"]).claimed, flush=True)
        time.sleep(60)
    """)
    with _child(code) as proc:
        assert proc.stdout.readline().strip() == "['a', 'b']"
        with open_store(pg_url, exclusive=True) as st:
            st.begin_run()
            assert st.interrupted_runs() == 0          # the other run is alive, not interrupted
            claim = st.claim(["a", "b", "c"])
            assert claim.claimed == ["c"]
            assert claim.held == {n: f"provision run 1: pid {proc.pid} on host {socket.gethostname()}"
                                  for n in "ab"}
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            wait_for(lambda: st.claim(["a", "b"]).claimed == ["a", "b"], 10, "the killed run's claims to go")
            assert st.interrupted_runs() == 1


def test_a_lost_connection_stops_every_write_and_frees_the_nodes(pg_server, pg_url):
    with open_store(pg_url, exclusive=True) as st:
        st.ensure_nodes(["a"])
        st.begin_run()
        assert st.claim(["a"]).claimed == ["a"]
        st.transition("a", NodeState.verifying_bmc, step="verify-bmc")
        pid = st.db.info.backend_pid
        with pg_server.admin() as db:
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # the claims went with the session: no write may succeed as if they were held
        with pytest.raises(StateFileError, match="unreachable or went away.*what was stored before is kept"):
            st.transition("a", NodeState.bmc_verified, step="verify-bmc")
        with open_store(pg_url, exclusive=True) as other:
            other.begin_run()
            assert other.claim(["a"]).claimed == ["a"]
            assert other.get("a").state is NodeState.verifying_bmc


def test_a_killed_client_and_a_crashed_server_lose_no_commit():
    server = PgServer().start()
    try:
        url = server.new_database()
        # a client that writes as fast as it can and says after each commit what it committed
        code = textwrap.dedent(f"""
            from cloudplan.provision.store import open_store
            from cloudplan.provision.states import NodeState
            s = open_store({url!r}, exclusive=True)
            s.ensure_nodes(["a"])
            s.begin_run()
            s.claim(["a"])
            i = 0
            while True:
                s.transition("a", NodeState.verifying_bmc, step="verify-bmc", detail=f"w{{i}}")
                print(i, flush=True)
                i += 1
        """)
        with _child(code) as proc:
            last = -1
            while last < 50:
                last = int(proc.stdout.readline())
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        with open_store(url, create=False) as st:
            written = [e.detail for e in st.events("a") if e.kind == "transition"][1:]
        # every commit it reported is there, in order (one more may have committed before the kill)
        assert written[:last + 1] == [f"w{i}" for i in range(last + 1)] and len(written) <= last + 2

        with open_store(url, exclusive=True) as st:
            st.transition("a", NodeState.bmc_verified, step="verify-bmc", detail="before the crash")
            server.stop("immediate")               # no checkpoint: what is kept comes from the WAL
            with pytest.raises(StateFileError, match="unreachable or went away"):
                st.transition("a", NodeState.setting_boot, step="set-boot")
        server.start()
        with open_store(url, create=False) as st:
            assert st.get("a").state is NodeState.bmc_verified
            assert st.events("a")[-1].detail == "before the crash"
    finally:
        server.remove()


@pytest.mark.root   # mounts a tmpfs
def test_the_servers_disk_filling_mid_run_is_one_clear_error_and_keeps_what_was_stored():
    # the server's own 80 MiB tmpfs (initdb takes about 28 of it), outside pytest's tmp_path:
    # that directory is root's alone and the server runs as postgres
    mnt = Path(tempfile.mkdtemp(prefix="cloudplan-pgfull-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mnt)], check=True)
    try:
        server = PgServer(root=mnt, initdb_args=("--wal-segsize=1",)).start()
        try:
            url = server.new_database()
            with open_store(url, exclusive=True) as st:
                st.ensure_nodes(["a", "b"])
                st.transition("a", NodeState.verifying_bmc, step="verify-bmc")
                fill_disk(mnt / "filler")
                with pytest.raises(StateFileError, match="cannot write: the database server's disk is full; "
                                                         "what was stored before is kept"):
                    for _ in range(100000):
                        st.event("b", "note", "x" * 2000)
                assert st.get("a").state is NodeState.verifying_bmc    # still readable, on the same session
            (mnt / "filler").unlink()
            with open_store(url, exclusive=True) as st:
                assert {r.name: r.state for r in st.nodes()} == {"a": NodeState.verifying_bmc,
                                                                 "b": NodeState.pending}
                st.transition("a", NodeState.bmc_verified, step="verify-bmc")   # and writable again
        finally:
            server.stop("immediate")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
        mnt.rmdir()


@contextlib.contextmanager
def _child(code: str):
    """A Python child running ``code``, its stdout piped; killed if still alive at the end."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
