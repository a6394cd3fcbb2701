"""The provisioning state file: one SQLite database per cloud.

- WAL journal, so ``cloudplan status`` and ``cloudplan events`` read while a
  ``provision`` run writes;
- one transaction per transition: the node row and its event are written
  together or not at all, so the event log is complete after a crash;
- an exclusive ``flock`` on a side file beside the state file's real path
  (``STATE.db.lock``, symlinks resolved, so two spellings of one file share one
  lock) held for the whole run: the kernel drops it when the process dies,
  even on SIGKILL, so a crash never leaves a stale lock, and a second
  ``provision`` refuses with :class:`StateLocked` naming the holder's pid and
  host (the lock is not taken on the database file itself: closing any other
  descriptor of that file would drop SQLite's own POSIX locks);
- every SQLite failure (disk full, read-only, corrupt page, a file of another
  application, a state this version does not know) becomes one
  :class:`StateFileError` naming the file; a failed transaction is rolled
  back whole, so what was stored before it is kept;
- no password is ever stored; one-time tokens are stored only as a SHA-256
  hash, and any text matching a registered secret is masked before writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cloudplan.errors import CloudplanError, ProvisioningFailed, StateFileError, StateLocked
from cloudplan.provision.states import NodeState, can_transition

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MASK = "***"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    name        TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    step        TEXT,
    error       TEXT,
    entered_at  REAL NOT NULL,  -- when the node entered its state (unix seconds)
    updated_at  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,  -- runs that started this node from scratch
    power_ons   INTEGER NOT NULL DEFAULT 0,  -- power-on/cycle commands sent
    bmc_guid    TEXT,
    token_sha256 TEXT,          -- hash of the current one-time phone-home token
    host_key    TEXT,           -- SSH host key the node reported at phone-home
    address     TEXT,           -- the node's address as seen at phone-home
    mac         TEXT,
    facts       TEXT            -- JSON of what SSH verification found
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node        TEXT NOT NULL,
    at          REAL NOT NULL,
    kind        TEXT NOT NULL,  -- 'transition' or what happened: power-on, bootdev-ignored, ipxe-served ...
    from_state  TEXT,
    to_state    TEXT,
    step        TEXT,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_node ON events(node, id);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  REAL NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT NOT NULL,
    finished_at REAL,
    outcome     TEXT
);
"""

_NODE_COLUMNS = ("name", "state", "step", "error", "entered_at", "updated_at", "attempts", "power_ons",
                 "bmc_guid", "token_sha256", "host_key", "address", "mac", "facts")
_COLS = ", ".join(_NODE_COLUMNS)
# Columns a transition may set besides state/step/error.
_FIELDS = ("bmc_guid", "token_sha256", "host_key", "address", "mac", "facts")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NodeRecord:
    name: str
    state: NodeState
    step: str | None
    error: str | None
    entered_at: float
    updated_at: float
    attempts: int
    power_ons: int
    bmc_guid: str | None
    token_sha256: str | None
    host_key: str | None
    address: str | None
    mac: str | None
    facts: dict | None

    def seconds_in_state(self, now: float) -> float:
        return max(0.0, now - self.entered_at)

    def as_status(self, now: float) -> dict:
        """What ``cloudplan status --json`` prints: no token hash, no key material beyond the public key."""
        return {"name": self.name, "state": self.state.value, "step": self.step, "error": self.error,
                "seconds_in_state": round(self.seconds_in_state(now), 1), "power_ons": self.power_ons,
                "bmc_guid": self.bmc_guid, "address": self.address, "host_key": self.host_key}


@dataclass(frozen=True)
class Event:
    id: int
    node: str
    at: float
    kind: str
    from_state: str | None
    to_state: str | None
    step: str | None
    detail: str


class StateStore:
    """The state file. ``exclusive=True`` (``provision``) takes the run lock;
    readers (``status``, ``events``) open it without."""

    def __init__(self, path: str | os.PathLike, *, exclusive: bool = False,
                 clock: Callable[[], float] = time.time, create: bool = True):
        self.path = Path(path)
        self.clock = clock
        self._secrets: set[str] = set()
        self._mutex = threading.RLock()  # one user of the connection at a time inside this process
        self._lock_fd: int | None = None
        self._run_id: int | None = None
        if not create and not self.path.exists():
            raise CloudplanError(f"{self.path}: state file not found")
        if exclusive:
            self._acquire_lock()
        self.db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._release_lock()
            raise StateFileError(f"{self.path}: cannot create its directory: {err.strerror}") from None
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            # A damaged file may hold bytes that are not UTF-8: show them replaced, never crash on them.
            self.db.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
            self._refuse_foreign()
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a process crash in WAL mode (only an OS
            # crash can lose the last transactions), and much cheaper than FULL.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
            # A corrupt page is found here, not mid-run (one pass over the file: milliseconds for a rack).
            check = self.db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed")
        except (sqlite3.Error, UnicodeDecodeError) as err:  # sqlite's message itself may be mangled bytes
            self._abandon()
            raise self._error("cannot open", err) from None
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
        self._release_lock()

    def _error(self, doing: str, err: Exception) -> StateFileError:
        """One clear error for an SQLite failure; never the SQL."""
        text = str(err).lower()
        if isinstance(err, UnicodeDecodeError):
            why = "the file is corrupt (restore a copy, or start a new state file)"
        elif "full" in text:
            why = "the disk is full"
        elif "readonly" in text or "read-only" in text:
            why = "it (or its directory) is read-only"
        elif "unable to open" in text:
            why = "it cannot be opened or created (does its directory exist, and is it writable?)"
        elif "malformed" in text or "corrupt" in text:
            why = "the file is corrupt (restore a copy, or start a new state file)"
        elif "not a database" in text:
            why = "it is not an SQLite database, so not a cloudplan state file"
        elif "i/o" in text:
            why = "an I/O error (is the disk full or failing?)"
        else:
            why = str(err)
        return StateFileError(f"{self.path}: {doing}: {why}; what was stored before is kept")

    # -- lifecycle -------------------------------------------------------------------

    def _lock_path(self) -> Path:
        real = Path(os.path.realpath(self.path))   # one lock per file, however it is spelt
        return real.with_name(real.name + ".lock")

    def _acquire_lock(self) -> None:
        lp = self._lock_path()
        try:
            lp.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise StateFileError(f"{self.path}: cannot create its lock file {lp}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLocked(f"{self.path}: in use by another provision run ({holder}); "
                              "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _refuse_foreign(self) -> None:
        """Never add our tables to another application's database (checked before anything is written)."""
        if self.db.execute("PRAGMA user_version").fetchone()[0] != 0:
            return
        tables = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                                "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        if tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise StateFileError(f"{self.path}: not a cloudplan state file (an SQLite database with "
                                 f"tables {shown}); give a new path with --state")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateFileError(f"{self.path}: written by a newer cloudplan (schema {version})")
        if version < SCHEMA_VERSION:
            with self._tx():
                # statement by statement: executescript() would commit our transaction
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        try:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
        finally:
            self._release_lock()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- secrets ---------------------------------------------------------------------

    def register_secrets(self, secrets: Iterable[str]) -> None:
        """Texts that must never reach the file (BMC passwords): masked if they ever appear."""
        self._secrets.update(s for s in secrets if s and len(s) >= 3)

    def _clean(self, text: str | None) -> str | None:
        if text is None:
            return None
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    # -- transactions ----------------------------------------------------------------

    class _Tx:
        def __init__(self, store: "StateStore"):
            self.store = store

        def __enter__(self):
            self.store._mutex.acquire()
            try:
                self.store.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                self.store._mutex.release()
                raise self.store._error("cannot write", err) from None

        def __exit__(self, exc_type, exc, _tb):
            try:
                if exc_type is None:
                    try:
                        self.store.db.execute("COMMIT")
                        return
                    except sqlite3.Error as err:
                        exc = err
                with contextlib.suppress(sqlite3.Error):
                    self.store.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self.store._error("cannot write", exc) from None
            finally:
                self.store._mutex.release()

    def _tx(self) -> "StateStore._Tx":
        return StateStore._Tx(self)

    def _insert_event(self, node: str, at: float, kind: str, frm: str | None, to: str | None,
                      step: str | None, detail: str) -> None:
        self.db.execute("INSERT INTO events(node, at, kind, from_state, to_state, step, detail) "
                        "VALUES (?,?,?,?,?,?,?)", (node, at, kind, frm, to, step, self._clean(detail) or ""))

    # -- runs ------------------------------------------------------------------------

    def begin_run(self) -> int:
        with self._tx():
            cur = self.db.execute("INSERT INTO runs(started_at, pid, host) VALUES (?,?,?)",
                                  (self.clock(), os.getpid(), socket.gethostname()))
            self._run_id = cur.lastrowid
        return self._run_id

    def end_run(self, outcome: str) -> None:
        if self._run_id is None:
            return
        with self._tx():
            self.db.execute("UPDATE runs SET finished_at=?, outcome=? WHERE id=?",
                            (self.clock(), outcome, self._run_id))

    def interrupted_runs(self) -> int:
        """Runs that started but never finished (crash, SIGKILL), other than the current one."""
        return self._read("SELECT COUNT(*) FROM runs WHERE finished_at IS NULL AND id != ?",
                          (self._run_id or -1,))[0][0]

    # -- nodes -----------------------------------------------------------------------

    def ensure_nodes(self, names: Iterable[str]) -> list[str]:
        """Add rows (pending) for nodes the file does not know yet; returns the new names."""
        now = self.clock()
        added = []
        with self._tx():
            for name in names:
                cur = self.db.execute("INSERT OR IGNORE INTO nodes(name, state, step, entered_at, updated_at) "
                                      "VALUES (?,?,?,?,?)",
                                      (name, NodeState.pending.value, None, now, now))
                if cur.rowcount:
                    added.append(name)
                    self._insert_event(name, now, "transition", None, NodeState.pending.value, None,
                                       "added to the state file")
        return added

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._mutex:
            try:
                return self.db.execute(sql, args).fetchall()
            except (sqlite3.Error, UnicodeDecodeError) as err:
                raise self._error("cannot read", err) from None

    def get(self, name: str) -> NodeRecord:
        rows = self._read(f"SELECT {_COLS} FROM nodes WHERE name=?", (name,))
        row = rows[0] if rows else None
        if row is None:
            raise CloudplanError(f"{self.path}: no node named {name!r} in the state file")
        return self._record(row)

    def nodes(self) -> list[NodeRecord]:
        return [self._record(r) for r in self._read(f"SELECT {_COLS} FROM nodes ORDER BY name")]

    def _record(self, row: tuple) -> NodeRecord:
        d = dict(zip(_NODE_COLUMNS, row))
        d["state"] = self._state_of(d["name"], d["state"])
        d["facts"] = json.loads(d["facts"]) if d["facts"] else None
        return NodeRecord(**d)

    def _state_of(self, name: str, value: str) -> NodeState:
        try:
            return NodeState(value)
        except ValueError:
            raise StateFileError(f"{self.path}: node {name!r} has state {str(value)[:40]!r}, which this "
                                 "cloudplan does not know (written by a newer one?)") from None

    def counts(self) -> dict[NodeState, int]:
        out = {s: 0 for s in NodeState}
        for state, n in self._read("SELECT state, COUNT(*) FROM nodes GROUP BY state"):
            out[self._state_of("?", state)] = n
        return out

    def transition(self, name: str, to: NodeState, *, step: str | None = None, error: str | None = None,
                   detail: str = "", new_attempt: bool = False, **fields) -> NodeRecord:
        """Move a node to ``to`` and log it, in one transaction. ``fields`` may set
        bmc_guid, token_sha256, host_key, address, mac, facts (dict)."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown node fields: {sorted(unknown)}")
        if "facts" in fields and fields["facts"] is not None:
            fields["facts"] = json.dumps(fields["facts"], sort_keys=True)
        now = self.clock()
        with self._tx():
            row = self.db.execute("SELECT state, entered_at FROM nodes WHERE name=?", (name,)).fetchone()
            if row is None:
                raise CloudplanError(f"{self.path}: no node named {name!r} in the state file")
            frm = self._state_of(name, row[0])
            if not can_transition(frm, to):
                raise ProvisioningFailed(f"state machine does not allow {frm.value} -> {to.value}",
                                         node=name, step=step)
            entered = row[1] if frm is to else now
            sets = ["state=?", "step=?", "error=?", "entered_at=?", "updated_at=?"]
            args: list = [to.value, step, self._clean(error), entered, now]
            if new_attempt:
                sets.append("attempts=attempts+1")
            for key, val in fields.items():
                sets.append(f"{key}=?")
                args.append(val)
            self.db.execute(f"UPDATE nodes SET {', '.join(sets)} WHERE name=?", (*args, name))
            text = detail if error is None else (f"{detail}: {error}" if detail else error)
            self._insert_event(name, now, "transition", frm.value, to.value, step, text)
        return self.get(name)

    def event(self, name: str, kind: str, detail: str = "", *, step: str | None = None,
              power_on: bool = False) -> None:
        """Record something that happened to a node without changing its state.
        ``power_on`` also counts a power-on/cycle command in the node row."""
        now = self.clock()
        with self._tx():
            state = self.db.execute("SELECT state FROM nodes WHERE name=?", (name,)).fetchone()
            cur = state[0] if state else None
            self._insert_event(name, now, kind, cur, cur, step, detail)
            if power_on:
                self.db.execute("UPDATE nodes SET power_ons=power_ons+1, updated_at=? WHERE name=?", (now, name))

    def events(self, name: str | None = None) -> list[Event]:
        if name is None:
            rows = self._read("SELECT * FROM events ORDER BY id")
        else:
            rows = self._read("SELECT * FROM events WHERE node=? ORDER BY id", (name,))
        return [Event(*r) for r in rows]

    def has_node(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM nodes WHERE name=?", (name,)))
