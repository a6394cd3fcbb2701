"""What every provisioning state store offers, and the SQL they share.

A store keeps one row per node (its state, step, error, the boot attempt's
token hash, the host key it reported ...), an event log, and the runs that
used it. The orchestrator and the commands use only :class:`Store`; the back
ends (``sqlite.py``, ``postgresql.py``) differ in how they connect, lock,
begin a transaction and explain a failure, and share the statements below
(``?`` placeholders, SQL both dialects accept: ``ON CONFLICT DO NOTHING``,
``RETURNING``).

Semantics every back end keeps:

- one transaction per transition: the node row and its event are written
  together or not at all, so the event log is complete after a crash;
- a node is worked on by one provision run at a time: :meth:`Store.claim`
  takes it for the rest of the run, and a process that dies (even SIGKILL)
  lets it go;
- a failure of the store becomes one :class:`StateFileError` naming it, and a
  failed transaction is rolled back whole, so what was stored before is kept;
- no password is ever stored; one-time tokens are stored only as a SHA-256
  hash, and any text matching a registered secret is masked before writing.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cloudplan.errors import CloudplanError, ProvisioningFailed, StateFileError
from cloudplan.provision.states import NodeState, can_transition

SCHEMA_VERSION = 1
MASK = "***"

# States are plain text, so a new state needs no schema change. Written in
# SQLite's dialect; the PostgreSQL back end maps the two types that differ.
SCHEMA = """
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

NODE_COLUMNS = ("name", "state", "step", "error", "entered_at", "updated_at", "attempts", "power_ons",
                "bmc_guid", "token_sha256", "host_key", "address", "mac", "facts")
_COLS = ", ".join(NODE_COLUMNS)
_EVENT_COLS = "id, node, at, kind, from_state, to_state, step, detail"
# Columns a transition may set besides state/step/error.
FIELDS = ("bmc_guid", "token_sha256", "host_key", "address", "mac", "facts")


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


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`Store.claim`: the nodes this run now works on, and
    those another live run holds (name -> who, e.g. "run 4: pid 812 on host hs-2")."""

    claimed: list[str]
    held: dict[str, str] = field(default_factory=dict)


class Store(abc.ABC):
    """The state store the orchestrator and the commands use.

    ``exclusive=True`` (``provision``) opens it for a run that changes nodes;
    readers (``status``, ``events``, ``--dry-run``) open it without."""

    #: What errors name: the file, or the database URL with its password masked.
    where: str
    clock: Callable[[], float]

    @property
    @abc.abstractmethod
    def work_dir(self) -> Path:
        """This host's directory for the run's files (dnsmasq's, the deploy ISOs)."""

    @abc.abstractmethod
    def claim(self, names: Iterable[str]) -> Claim:
        """Take these nodes for this run (until :meth:`close`); nodes another live run holds are left to it."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abc.abstractmethod
    def register_secrets(self, secrets: Iterable[str]) -> None:
        """Texts that must never reach the store (BMC passwords): masked if they ever appear."""

    @abc.abstractmethod
    def begin_run(self) -> int: ...

    @abc.abstractmethod
    def end_run(self, outcome: str) -> None: ...

    @abc.abstractmethod
    def interrupted_runs(self) -> int:
        """Runs that started but never finished (crash, SIGKILL), other than live ones."""

    @abc.abstractmethod
    def ensure_nodes(self, names: Iterable[str]) -> list[str]:
        """Add rows (pending) for nodes the store does not know yet; returns the new names."""

    @abc.abstractmethod
    def get(self, name: str) -> NodeRecord: ...

    @abc.abstractmethod
    def nodes(self) -> list[NodeRecord]: ...

    @abc.abstractmethod
    def counts(self) -> dict[NodeState, int]: ...

    @abc.abstractmethod
    def transition(self, name: str, to: NodeState, *, step: str | None = None, error: str | None = None,
                   detail: str = "", new_attempt: bool = False, **fields) -> NodeRecord:
        """Move a node to ``to`` and log it, in one transaction."""

    @abc.abstractmethod
    def event(self, name: str, kind: str, detail: str = "", *, step: str | None = None,
              power_on: bool = False) -> None:
        """Record something that happened to a node without changing its state."""

    @abc.abstractmethod
    def events(self, name: str | None = None) -> list[Event]: ...

    @abc.abstractmethod
    def has_node(self, name: str) -> bool: ...


class SQLStore(Store):
    """The statements both back ends run. A back end supplies the connection
    (``self.db``, with ``execute(sql, args)`` returning a cursor), the dialect
    hooks below and the translation of its driver's errors."""

    BEGIN = "BEGIN"
    FOR_UPDATE = ""          # row lock for a read-then-write in a transaction, where the dialect has one
    DB_ERRORS: tuple[type[BaseException], ...] = ()

    def __init__(self, where: str, clock: Callable[[], float], exclusive: bool):
        self.where = where
        self.clock = clock
        self.exclusive = exclusive
        self.db = None
        self._secrets: set[str] = set()
        self._mutex = threading.RLock()  # one user of the connection at a time inside this process
        self._run_id: int | None = None

    # -- dialect --------------------------------------------------------------------

    def _x(self, sql: str, args: tuple = ()):
        """Execute with ``?`` placeholders (a back end with another paramstyle overrides this)."""
        return self.db.execute(sql, args)

    @abc.abstractmethod
    def _error(self, doing: str, err: BaseException) -> StateFileError:
        """One clear error for a driver failure; never the SQL."""

    def _require_exclusive(self) -> None:
        if not self.exclusive:
            raise CloudplanError(f"{self.where}: nodes are claimed only by a provision run (exclusive=True)")

    # -- secrets ---------------------------------------------------------------------

    def register_secrets(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 3)

    def _clean(self, text: str | None) -> str | None:
        if text is None:
            return None
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    # -- transactions ----------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self):
        """One transaction; rolled back whole on any error, and a driver error becomes a StateFileError."""
        with self._mutex:
            try:
                self._x(self.BEGIN)
            except self.DB_ERRORS as err:
                raise self._error("cannot write", err) from None
            try:
                yield
            except BaseException as exc:
                with contextlib.suppress(*self.DB_ERRORS):
                    self._x("ROLLBACK")
                if isinstance(exc, self.DB_ERRORS):
                    raise self._error("cannot write", exc) from None
                raise
            try:
                self._x("COMMIT")
            except self.DB_ERRORS as err:
                with contextlib.suppress(*self.DB_ERRORS):
                    self._x("ROLLBACK")
                raise self._error("cannot write", err) from None

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._mutex:
            try:
                return self._x(sql, args).fetchall()
            except (*self.DB_ERRORS, UnicodeDecodeError) as err:
                raise self._error("cannot read", err) from None

    def _insert_event(self, node: str, at: float, kind: str, frm: str | None, to: str | None,
                      step: str | None, detail: str) -> None:
        self._x("INSERT INTO events(node, at, kind, from_state, to_state, step, detail) VALUES (?,?,?,?,?,?,?)",
                (node, at, kind, frm, to, step, self._clean(detail) or ""))

    # -- runs ------------------------------------------------------------------------

    def begin_run(self) -> int:
        with self._tx():
            self._run_id = self._x("INSERT INTO runs(started_at, pid, host) VALUES (?,?,?) RETURNING id",
                                   (self.clock(), os.getpid(), socket.gethostname())).fetchone()[0]
        return self._run_id

    def end_run(self, outcome: str) -> None:
        if self._run_id is None:
            return
        with self._tx():
            self._x("UPDATE runs SET finished_at=?, outcome=? WHERE id=?", (self.clock(), outcome, self._run_id))

    def _unfinished_runs(self) -> list[int]:
        return [r[0] for r in self._read("SELECT id FROM runs WHERE finished_at IS NULL AND id != ?",
                                         (self._run_id or -1,))]

    def runs(self) -> list[tuple[int, float | None, str | None]]:
        """(id, finished_at, outcome) of every run, oldest first."""
        return self._read("SELECT id, finished_at, outcome FROM runs ORDER BY id")

    # -- nodes -----------------------------------------------------------------------

    def ensure_nodes(self, names: Iterable[str]) -> list[str]:
        now = self.clock()
        added = []
        with self._tx():
            for name in names:
                cur = self._x("INSERT INTO nodes(name, state, step, entered_at, updated_at) VALUES (?,?,?,?,?) "
                              "ON CONFLICT DO NOTHING", (name, NodeState.pending.value, None, now, now))
                if cur.rowcount:
                    added.append(name)
                    self._insert_event(name, now, "transition", None, NodeState.pending.value, None,
                                       "added to the state file")
        return added

    def _no_node(self, name: str) -> CloudplanError:
        return CloudplanError(f"{self.where}: no node named {name!r} in the state file")

    def get(self, name: str) -> NodeRecord:
        rows = self._read(f"SELECT {_COLS} FROM nodes WHERE name=?", (name,))
        if not rows:
            raise self._no_node(name)
        return self._record(rows[0])

    def nodes(self) -> list[NodeRecord]:
        return [self._record(r) for r in self._read(f"SELECT {_COLS} FROM nodes ORDER BY name")]

    def _record(self, row: tuple) -> NodeRecord:
        d = dict(zip(NODE_COLUMNS, row))
        d["state"] = self._state_of(d["name"], d["state"])
        d["facts"] = json.loads(d["facts"]) if d["facts"] else None
        return NodeRecord(**d)

    def _state_of(self, name: str, value: str) -> NodeState:
        try:
            return NodeState(value)
        except ValueError:
            raise StateFileError(f"{self.where}: node {name!r} has state {str(value)[:40]!r}, which this "
                                 "cloudplan does not know (written by a newer one?)") from None

    def counts(self) -> dict[NodeState, int]:
        out = {s: 0 for s in NodeState}
        for state, n in self._read("SELECT state, COUNT(*) FROM nodes GROUP BY state"):
            out[self._state_of("?", state)] = n
        return out

    def transition(self, name: str, to: NodeState, *, step: str | None = None, error: str | None = None,
                   detail: str = "", new_attempt: bool = False, **fields) -> NodeRecord:
        """``fields`` may set bmc_guid, token_sha256, host_key, address, mac, facts (dict)."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown node fields: {sorted(unknown)}")
        if "facts" in fields and fields["facts"] is not None:
            fields["facts"] = json.dumps(fields["facts"], sort_keys=True)
        now = self.clock()
        with self._tx():
            row = self._x(f"SELECT state, entered_at FROM nodes WHERE name=?{self.FOR_UPDATE}", (name,)).fetchone()
            if row is None:
                raise self._no_node(name)
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
            self._x(f"UPDATE nodes SET {', '.join(sets)} WHERE name=?", (*args, name))
            text = detail if error is None else (f"{detail}: {error}" if detail else error)
            self._insert_event(name, now, "transition", frm.value, to.value, step, text)
        return self.get(name)

    def event(self, name: str, kind: str, detail: str = "", *, step: str | None = None,
              power_on: bool = False) -> None:
        """``power_on`` also counts a power-on/cycle command in the node row."""
        now = self.clock()
        with self._tx():
            state = self._x(f"SELECT state FROM nodes WHERE name=?{self.FOR_UPDATE}", (name,)).fetchone()
            cur = state[0] if state else None
            self._insert_event(name, now, kind, cur, cur, step, detail)
            if power_on:
                self._x("UPDATE nodes SET power_ons=power_ons+1, updated_at=? WHERE name=?", (now, name))

    def events(self, name: str | None = None) -> list[Event]:
        if name is None:
            rows = self._read(f"SELECT {_EVENT_COLS} FROM events ORDER BY id")
        else:
            rows = self._read(f"SELECT {_EVENT_COLS} FROM events WHERE node=? ORDER BY id", (name,))
        return [Event(*r) for r in rows]

    def has_node(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM nodes WHERE name=?", (name,)))
