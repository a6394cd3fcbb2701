"""The provisioning state store (both back ends: the SQLite file and a real
PostgreSQL server) and the node state machine."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pg_fixture import pg_server  # noqa: F401 - a fixture
from provision_fixtures import fill_disk, small_fs  # noqa: F401 - a fixture

from cloudplan.cli import main
from cloudplan.errors import ProvisioningFailed, StateFileError, StateLocked, StateMissing
from cloudplan.provision.states import TRANSITIONS, NodeState, can_transition, resume_state
from cloudplan.provision.store import StateStore, open_store, token_hash


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Backend:
    """Where a test's store lives: an SQLite file, or a fresh database on the test PostgreSQL server."""

    def __init__(self, kind: str, tmp_path, server=None):
        self.kind, self.tmp_path, self.server = kind, tmp_path, server
        self.spec = str(tmp_path / "s.db") if server is None else server.new_database()

    def open(self, **kw):
        return open_store(self.spec, **kw)

    def stored_bytes(self) -> bytes:
        """Every byte the back end keeps on disk: the file and its WAL, or the server's data directory."""
        if self.server is not None:
            return self.server.data_bytes()
        return b"".join(p.read_bytes() for p in self.tmp_path.iterdir() if p.is_file())

    def sql(self, statement: str) -> None:
        """A write behind cloudplan's back (a damaged or foreign store)."""
        if self.server is None:
            db = sqlite3.connect(self.spec)
            db.execute(statement)
            db.commit()
            db.close()
        else:
            with self.server.admin(self.spec.rsplit("/", 1)[1]) as db:
                db.execute(statement)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:
    server = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    return Backend(request.param, tmp_path, server)


def test_transition_writes_row_and_event_together(backend):
    clock = FakeClock()
    with backend.open(exclusive=True, clock=clock) as st:
        assert st.ensure_nodes(["a", "b"]) == ["a", "b"]
        assert st.ensure_nodes(["a", "c"]) == ["c"]          # idempotent for known nodes
        clock.t = 1010
        st.transition("a", NodeState.verifying_bmc, step="verify-bmc", new_attempt=True)
        clock.t = 1015
        rec = st.transition("a", NodeState.bmc_verified, step="verify-bmc", bmc_guid="g-1", detail="power off")
        assert (rec.state, rec.bmc_guid, rec.attempts, rec.entered_at) == (NodeState.bmc_verified, "g-1", 1, 1015)
        assert rec.seconds_in_state(1020) == 5
        kinds = [(e.from_state, e.to_state) for e in st.events("a")]
        assert kinds == [(None, "pending"), ("pending", "verifying-bmc"), ("verifying-bmc", "bmc-verified")]
        assert st.counts()[NodeState.pending] == 2


def test_illegal_transition_is_refused_and_leaves_no_trace(backend):
    with backend.open() as st:
        st.ensure_nodes(["a"])
        with pytest.raises(ProvisioningFailed, match="pending -> deployed"):
            st.transition("a", NodeState.deployed)
        assert st.get("a").state is NodeState.pending
        assert len(st.events("a")) == 1


def test_deployed_is_final_and_failed_restarts():
    assert TRANSITIONS[NodeState.deployed] == frozenset()
    assert can_transition(NodeState.failed, NodeState.verifying_bmc)
    assert not can_transition(NodeState.failed, NodeState.deployed)


@pytest.mark.parametrize("stored,resumed", [
    (NodeState.deployed, NodeState.deployed),
    (NodeState.phoned_home, NodeState.phoned_home),
    (NodeState.verifying_ssh, NodeState.verifying_ssh),
    (NodeState.waiting_boot, NodeState.pending),
    (NodeState.setting_boot, NodeState.pending),
    (NodeState.failed, NodeState.pending),
    (NodeState.verifying_bmc, NodeState.pending),
])
def test_resume_state(stored, resumed):
    assert resume_state(stored) is resumed
    # wherever a run resumes, the state machine lets it get there from the stored state
    if resumed is NodeState.pending and stored is not NodeState.pending:
        assert can_transition(stored, NodeState.verifying_bmc)


def test_any_walk_of_allowed_transitions_is_fully_logged(backend):
    with backend.open() as store:
        @settings(max_examples=40, deadline=None)
        @given(st.lists(st.integers(min_value=0, max_value=20), max_size=15))
        def walk(choices):
            n = f"n-{uuid.uuid4().hex[:8]}"   # a node of its own per example, in the one store
            store.ensure_nodes([n])
            state, moves = NodeState.pending, 0
            for c in choices:
                options = sorted(TRANSITIONS[state], key=lambda s: s.value)
                if not options:
                    break
                state = options[c % len(options)]
                store.transition(n, state, step=state.step.value)
                moves += 1
            assert store.get(n).state is state
            assert len(store.events(n)) == moves + 1

        walk()


def test_second_exclusive_open_refuses_with_holder(tmp_path):
    path = tmp_path / "s.db"
    with StateStore(path, exclusive=True):
        with pytest.raises(StateLocked, match=f"pid {os.getpid()}"):
            StateStore(path, exclusive=True)
        # readers (status, events) are not blocked
        with StateStore(path, create=False) as reader:
            assert reader.nodes() == []
    StateStore(path, exclusive=True).close()   # released on close


def test_lock_of_a_killed_process_is_released(tmp_path):
    path = tmp_path / "s.db"
    code = textwrap.dedent(f"""
        import sys, time
        from cloudplan.provision.store import StateStore
        s = StateStore({str(path)!r}, exclusive=True)
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StateLocked):
            StateStore(path, exclusive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        StateStore(path, exclusive=True).close()     # no stale lock after SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_secrets_are_masked_and_tokens_hashed(backend):
    with backend.open() as st:
        st.register_secrets(["hunter2-pw"])
        st.ensure_nodes(["a"])
        st.transition("a", NodeState.verifying_bmc, step="verify-bmc")
        st.transition("a", NodeState.failed, step="verify-bmc", error="BMC said hunter2-pw is wrong",
                      token_sha256=token_hash("tok-123456789012345"))
        st.event("a", "note", "again hunter2-pw")
        assert "hunter2-pw" not in st.get("a").error
    raw = backend.stored_bytes()
    assert b"hunter2-pw" not in raw
    assert b"tok-123456789012345" not in raw
    assert token_hash("tok-123456789012345").encode() in raw


def test_power_on_counter(backend):
    with backend.open() as st:
        st.ensure_nodes(["a"])
        st.event("a", "power", "power on requested", power_on=True)
        st.event("a", "power", "power reset requested", power_on=True)
        assert st.get("a").power_ons == 2
    with backend.open(create=False) as st:
        assert [e.kind for e in st.events("a")] == ["transition", "power", "power"]


def test_the_sqlite_file_is_in_wal_mode(tmp_path):
    path = tmp_path / "s.db"
    StateStore(path).close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_not_a_state_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("this is not sqlite" * 100)
    from cloudplan.errors import CloudplanError
    with pytest.raises(CloudplanError, match="not a cloudplan state file"):
        StateStore(bad)
    with pytest.raises(CloudplanError, match="not found"):
        StateStore(tmp_path / "missing.db", create=False)


# -- the state file's faults: one clear error each, nothing stored before it lost -------------


def test_a_symlinked_state_path_shares_the_lock(tmp_path):
    real = tmp_path / "state.db"
    link = tmp_path / "other-name.db"
    link.symlink_to(real)
    with StateStore(real, exclusive=True):
        with pytest.raises(StateLocked):
            StateStore(link, exclusive=True)
    with StateStore(link, exclusive=True):
        with pytest.raises(StateLocked):
            StateStore(real, exclusive=True)


def test_another_applications_sqlite_file_is_refused_untouched(tmp_path):
    foreign = tmp_path / "app.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    before = foreign.read_bytes()
    with pytest.raises(StateFileError, match="not a cloudplan state file .*tables customers"):
        StateStore(foreign, exclusive=True)
    assert foreign.read_bytes() == before
    names = sqlite3.connect(foreign).execute("SELECT name FROM sqlite_master").fetchall()
    assert names == [("customers",)]


def test_an_unknown_state_value_is_one_clear_error(backend, capsys):
    with backend.open() as st:
        st.ensure_nodes(["a"])
    backend.sql("UPDATE nodes SET state='half-deployed' WHERE name='a'")
    with backend.open() as st:
        with pytest.raises(StateFileError, match="node 'a' has state 'half-deployed'"):
            st.nodes()
    assert main(["status", "--state", backend.spec]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "half-deployed" in err and "Traceback" not in err
    assert "pg-Secret" not in err


def test_a_corrupt_page_is_found_at_open(tmp_path):
    path = tmp_path / "s.db"
    with StateStore(path) as st:
        st.ensure_nodes([f"n{i}" for i in range(200)])
    os.unlink(f"{path}-wal") if os.path.exists(f"{path}-wal") else None
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[2 * page:3 * page] = b"\xff" * page   # a page of the nodes table destroyed
    path.write_bytes(bytes(data))
    with pytest.raises(StateFileError, match="corrupt"):
        StateStore(path, exclusive=True)


def test_a_read_only_directory_is_one_clear_error(small_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(StateFileError, match="state.db: .*([Rr]ead-only|cannot be opened or created)"):
        StateStore(small_fs / "state.db", exclusive=True)
    with pytest.raises(StateFileError, match="state.db: .*([Rr]ead-only|cannot be opened or created)"):
        StateStore(small_fs / "state.db")


def test_a_full_disk_mid_run_is_one_clear_error_and_keeps_what_was_stored(small_fs):
    path = small_fs / "state.db"
    with StateStore(path, exclusive=True) as st:
        st.ensure_nodes(["a", "b"])
        st.transition("a", NodeState.verifying_bmc, step="verify-bmc")
        # fill the disk, then keep writing events until a transaction cannot commit
        fill_disk(small_fs / "filler")
        with pytest.raises(StateFileError, match="state.db: cannot write: the disk is full"):
            for i in range(100000):
                st.event("b", "note", "x" * 2000)
        # the node rows are still there and still readable
        assert st.get("a").state is NodeState.verifying_bmc
    os.unlink(small_fs / "filler")
    with StateStore(path, exclusive=True) as st:
        assert {r.name: r.state for r in st.nodes()} == {"a": NodeState.verifying_bmc, "b": NodeState.pending}
        st.transition("a", NodeState.bmc_verified, step="verify-bmc")   # and writable again


def test_a_reader_polling_a_state_file_being_created_never_takes_it_for_a_foreign_one(tmp_path):
    """`status` (or a test's poll) opening the file while `provision` creates it. Seen here before
    the fix, a few times in 40 creations: the version and the tables read apart, so a commit between
    the two made cloudplan's own new tables look foreign; and the reader creating the schema too,
    whose locks deadlocked with the run's switch to WAL ("database is locked" in the run). A reader
    now writes nothing and says there is no state yet."""
    errors = []
    for i in range(40):
        path = tmp_path / f"s{i}.db"
        writer = subprocess.Popen([sys.executable, "-c", "import sys; from cloudplan.provision.store import "
                                   "StateStore; StateStore(sys.argv[1], exclusive=True).ensure_nodes(['a'])",
                                   str(path)], stderr=subprocess.PIPE, text=True)
        while writer.poll() is None:
            if path.exists():
                try:
                    StateStore(path, create=False).close()
                except StateMissing:
                    pass
                except StateFileError as err:
                    errors.append(str(err))
        assert writer.wait() == 0, writer.stderr.read()
    assert errors == []
