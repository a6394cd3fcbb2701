"""Bin elimination by a consistent neighbourhood search: one bin fewer while time lasts.

One bin type, items expanded to copies (the published benchmarks have one copy
per type and three to five items per bin). To turn a packing of ``k`` bins into
one of ``k - 1``, the ``POOL_BINS + 1`` lightest bins are emptied into a pool;
the search then rearranges the remaining bins and the pool until the pool fits
into ``POOL_BINS`` bins, which makes ``k - 1`` in all. Every bin stays within
capacity throughout (a *consistent* search, after Buljubašić and Vasquez,
"Consistent neighborhood search for one-dimensional bin packing and
two-dimensional vector packing", 2016; the moves and weights here are our own
choice).

A step swaps items between one bin and the pool: up to two pool items go in and
up to two of the bin's items come out, the swap that lowers the pool's weight
most (or raises it least: a tabu search, in which an item just put into a bin
may not leave it for a few steps, so the search does not undo itself).

An item's weight is its size over the capacity summed over the dimensions, each
dimension weighted by how full the bins are in it on average, plus what the
search learned: every step an item spends in the pool raises its weight a
little, so the items that are hard to place end up placed and the easy ones in
the pool.

The steps run compiled (:mod:`.moves`); a :class:`Reducer` keeps the search's
state between calls, so the engine can stop it for the column generation and
let it go on afterwards where it stood, with what it learned.
"""

from __future__ import annotations

import time

import numpy as np

from cloudplan.sizing.packing.heur import Packing, packing_cost
from cloudplan.sizing.packing.types import Problem

#: most item copies the search expands to (its arrays are per copy, not per type)
MAX_COPIES = 5000
#: bins the pool must fit into for the partial packing to make a whole one (the
#: compiled split in :mod:`.moves` makes two: not a free parameter)
POOL_BINS = 2
#: largest pool whose split into POOL_BINS bins is decided by trying every split
EXACT_POOL = 14
#: pool size above which only single pool items are swapped in (pairs grow quadratically)
PAIR_POOL = 24
#: steps an item just put into a bin is protected from leaving it: a base plus a random part
TABU_BASE, TABU_SPREAD = 3, 10
#: weight an item gains per step spent in the pool, relative to its size weight
LEARN_RATE = 0.005
#: steps run between checks of the deadline (a few milliseconds)
CHUNK_STEPS = 64


def applicable(prob: Problem) -> bool:
    """One bin type with room for every item, not too many copies to expand."""
    return (prob.T == 1 and prob.cost[0] > 0 and int(prob.b.sum()) <= MAX_COPIES
            and bool(np.all(prob.S <= prob.C[0])))


def _max_per_bin(S: np.ndarray, C: np.ndarray) -> int:
    """Most copies any bin within capacity can hold: per dimension the smallest sizes
    that fit, the tightest dimension decides."""
    most = len(S)
    for k in range(len(C)):
        sizes = np.sort(S[:, k])
        most = min(most, int(np.searchsorted(np.cumsum(sizes), C[k], side="right")))
    return max(most, 1)


def _as_bins(pool: np.ndarray, side: np.ndarray) -> list[list[int]]:
    """A split of the pool (``side[j]`` the bin of ``pool[j]``) as lists of copies."""
    return [[int(c) for c in pool[side == b]] for b in range(POOL_BINS)]


class _Search:
    """The state: per copy its size, weight and bin (-1 in the pool); per bin its
    copies and room (the arrays :mod:`.moves` works on)."""

    def __init__(self, prob: Problem, packing: Packing, rng: np.random.Generator):
        from cloudplan.sizing.packing import moves  # numba: only when a search runs

        self.moves = moves
        self.prob, self.rng = prob, rng
        moves.seed(int(rng.integers(2**31)))
        self.typ = np.repeat(np.arange(prob.m), prob.b)
        self.S = np.ascontiguousarray(prob.S[self.typ], dtype=np.int64)
        self.C = np.ascontiguousarray(prob.C[0], dtype=np.int64)
        cap = np.where(self.C > 0, self.C, 1).astype(float)
        fullness = (prob.b @ prob.S) / cap
        lam = fullness / fullness.mean() if fullness.sum() > 0 else np.ones(len(cap))
        self.base_w = np.ascontiguousarray((self.S / cap) @ lam / len(cap) + 1e-6)
        self.w = self.base_w.copy()
        n = len(self.typ)
        self.bin_of = np.full(n, -1, dtype=np.int64)
        self.tabu = np.zeros(n, dtype=np.int64)
        self.side = np.zeros(n, dtype=np.int64)
        self.width = _max_per_bin(self.S, self.C)
        self.step = 0
        self.load(packing)

    def load(self, packing: Packing) -> None:
        """Make ``packing`` the state (pool empty); the learned weights stay."""
        free = {i: list(np.flatnonzero(self.typ == i)) for i in range(self.prob.m)}
        bins = [[int(free[int(i)].pop()) for i in np.flatnonzero(a) for _ in range(int(a[i]))]
                for _, a, k in packing for _ in range(int(k))]
        self._set_bins(bins)

    def _set_bins(self, bins: list[list[int]]) -> None:
        self.bin_of[:] = -1
        self.mem = np.full((len(bins), self.width), -1, dtype=np.int64)
        self.cnt = np.array([len(m) for m in bins], dtype=np.int64)
        self.R = np.repeat(self.C[None, :], len(bins), axis=0)
        for b, m in enumerate(bins):
            self.mem[b, :len(m)] = m
            self.bin_of[m] = b
            self.R[b] -= self.S[m].sum(axis=0)

    @property
    def k(self) -> int:
        return len(self.cnt)

    def bins(self) -> list[list[int]]:
        return [[int(c) for c in self.mem[b, :self.cnt[b]]] for b in range(self.k)]

    def take(self, split: list[list[int]]) -> None:
        """The pool's split becomes bins (the copies keep what they learned)."""
        self._set_bins(self.bins() + [m for m in split if m])

    def pool(self) -> np.ndarray:
        return np.flatnonzero(self.bin_of < 0)

    def drop_bins(self, bins: list[int]) -> None:
        """Move the items of ``bins`` to the pool and remove those bins."""
        gone = set(bins)
        self._set_bins([m for b, m in enumerate(self.bins()) if b not in gone])

    def lightest(self, count: int) -> list[int]:
        loads = np.array([self.base_w[m].sum() for m in self.bins()])
        return [int(b) for b in np.argsort(loads + 1e-9 * self.rng.random(len(loads)))[:count]]

    def split_pool(self, pool: np.ndarray) -> list[list[int]] | None:
        """The pool as POOL_BINS bins within capacity, or None if this cannot tell one."""
        pool = np.ascontiguousarray(pool, dtype=np.int64)
        side = np.zeros(len(pool), dtype=np.int64)
        if not self.moves.split_pool(self.S, self.C, pool, self.base_w, side, EXACT_POOL):
            return None
        return _as_bins(pool, side)

    def search(self, deadline: float) -> list[list[int]] | None:
        """Swaps until the pool fits into POOL_BINS bins (returned) or the deadline
        passes or no swap fits (None); the state stays where it stopped."""
        while time.monotonic() < deadline:
            status, self.step, pool = self.moves.run(
                self.S, self.C, self.w, self.base_w, self.tabu, self.bin_of, self.mem, self.cnt, self.R,
                self.side, self.step, CHUNK_STEPS, LEARN_RATE, PAIR_POOL, EXACT_POOL, TABU_BASE, TABU_SPREAD)
            if status == 1:
                return _as_bins(pool, self.side[:len(pool)])
            if status < 0:
                return None
        return None

    def packing(self, extra: list[list[int]] = ()) -> Packing:
        out: Packing = []
        for mem in self.bins() + list(extra):
            if mem:
                out.append((0, np.bincount(self.typ[mem], minlength=self.prob.m).astype(np.int64), 1))
        return out


class Reducer:
    """The search, resumable: ``run`` takes bins out until its deadline and returns
    the fewest reached; a later ``run`` goes on from where the last one stopped
    (the same pool, the learned weights). ``offer`` hands it a packing found by
    other means, which it takes when it has fewer bins."""

    def __init__(self, prob: Problem, packing: Packing, seed: int = 0):
        self.prob = prob
        self.best = packing
        self.stuck = False
        self._st = _Search(prob, packing, np.random.default_rng(seed))
        self._searching = False

    @property
    def bins(self) -> int:
        return int(sum(k for _, _, k in self.best))

    @property
    def steps(self) -> int:
        """Swap steps made so far, over all calls."""
        return self._st.step

    def offer(self, packing: Packing) -> None:
        if packing_cost(self.prob, packing) < packing_cost(self.prob, self.best) - 1e-9:
            self.best = packing
            self._st.load(packing)
            self._searching, self.stuck = False, False

    def run(self, floor_bins: int, deadline: float) -> Packing | None:
        """The packing with the fewest bins reached, never below ``floor_bins``, when
        this call took a bin out before ``deadline``; None when it took none out."""
        start = self.bins
        st = self._st
        if self.stuck:
            # no swap fitted when the last call ended: start again from the best packing
            st.load(self.best)
            self._searching = self.stuck = False
        while not self.stuck and self.bins - 1 >= max(floor_bins, POOL_BINS) and time.monotonic() < deadline:
            if not self._searching:
                st.drop_bins(st.lightest(POOL_BINS + 1))
                self._searching = True
            found = st.search(deadline)
            if found is None:
                # out of time (the state stays for the next call) or out of moves
                self.stuck = time.monotonic() < deadline
                break
            self.best = st.packing(found)
            st.take(found)
            self._searching = False
        return self.best if self.bins < start else None


def reduce_bins(prob: Problem, packing: Packing, floor_bins: int, deadline: float,
                seed: int = 0) -> Packing | None:
    """A packing with fewer bins than ``packing`` found before ``deadline``: the
    fewest reached, never below ``floor_bins``; None if none."""
    return Reducer(prob, packing, seed).run(floor_bins, deadline)
