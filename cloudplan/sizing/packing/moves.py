"""The local search's inner loop, compiled: swap steps and the exact split of the pool.

:mod:`.local` holds the search's state and its outer loop; this module runs its
steps, thousands per second, in numba-compiled code (the same steps written with
numpy array operations ran about 950 a second on a 250-item instance: each step
is a few hundred small array operations, and their overhead, not the arithmetic,
decided the speed). The search is only as good as the steps it gets in its time.

It is a module of its own so that importing the packing engine does not import
numba (half a second): :mod:`.local` imports it when a search starts. The
functions are compiled when this module is first imported after an install and
cached next to it (``cache=True``); later processes load the cache.

State arrays (per item copy ``c``; per bin ``b``):

- ``S[c]`` size, ``w[c]`` weight, ``base_w[c]`` weight from size alone,
  ``tabu[c]`` step until which ``c`` may not leave its bin, ``bin_of[c]`` its bin
  (-1: in the pool);
- ``mem[b, :cnt[b]]`` the bin's copies, ``R[b]`` its room per dimension.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: scores closer than this are ties (the weights are sums of a few floats)
_EPS = 1e-12

_I1 = nb.int64[::1]
_I2 = nb.int64[:, ::1]
_F1 = nb.float64[::1]


@nb.njit(nb.void(nb.int64), cache=True)
def seed(value):
    """Seed the compiled code's random generator (ties between equal swaps)."""
    np.random.seed(value)


@nb.njit(cache=True)
def _room(load, b, S, c, C):
    """Does copy ``c`` fit into pool bin ``b`` as loaded?"""
    for k in range(len(C)):
        if load[b, k] + S[c, k] > C[k]:
            return False
    return True


@nb.njit(nb.boolean(_I2, _I1, _I1, _F1, _I1), cache=True)
def split_exact(S, C, pool, base_w, side):
    """Can the pool be split into two bins within capacity? If so ``side[j]`` is the
    bin (0 or 1) of ``pool[j]``. Depth-first over the items, heaviest first, the
    first item in bin 0 (the two bins are interchangeable)."""
    n, d = len(pool), len(C)
    order = np.argsort(-base_w[pool])
    load = np.zeros((2, d), dtype=np.int64)
    choice = np.full(n, -1, dtype=np.int64)
    j = 0
    while 0 <= j < n:
        c = pool[order[j]]
        if choice[j] >= 0:
            load[choice[j]] -= S[c]
        nxt = choice[j] + 1
        choice[j] = -1
        last = 0 if j == 0 else 1
        while nxt <= last and not _room(load, nxt, S, c, C):
            nxt += 1
        if nxt <= last:
            load[nxt] += S[c]
            choice[j] = nxt
            j += 1
        else:
            j -= 1
    if j < 0:
        return False
    for i in range(n):
        side[order[i]] = choice[i]
    return True


@nb.njit(nb.boolean(_I2, _I1, _I1, _F1, _I1), cache=True)
def split_first_fit(S, C, pool, base_w, side):
    """The pool into two bins by first fit, heaviest first (for pools too large to
    try every split); False when first fit does not manage it."""
    load = np.zeros((2, len(C)), dtype=np.int64)
    for j in np.argsort(-base_w[pool]):
        c = pool[j]
        b = 0
        while b < 2 and not _room(load, b, S, c, C):
            b += 1
        if b == 2:
            return False
        load[b] += S[c]
        side[j] = b
    return True


@nb.njit(nb.boolean(_I2, _I1, _I1, _F1, _I1, nb.int64), cache=True)
def split_pool(S, C, pool, base_w, side, exact_pool):
    """The pool into two bins within capacity (``side[j]`` for ``pool[j]``): every
    split tried up to ``exact_pool`` items, first fit above; False when not found."""
    for k in range(len(C)):
        if S[pool, k].sum() > 2 * C[k]:
            return False
    if len(pool) <= exact_pool:
        return split_exact(S, C, pool, base_w, side)
    return split_first_fit(S, C, pool, base_w, side)


@nb.njit(cache=True)
def _fits(R, b, S, o1, o2, size, a):
    """Does bin ``b``, after ``o1``/``o2`` (-1: none) leave, have room for arrival ``a``?"""
    for k in range(R.shape[1]):
        room = R[b, k]
        if o1 >= 0:
            room += S[o1, k]
        if o2 >= 0:
            room += S[o2, k]
        if size[a, k] > room:
            return False
    return True


@nb.njit(cache=True)
def _move_out(c, b, bin_of, mem, cnt, R, S):
    for j in range(cnt[b]):
        if mem[b, j] == c:
            mem[b, j] = mem[b, cnt[b] - 1]
            break
    cnt[b] -= 1
    R[b] += S[c]
    bin_of[c] = -1


@nb.njit(cache=True)
def _move_in(c, b, bin_of, mem, cnt, R, S):
    mem[b, cnt[b]] = c
    cnt[b] += 1
    R[b] -= S[c]
    bin_of[c] = b


@nb.njit(cache=True)
def _swap(S, w, tabu, bin_of, mem, cnt, R, pool, step, pair_pool, tabu_base, tabu_spread):
    """The best swap between one bin and the pool: up to two pool items in (at least
    one), up to two of the bin's unprotected items out, the one that lowers the
    pool's weight most; ties broken at random. False when no swap fits."""
    p, d = len(pool), S.shape[1]
    pairs = p * (p - 1) // 2 if p <= pair_pool else 0
    A = p + pairs
    a1 = np.empty(A, dtype=np.int64)
    a2 = np.full(A, -1, dtype=np.int64)
    a1[:p] = pool
    n = p
    if pairs:
        for i in range(p):
            for j in range(i + 1, p):
                a1[n], a2[n] = pool[i], pool[j]
                n += 1
    w_in = np.empty(A)
    size = np.empty((A, d), dtype=np.int64)
    for a in range(A):
        w_in[a] = w[a1[a]]
        size[a] = S[a1[a]]
        if a2[a] >= 0:
            w_in[a] += w[a2[a]]
            size[a] += S[a2[a]]
    # heaviest arrivals first: for each way out, the first arrival that fits is its best
    order = np.argsort(-w_in)
    a1, a2, w_in, size = a1[order], a2[order], w_in[order], size[order]

    best, ties = np.inf, 0
    bb, bo1, bo2, ba = -1, -1, -1, -1
    for b in range(len(cnt)):
        m = cnt[b]
        for x in range(-1, m):
            o1 = -1 if x < 0 else mem[b, x]
            if o1 >= 0 and tabu[o1] > step:
                continue
            for y in range(x, m):
                if y == x:
                    o2 = -1  # o1 alone (or nothing when x = -1)
                else:
                    if x < 0:
                        continue  # a single leaver is the (x, -1) case
                    o2 = mem[b, y]
                    if tabu[o2] > step:
                        continue
                w_out = (w[o1] if o1 >= 0 else 0.0) + (w[o2] if o2 >= 0 else 0.0)
                for a in range(A):
                    score = w_out - w_in[a]
                    if score > best + _EPS:
                        break
                    if not _fits(R, b, S, o1, o2, size, a):
                        continue
                    if score < best - _EPS:
                        best, ties = score, 1
                        bb, bo1, bo2, ba = b, o1, o2, a
                    else:
                        ties += 1
                        if np.random.random() * ties < 1.0:
                            bb, bo1, bo2, ba = b, o1, o2, a
    if bb < 0:
        return False
    for c in (bo1, bo2):
        if c >= 0:
            _move_out(c, bb, bin_of, mem, cnt, R, S)
    for c in (a1[ba], a2[ba]):
        if c >= 0:
            _move_in(c, bb, bin_of, mem, cnt, R, S)
            tabu[c] = step + tabu_base + np.random.randint(0, tabu_spread)
    return True


@nb.njit(nb.types.Tuple((nb.int64, nb.int64, _I1))(_I2, _I1, _F1, _F1, _I1, _I1, _I2, _I1, _I2, _I1, nb.int64,
                                                   nb.int64, nb.float64, nb.int64, nb.int64, nb.int64, nb.int64),
         cache=True)
def run(S, C, w, base_w, tabu, bin_of, mem, cnt, R, side, step, max_steps,
        learn_rate, pair_pool, exact_pool, tabu_base, tabu_spread):
    """Up to ``max_steps`` swap steps until the pool fits into two bins.

    Returns (status, step, pool): status 1 when the pool splits (``side[j]`` is the
    new bin of ``pool[j]``), -1 when no swap fits, 0 when the steps ran out."""
    n = len(bin_of)
    pool = np.empty(0, dtype=np.int64)
    for _ in range(max_steps + 1):
        count = 0
        for c in range(n):
            if bin_of[c] < 0:
                count += 1
        pool = np.empty(count, dtype=np.int64)
        count = 0
        for c in range(n):
            if bin_of[c] < 0:
                pool[count] = c
                count += 1
        if split_pool(S, C, pool, base_w, side[:len(pool)], exact_pool):
            return 1, step, pool
        if _ == max_steps:
            break
        step += 1
        for c in pool:
            w[c] += learn_rate * base_w[c]
        if not _swap(S, w, tabu, bin_of, mem, cnt, R, pool, step, pair_pool, tabu_base, tabu_spread):
            return -1, step, pool
    return 0, step, pool
