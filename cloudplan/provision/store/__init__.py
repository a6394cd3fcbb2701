"""The provisioning state store: an interface and two back ends.

``open_store(spec)`` picks the back end from ``--state``: a
``postgresql://`` (or ``postgres://``) URL opens the PostgreSQL store several
cloudplan hosts can share; a file path or ``sqlite:///path`` opens the
embedded SQLite file, the default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from cloudplan.errors import UsageError
from cloudplan.provision.store.base import MASK, SCHEMA_VERSION, Claim, Event, NodeRecord, Store, token_hash
from cloudplan.provision.store.sqlite import SQLiteStore, StateStore

__all__ = ["MASK", "SCHEMA_VERSION", "Claim", "Event", "NodeRecord", "SQLiteStore", "StateStore", "Store",
           "describe_state", "open_store", "state_exists", "token_hash"]

_SQLITE_PREFIX = "sqlite://"


def _kind(spec: str | os.PathLike) -> tuple[str, str]:
    """("postgresql", url) or ("sqlite", path)."""
    text = os.fspath(spec)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql", text
    if text.startswith(_SQLITE_PREFIX):
        path = text[len(_SQLITE_PREFIX):]
        if not path.startswith("/"):
            raise UsageError(f"--state {text}: an SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        return "sqlite", path[1:]
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise UsageError(f"--state: unknown store scheme {scheme[:20]!r}:// (a file path, sqlite:///PATH "
                         "or postgresql://USER@HOST/DB)")
    return "sqlite", text


def open_store(spec: str | os.PathLike, *, exclusive: bool = False, clock: Callable[[], float] = time.time,
               create: bool = True) -> Store:
    """The store ``--state`` names; ``exclusive`` for a provision run, ``create=False`` for readers."""
    kind, where = _kind(spec)
    if kind == "postgresql":
        from cloudplan.provision.store.postgresql import PostgresStore   # psycopg only when asked for

        return PostgresStore(where, exclusive=exclusive, clock=clock, create=create)
    return SQLiteStore(where, exclusive=exclusive, clock=clock, create=create)


def state_exists(spec: str | os.PathLike) -> bool:
    """Whether there may be stored state to read (a server is asked only when opened)."""
    kind, where = _kind(spec)
    return kind == "postgresql" or Path(where).exists()


def describe_state(spec: str | os.PathLike) -> str:
    """``--state`` as messages may show it: a URL's password masked."""
    kind, where = _kind(spec)
    if kind == "postgresql":
        from cloudplan.provision.store.postgresql import mask_url

        return mask_url(where)
    return where
