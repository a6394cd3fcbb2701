"""The OpenStack release catalog and the rules for which upgrade hops are supported.

The catalog is the ``data/series_status.yaml`` file of ``openstack/releases``
(one entry per series: ``name``, ``release-id`` since 2023.1, ``status``,
``initial-release``, ``slurp``, ``next-phase``, ``eol-date``). A verbatim copy
ships in the package; ``--catalog FILE`` reads a newer copy of the upstream
file as is.

The ``status`` in the file is the status on the day the file was last
changed; ``next-phase`` says when it changes. The status a rehearsal uses is
derived for its own day (injectable, today by default): the next phase once
its date has passed, end of life once ``eol-date`` has. A series whose
``initial-release`` is still ahead, or that is still in ``future`` or
``development``, is not released.

Hop rules (OpenStack "SLURP" policy, TC resolution 2022-02-10): every release
can be upgraded to the next one (N -> N+1), and a SLURP release (every
``.1`` release since 2023.1) can also be upgraded directly to the next SLURP
release, skipping the ``.2`` in between.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from cloudplan.errors import SpecError, UpgradeError
from cloudplan.io import read_yaml

log = logging.getLogger(__name__)

PACKAGED_CATALOG = Path(__file__).resolve().parent.parent / "data" / "series_status.yaml"


class Release(BaseModel):
    """One OpenStack series as listed in series_status.yaml."""

    name: str = Field(description="series code name, lowercase (epoxy)")
    release_id: str | None = Field(default=None, description="year.count identifier (2025.1); none before 2023.1")
    status: str = Field(description="maintenance phase on the catalog's day: development, maintained, "
                                    "unmaintained, end of life, ...")
    listed_status: str = Field(default="", description="the status as written in the file (its day, not ours)")
    released: bool = Field(default=True, description="released on the catalog's day")
    initial_release: dt.date | None = Field(default=None, description="date of the series' first release")
    slurp: bool = Field(default=False, description="Skip-Level Upgrade Release Process release")
    eol_date: dt.date | None = Field(default=None, description="end-of-life date, when reached")
    next_phase: str | None = Field(default=None, description="the next maintenance phase, if announced")
    next_phase_date: dt.date | None = Field(default=None, description="when the next phase starts")

    @property
    def key(self) -> str:
        """The identifier used in plans and reports: the release id, else the name."""
        return self.release_id or self.name

    @property
    def label(self) -> str:
        return f"{self.release_id} {self.name.title()}" if self.release_id else self.name.title()


class Hop(BaseModel):
    """One supported upgrade step between two releases."""

    from_release: Release = Field(description="release running before the hop")
    to_release: Release = Field(description="release running after the hop")

    skip_level: bool = Field(default=False, description="SLURP -> SLURP hop skipping the release in between")

    @property
    def label(self) -> str:
        return f"{self.from_release.key} -> {self.to_release.key}"

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.from_release.key, "to": self.to_release.key,
                "from_name": self.from_release.name, "to_name": self.to_release.name,
                "skip_level": self.skip_level}


def _date(value: Any, where: str, path: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise SpecError(f"expected a date YYYY-MM-DD, got {value!r}", path=path, field=where) from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "true", "1", "y")
    return bool(value)


def parse_catalog(data: Any, *, path: str = "<catalog>") -> list[Release]:
    """Turn the parsed series_status.yaml into releases, oldest first."""
    if not isinstance(data, list) or not data:
        raise SpecError("expected a non-empty list of series", path=path)
    out: list[Release] = []
    for i, entry in enumerate(data):
        where = f"[{i}]"
        if not isinstance(entry, dict) or "name" not in entry or "status" not in entry:
            raise SpecError("each series needs at least 'name' and 'status'", path=path, field=where)
        rid = entry.get("release-id")
        nxt = entry.get("next-phase") or {}
        out.append(Release(
            name=str(entry["name"]).lower(),
            release_id=None if rid is None else _release_id(rid),
            status=str(entry["status"]),
            listed_status=str(entry["status"]),
            initial_release=_date(entry.get("initial-release"), f"{where}.initial-release", path),
            # Every .1 release is SLURP; a copy of the file without the key keeps that rule.
            slurp=_truthy(entry["slurp"]) if "slurp" in entry else (rid is not None and _release_id(rid).endswith(".1")),
            eol_date=_date(entry.get("eol-date"), f"{where}.eol-date", path),
            next_phase=nxt.get("status") if isinstance(nxt, dict) else None,
            next_phase_date=_date(nxt.get("date"), f"{where}.next-phase.date", path) if isinstance(nxt, dict) else None,
        ))
    # Upstream lists newest first; order by release date so N+1 is the next entry. A series not
    # yet dated sits where its id says (YYYY.1 in spring, YYYY.2 in autumn), else newest.
    out.sort(key=_order)
    return out


# Statuses of a series that has not shipped its first release.
UNRELEASED_STATUSES = ("future", "development")


def status_on(r: Release, day: dt.date) -> str:
    """The series' status on ``day``: the listed one, moved on by ``next-phase`` and ``eol-date``
    once their dates have passed (upstream writes one phase ahead only)."""
    status = r.listed_status or r.status
    if r.next_phase and r.next_phase_date is not None and day >= r.next_phase_date:
        status = r.next_phase
    if r.eol_date is not None and day >= r.eol_date:
        status = "end of life"
    return status


def released_on(r: Release, day: dt.date) -> bool:
    """Whether the series has shipped by ``day``: its initial release is past and its status says so."""
    if r.initial_release is not None and day < r.initial_release:
        return False
    return status_on(r, day) not in UNRELEASED_STATUSES


def _order(r: Release) -> tuple[dt.date, str]:
    if r.initial_release is not None:
        return r.initial_release, r.release_id or ""
    year, _, half = (r.release_id or "").partition(".")
    if year.isdigit() and half in ("1", "2"):
        return dt.date(int(year), 4 if half == "1" else 10, 1), r.release_id or ""
    return dt.date.max, r.name


def _release_id(value: Any) -> str:
    # YAML reads 2025.1 as a float and 2025.10 would lose its zero; keep ids as written.
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


class Catalog:
    """Releases in order with the hop rules; look releases up by id or name."""

    def __init__(self, releases: list[Release], source: str = "packaged", today: dt.date | None = None):
        if not releases:
            raise UpgradeError("the release catalog is empty")
        self.today = today or dt.date.today()
        self.releases = [r.model_copy(update={"status": status_on(r, self.today),
                                              "released": released_on(r, self.today)}) for r in releases]
        self.source = source
        self._index = {r.key: i for i, r in enumerate(releases)}
        for i, r in enumerate(releases):
            self._index.setdefault(r.name, i)

    def __iter__(self):
        return iter(self.releases)

    def __len__(self) -> int:
        return len(self.releases)

    def get(self, ident: str) -> Release:
        """Find a release by id (2025.1) or name (epoxy, Epoxy)."""
        key = str(ident).strip()
        idx = self._index.get(key, self._index.get(key.lower()))
        if idx is None:
            known = ", ".join(r.key for r in self.releases[-8:])
            raise UpgradeError(f"unknown release {ident!r} in the {self.source} catalog (recent: {known})")
        return self.releases[idx]

    def position(self, release: Release) -> int:
        return self._index[release.key]

    def next_slurp(self, release: Release) -> Release | None:
        for r in self.releases[self.position(release) + 1:]:
            if r.slurp:
                return r
        return None

    def successors(self, release: Release) -> list[Release]:
        """Releases reachable from ``release`` in one supported hop."""
        pos = self.position(release)
        out = []
        if pos + 1 < len(self.releases):
            out.append(self.releases[pos + 1])
        if release.slurp:
            nxt = self.next_slurp(release)
            if nxt is not None and nxt not in out:
                out.append(nxt)
        return out

    def is_supported_hop(self, src: Release, dst: Release) -> bool:
        return any(r.key == dst.key for r in self.successors(src))

    def hop(self, src: Release, dst: Release) -> Hop:
        return Hop(from_release=src, to_release=dst,
                   skip_level=self.position(dst) - self.position(src) > 1)

    def shortest_chain(self, src: Release, dst: Release) -> list[Release]:
        """Fewest hops from ``src`` to ``dst`` (breadth-first over supported hops)."""
        if self.position(dst) <= self.position(src):
            raise UpgradeError(f"{dst.key} is not newer than {src.key}: OpenStack does not support downgrades")
        prev: dict[str, Release | None] = {src.key: None}
        queue = deque([src])
        while queue:
            cur = queue.popleft()
            if cur.key == dst.key:
                break
            for nxt in self.successors(cur):
                if nxt.key not in prev and self.position(nxt) <= self.position(dst):
                    prev[nxt.key] = cur
                    queue.append(nxt)
        if dst.key not in prev:
            raise UpgradeError(f"no chain of supported hops from {src.key} to {dst.key}")
        chain = [dst]
        while prev[chain[-1].key] is not None:
            chain.append(prev[chain[-1].key])
        return list(reversed(chain))

    def hops(self, chain: list[Release]) -> list[Hop]:
        return [self.hop(a, b) for a, b in zip(chain, chain[1:])]


def load_catalog(path: str | Path | None = None, *, today: dt.date | None = None) -> Catalog:
    """The packaged catalog, or a copy of upstream's series_status.yaml at ``path``, with every
    status derived for ``today`` (the real date unless given)."""
    p = Path(path) if path is not None else PACKAGED_CATALOG
    releases = parse_catalog(read_yaml(p), path=str(p))
    log.debug("loaded %d releases from %s", len(releases), p)
    return Catalog(releases, source=str(p) if path is not None else "packaged", today=today)


def format_chain(chain: list[Release]) -> str:
    return " -> ".join(r.key for r in chain)
