"""Data types of the packing engine and the dense array form the algorithms use.

Callers speak in :class:`ItemType` / :class:`BinType`; the algorithms work on a
:class:`Problem` of numpy arrays indexed by item type and bin type, so their cost
grows with the number of distinct types, never with item counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cloudplan.errors import CloudplanError, Infeasible


@dataclass(frozen=True)
class ItemType:
    """A kind of item (e.g. a VM flavor): an integer size per dimension and how many there are."""

    name: str
    size: tuple[int, ...]
    count: int


@dataclass(frozen=True)
class BinType:
    """A kind of bin (e.g. a host configuration). ``max_count`` None means unlimited."""

    name: str
    capacity: tuple[int, ...]
    cost: float = 1.0
    max_count: int | None = None


@dataclass
class Pattern:
    """``multiplicity`` bins of type ``bin_type``, each holding ``items`` (name -> count per bin)."""

    bin_type: str
    items: dict[str, int]
    multiplicity: int


@dataclass
class PackingResult:
    """A packing (or the proof that none exists) with its quality certificate.

    ``lower_bound`` is a proven lower bound on the cost of any packing, so
    ``cost - lower_bound`` says how far from optimal the answer can be.
    ``status`` is "optimal", "feasible", "infeasible" or (``place`` only) "unknown".
    """

    patterns: list[Pattern]
    bins_by_type: dict[str, int]
    cost: float
    lower_bound: float
    optimal: bool
    seconds: float
    status: str
    message: str = ""
    stats: dict = field(default_factory=dict)

    @property
    def bins(self) -> int:
        """Total number of bins used, all types together."""
        return sum(self.bins_by_type.values())

    @property
    def gap(self) -> float:
        """Relative distance between the cost and the proven lower bound (0 when optimal)."""
        if self.lower_bound <= 0:
            return 0.0 if self.cost <= 0 else math.inf
        return (self.cost - self.lower_bound) / self.lower_bound

    def fill(self, items: list[ItemType], bins: list[BinType]) -> dict[str, list[tuple[int, int]]]:
        """Per bin type used, per dimension: (total used, total capacity) over its bins."""
        size = {it.name: it.size for it in items}
        cap = {b.name: b.capacity for b in bins}
        out: dict[str, list[list[int]]] = {}
        for p in self.patterns:
            c = cap[p.bin_type]
            acc = out.setdefault(p.bin_type, [[0, 0] for _ in c])
            for dim, cd in enumerate(c):
                acc[dim][0] += p.multiplicity * sum(n * size[name][dim] for name, n in p.items.items())
                acc[dim][1] += p.multiplicity * cd
        return {k: [tuple(x) for x in v] for k, v in out.items()}


@dataclass
class Problem:
    """Dense form: ``S[i, d]`` item sizes, ``b[i]`` counts, ``C[t, d]`` capacities,
    ``cost[t]``, ``maxc[t]`` (a large number when unlimited)."""

    S: np.ndarray
    b: np.ndarray
    C: np.ndarray
    cost: np.ndarray
    maxc: np.ndarray
    item_names: list[str]
    bin_names: list[str]

    @property
    def m(self) -> int:
        return len(self.b)

    @property
    def T(self) -> int:
        return len(self.cost)

    @property
    def limited(self) -> bool:
        return bool(np.any(self.maxc < UNLIMITED))

    def fits(self) -> np.ndarray:
        """``fits[i, t]``: one item of type i fits an empty bin of type t."""
        return np.all(self.S[:, None, :] <= self.C[None, :, :], axis=2)

    def integral_costs(self) -> float | None:
        """The common divisor of the bin costs when all are integers, else None:
        any packing costs a multiple of it, so bounds may be rounded up to it."""
        if not np.all(np.abs(self.cost - np.round(self.cost)) < 1e-9):
            return None
        g = 0
        for c in np.round(self.cost).astype(np.int64):
            g = math.gcd(g, int(c))
        return float(g) if g > 0 else None


UNLIMITED = np.iinfo(np.int64).max // 4


def round_up(value: float, step: float | None) -> float:
    """Round a proven lower bound up to the next achievable cost (multiple of ``step``)."""
    if step is None:
        return value
    return math.ceil(value / step - 1e-6) * step


def to_problem(items: list[ItemType], bins: list[BinType]) -> Problem:
    """Validate the inputs and build the dense arrays; raise on malformed input."""
    if not bins:
        raise Infeasible("no bin types given: nothing to place the items into", requirement="bins")
    dims = {len(b.capacity) for b in bins} | {len(it.size) for it in items}
    if len(dims) > 1:
        raise CloudplanError(f"items and bins disagree on the number of dimensions: {sorted(dims)}")
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise CloudplanError(f"duplicate item type names: {sorted({n for n in names if names.count(n) > 1})}")
    bnames = [b.name for b in bins]
    if len(set(bnames)) != len(bnames):
        raise CloudplanError(f"duplicate bin type names: {sorted({n for n in bnames if bnames.count(n) > 1})}")
    for it in items:
        if it.count < 0 or any(s < 0 for s in it.size):
            raise CloudplanError(f"item type {it.name}: negative size or count")
    for b in bins:
        if any(c < 0 for c in b.capacity) or b.cost < 0 or (b.max_count is not None and b.max_count < 0):
            raise CloudplanError(f"bin type {b.name}: negative capacity, cost or max_count")
    d = dims.pop() if dims else 0
    keep = [it for it in items if it.count > 0]
    S = np.array([it.size for it in keep], dtype=np.int64).reshape(len(keep), d)
    b = np.array([it.count for it in keep], dtype=np.int64)
    C = np.array([bt.capacity for bt in bins], dtype=np.int64).reshape(len(bins), d)
    cost = np.array([bt.cost for bt in bins], dtype=float)
    maxc = np.array([UNLIMITED if bt.max_count is None else bt.max_count for bt in bins], dtype=np.int64)
    return Problem(S, b, C, cost, maxc, [it.name for it in keep], bnames)


def explain_unfit(items: list[ItemType], bins: list[BinType], prob: Problem) -> None:
    """Raise :class:`Infeasible` naming the first item that fits no bin type (and the dimension)."""
    fits = prob.fits()
    usable = prob.maxc > 0
    for i in range(prob.m):
        if not np.any(fits[i] & usable):
            dims = [dd for dd in range(prob.S.shape[1]) if np.all(prob.S[i, dd] > prob.C[usable, dd])] \
                if usable.any() else []
            where = f" in dimension {dims[0]} (size {int(prob.S[i, dims[0]])}, largest capacity " \
                    f"{int(prob.C[usable, dims[0]].max())})" if dims else ""
            raise Infeasible(f"item {prob.item_names[i]} fits no available bin type{where}",
                             requirement=f"item {prob.item_names[i]}")
