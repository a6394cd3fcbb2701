"""The embedded default state store: one SQLite file per cloud.

- WAL journal, so ``cloudplan status`` and ``cloudplan events`` read while a
  ``provision`` run writes;
- an exclusive ``flock`` on a side file beside the state file's real path
  (``STATE.db.lock``, symlinks resolved, so two spellings of one file share one
  lock) held for the whole run: the kernel drops it when the process dies,
  even on SIGKILL, so a crash never leaves a stale lock, and a second
  ``provision`` refuses with :class:`StateLocked` naming the holder's pid and
  host (the lock is not taken on the database file itself: closing any other
  descriptor of that file would drop SQLite's own POSIX locks). That lock
  covers every node, so :meth:`claim` has nothing left to take;
- every SQLite failure (disk full, read-only, corrupt page, a file of another
  application, a state this version does not know) becomes one
  :class:`StateFileError` naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cloudplan.errors import StateFileError, StateLocked, StateMissing
from cloudplan.provision.store.base import SCHEMA, SCHEMA_VERSION, Claim, SQLStore


class SQLiteStore(SQLStore):
    """The state file. ``exclusive=True`` (``provision``) takes the run lock;
    readers (``status``, ``events``) open it without."""

    BEGIN = "BEGIN IMMEDIATE"
    DB_ERRORS = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike, *, exclusive: bool = False,
                 clock: Callable[[], float] = time.time, create: bool = True):
        self.path = Path(path)
        super().__init__(str(self.path), clock, exclusive)
        self._lock_fd: int | None = None
        if not create and not self.path.exists():
            raise StateMissing(f"{self.path}: state file not found")
        if exclusive:
            self._acquire_lock()
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
            if create:   # a reader never writes: the first writer sets WAL (it persists in the file)
                self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a process crash in WAL mode (only an OS
            # crash can lose the last transactions), and much cheaper than FULL.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self._migrate(create)
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

    @property
    def work_dir(self) -> Path:
        return self.path.with_name(self.path.stem + ".d")

    def _abandon(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
        self._release_lock()

    def _error(self, doing: str, err: BaseException) -> StateFileError:
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
        """Never add our tables to another application's database (checked before anything is written).
        One statement, so one snapshot: read apart, the version and the tables could straddle the commit
        of another process creating the file, whose new tables would then look foreign."""
        version, names = self.db.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT group_concat(name, char(10)) FROM "
            "(SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name))"
        ).fetchone()
        if version != 0:
            return
        tables = names.split("\n") if names else []
        if tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise StateFileError(f"{self.path}: not a cloudplan state file (an SQLite database with "
                                 f"tables {shown}); give a new path with --state")

    def _migrate(self, create: bool) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and not create:
            # A reader creating the schema would race the run creating the file (their locks can
            # deadlock, which SQLite answers with "database is locked" at once, whatever the timeout).
            raise StateMissing(f"{self.path}: no cloudplan state in it yet (a provision run may be creating it)")
        if version > SCHEMA_VERSION:
            raise StateFileError(f"{self.path}: written by a newer cloudplan (schema {version})")
        if version < SCHEMA_VERSION:
            with self._tx():
                # statement by statement: executescript() would commit our transaction
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        try:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
        finally:
            self._release_lock()

    # -- runs and claims -------------------------------------------------------------

    def interrupted_runs(self) -> int:
        # The file lock admits one run at a time: every other unfinished run has died.
        return len(self._unfinished_runs())

    def claim(self, names: Iterable[str]) -> Claim:
        self._require_exclusive()
        return Claim(claimed=list(names))


StateStore = SQLiteStore   # the name callers knew before there was a second back end
