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
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from cloudplan.sizing.packing.heur import Packing
from cloudplan.sizing.packing.types import Problem

#: most item copies the search expands to (its arrays are per copy, not per type)
MAX_COPIES = 5000
#: bins the pool must fit into for the partial packing to make a whole one
POOL_BINS = 2
#: largest pool whose split into POOL_BINS bins is decided by trying every split
EXACT_POOL = 14
#: pool size above which only single pool items are swapped in (pairs grow quadratically)
PAIR_POOL = 24
#: steps an item just put into a bin is protected from leaving it: a base plus a random part
TABU_BASE, TABU_SPREAD = 3, 10
#: weight an item gains per step spent in the pool, relative to its size weight
LEARN_RATE = 0.005
#: steps between checks of the deadline
CHECK_EVERY = 16


def applicable(prob: Problem) -> bool:
    """One bin type with room for every item, not too many copies to expand."""
    return (prob.T == 1 and prob.cost[0] > 0 and int(prob.b.sum()) <= MAX_COPIES
            and bool(np.all(prob.S <= prob.C[0])))


class _Search:
    """The state: per copy its size, weight and bin (-1 in the pool); per bin its room."""

    def __init__(self, prob: Problem, packing: Packing, rng: np.random.Generator):
        self.prob, self.rng = prob, rng
        self.typ = np.repeat(np.arange(prob.m), prob.b)
        self.S = prob.S[self.typ].astype(np.int64)
        self.C = prob.C[0].astype(np.int64)
        cap = np.where(self.C > 0, self.C, 1).astype(float)
        fullness = (prob.b @ prob.S) / cap
        lam = fullness / fullness.mean() if fullness.sum() > 0 else np.ones(len(cap))
        self.base_w = (self.S / cap) @ lam / len(cap) + 1e-6
        self.w = self.base_w.copy()
        n = len(self.typ)
        self.bin_of = np.full(n, -1, dtype=np.int64)
        self.tabu = np.zeros(n, dtype=np.int64)
        self.step = 0
        self.members: list[list[int]] = []
        self._pairs: list[np.ndarray | None] = []
        self.R = np.zeros((0, len(self.C)), dtype=np.int64)
        self.load(packing)

    def load(self, packing: Packing) -> None:
        """Make ``packing`` the state (pool empty)."""
        free = {i: list(np.flatnonzero(self.typ == i)) for i in range(self.prob.m)}
        self.bin_of[:] = -1
        self.members, self._pairs = [], []
        for _, a, k in packing:
            for _ in range(int(k)):
                mem = [int(free[int(i)].pop()) for i in np.flatnonzero(a) for _ in range(int(a[i]))]
                self.bin_of[mem] = len(self.members)
                self.members.append(mem)
                self._pairs.append(None)
        self.R = self.C[None, :] - np.array([self.S[m].sum(axis=0) for m in self.members],
                                            dtype=np.int64).reshape(len(self.members), len(self.C))

    @property
    def k(self) -> int:
        return len(self.members)

    def pool(self) -> np.ndarray:
        return np.flatnonzero(self.bin_of < 0)

    def drop_bins(self, bins: list[int]) -> None:
        """Move the items of ``bins`` to the pool and remove those bins."""
        keep = [b for b in range(self.k) if b not in set(bins)]
        for b in bins:
            self.bin_of[self.members[b]] = -1
        self.members = [self.members[b] for b in keep]
        self._pairs = [self._pairs[b] for b in keep]
        self.R = self.R[keep].copy()
        for nb, mem in enumerate(self.members):
            self.bin_of[mem] = nb

    def lightest(self, count: int) -> list[int]:
        loads = np.array([self.base_w[m].sum() if m else 0.0 for m in self.members])
        return [int(b) for b in np.argsort(loads + 1e-9 * self.rng.random(len(loads)))[:count]]

    def _options(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What may leave each bin: nothing, one or two of its items that are not
        protected. Returns (bin, room after removal, removed weight, removed ids [2, n])."""
        step = self.step
        free = (self.bin_of >= 0) & (self.tabu <= step)
        one = np.flatnonzero(free)
        p1, p2 = self._all_pairs()
        ok = free[p1] & free[p2]
        p1, p2 = p1[ok], p2[ok]
        k = self.k
        bins = np.concatenate([np.arange(k), self.bin_of[one], self.bin_of[p1]])
        room = np.concatenate([self.R, self.R[self.bin_of[one]] + self.S[one],
                               self.R[self.bin_of[p1]] + self.S[p1] + self.S[p2]])
        weight = np.concatenate([np.zeros(k), self.w[one], self.w[p1] + self.w[p2]])
        ids = np.concatenate([np.full((2, k), -1), np.stack([one, np.full(len(one), -1)]),
                              np.stack([p1, p2])], axis=1)
        return bins, room, weight, ids

    def _all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for b, mem in enumerate(self.members):
            p = self._pairs[b]
            if p is None:
                m = np.array(mem, dtype=np.int64)
                i, j = np.triu_indices(len(m), 1)
                p = self._pairs[b] = np.stack([m[i], m[j]])
            out.append(p)
        allp = np.concatenate(out, axis=1) if out else np.zeros((2, 0), np.int64)
        return allp[0], allp[1]

    def _arrivals(self, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What may enter a bin from the pool: one or two items. (sizes, weights, ids [2, n])."""
        if len(pool) <= PAIR_POOL:
            i, j = np.triu_indices(len(pool), 1)
            a1 = np.concatenate([pool, pool[i]])
            a2 = np.concatenate([np.full(len(pool), -1), pool[j]])
        else:
            a1, a2 = pool, np.full(len(pool), -1)
        two = a2 >= 0
        size = self.S[a1] + np.where(two[:, None], self.S[np.maximum(a2, 0)], 0)
        weight = self.w[a1] + np.where(two, self.w[np.maximum(a2, 0)], 0.0)
        return size, weight, np.stack([a1, a2])

    def swap(self, pool: np.ndarray) -> bool:
        """The best swap between one bin and the pool; False when no swap is possible."""
        bins, room, w_out, out_ids = self._options()
        size, w_in, in_ids = self._arrivals(pool)
        fits = np.all(room[:, None, :] >= size[None, :, :], axis=2)
        if not fits.any():
            return False
        score = np.where(fits, w_out[:, None] - w_in[None, :], np.inf)
        score += 1e-9 * self.rng.random(score.shape)
        o, a = np.unravel_index(int(np.argmin(score)), score.shape)
        b = int(bins[o])
        for c in out_ids[:, o]:
            if c >= 0:
                self._move(int(c), -1)
        for c in in_ids[:, a]:
            if c >= 0:
                self._move(int(c), b)
                self.tabu[c] = self.step + TABU_BASE + int(self.rng.integers(TABU_SPREAD))
        return True

    def _move(self, c: int, b: int) -> None:
        old = int(self.bin_of[c])
        if old >= 0:
            self.members[old].remove(c)
            self._pairs[old] = None
            self.R[old] += self.S[c]
        if b >= 0:
            self.members[b].append(c)
            self._pairs[b] = None
            self.R[b] -= self.S[c]
        self.bin_of[c] = b

    def split_pool(self, pool: np.ndarray) -> list[list[int]] | None:
        """The pool as POOL_BINS bins within capacity, or None if this cannot tell one."""
        S = self.S[pool]
        if np.any(S.sum(axis=0) > POOL_BINS * self.C):
            return None
        if len(pool) <= EXACT_POOL and POOL_BINS == 2:
            # every split with the first item in the first bin
            masks = np.array(list(itertools.product((0, 1), repeat=len(pool) - 1)), dtype=np.int64)
            masks = np.concatenate([np.ones((len(masks), 1), dtype=np.int64), masks.reshape(len(masks), -1)], axis=1)
            first = masks @ S
            ok = np.all(first <= self.C, axis=1) & np.all(S.sum(axis=0) - first <= self.C, axis=1)
            if not ok.any():
                return None
            mk = masks[int(np.argmax(ok))].astype(bool)
            return [list(pool[mk]), list(pool[~mk])]
        return self._first_fit_pool(pool)

    def _first_fit_pool(self, pool: np.ndarray) -> list[list[int]] | None:
        bins: list[list[int]] = [[] for _ in range(POOL_BINS)]
        room = np.repeat(self.C[None, :], POOL_BINS, axis=0)
        for c in pool[np.argsort(-self.base_w[pool], kind="stable")]:
            ok = np.flatnonzero(np.all(room >= self.S[c], axis=1))
            if not len(ok):
                return None
            bins[int(ok[0])].append(int(c))
            room[ok[0]] -= self.S[c]
        return bins

    def packing(self, extra: list[list[int]] = ()) -> Packing:
        out: Packing = []
        for mem in list(self.members) + list(extra):
            if mem:
                out.append((0, np.bincount(self.typ[mem], minlength=self.prob.m).astype(np.int64), 1))
        return out


def reduce_bins(prob: Problem, packing: Packing, floor_bins: int, deadline: float,
                seed: int = 0) -> Packing | None:
    """A packing with fewer bins than ``packing`` found before ``deadline``: the
    fewest reached, never below ``floor_bins``; None if none."""
    rng = np.random.default_rng(seed)
    st = _Search(prob, packing, rng)
    best: Packing | None = None
    while st.k - 1 >= max(floor_bins, POOL_BINS) and time.monotonic() < deadline:
        st.drop_bins(st.lightest(POOL_BINS + 1))
        found = _search(st, deadline)
        if found is None:
            break
        best = st.packing(found)
        st.load(best)
    return best


def _search(st: _Search, deadline: float) -> list[list[int]] | None:
    """Swaps until the pool fits into POOL_BINS bins (returned) or the deadline passes."""
    while True:
        pool = st.pool()
        split = st.split_pool(pool)
        if split is not None:
            return split
        st.step += 1
        if st.step % CHECK_EVERY == 0 and time.monotonic() >= deadline:
            return None
        st.w[pool] += LEARN_RATE * st.base_w[pool]
        if not st.swap(pool):
            return None
