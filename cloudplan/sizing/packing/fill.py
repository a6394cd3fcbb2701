"""Filling bins that exist with many small items: an LP split, even dealing, best fit.

A cloud's hosts take hundreds of VMs each. There the pattern model of
:mod:`.cg` is slow to price (a bin holds too many items for the branch and
bound) and the item-by-item greedies leave fragments in one dimension or the
other; yet the aggregate LP is nearly exact, because one item is small against
one bin. So:

1. an LP shares every item type among the bin types, within each type's total
   capacity (``maxc[t]`` bins), leaving over as little volume as it can;
2. the shares are rounded to whole copies, and each type's share is dealt out
   over its bins, largest items first, so as to keep the room left level (a bin
   that took one more large item takes fewer small ones);
3. the copies no bin took go by best fit into the room left anywhere.

What still does not fit is returned, never forced: the caller buys bins for it.
The cost is one LP of (item types x bin types) columns and numpy passes over the
bins; it never grows with the item counts.
"""

from __future__ import annotations

import highspy
import numpy as np

from cloudplan.sizing.packing.heur import Packing, group, max_copies, norm_ref
from cloudplan.sizing.packing.types import Problem


def fill(prob: Problem) -> tuple[Packing, np.ndarray]:
    """Place as many items as possible into the ``maxc[t]`` bins of each type.

    Returns the packing and the counts per item type left over (all zero when
    every item was placed). Bin types without a limit are not used.
    """
    limited = np.flatnonzero((prob.maxc > 0) & (prob.maxc < 2**40))
    if prob.m == 0 or len(limited) == 0:
        return [], prob.b.copy()
    # more bins of a type than items is never of use, and each bin is a row below
    prob = Problem(prob.S, prob.b, prob.C, prob.cost, np.minimum(prob.maxc, prob.b.sum()), prob.item_names,
                   prob.bin_names)
    ref = norm_ref(prob)
    X = whole(split(prob, limited), prob.b)
    left = prob.b - X.sum(axis=1)
    A_parts, types = [], []
    for col, t in enumerate(limited):
        A, undealt = deal(prob, int(t), X[:, col], ref)
        left += undealt
        A_parts.append(A)
        types.append(np.full(A.shape[0], t))
    A = np.vstack(A_parts)
    bt = np.concatenate(types)
    best_fit(prob, A, bt, left, ref)
    return group(bt, A), left


def split(prob: Problem, limited: np.ndarray) -> np.ndarray:
    """``x[i, k]``: copies of item type i for bin type ``limited[k]`` (fractional LP).

    Left-over volume is charged by normalized size, so the LP fills the bins
    before it gives up an item; an item type only goes where one copy fits.
    """
    S, m, K = prob.S, prob.m, len(limited)
    ref = norm_ref(prob)
    fits = np.all(S[:, None, :] <= prob.C[limited][None, :, :], axis=2)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    inf = highspy.kHighsInf
    n_x = m * K
    # columns: x[i, k] at i * K + k, then the left-over u[i]
    ub = np.where(fits.ravel(), inf, 0.0)
    cost = np.concatenate([np.zeros(n_x), (S / ref).sum(axis=1) + 1.0])
    h.addVars(n_x + m, np.zeros(n_x + m), np.concatenate([ub, np.full(m, inf)]))
    h.changeColsCost(n_x + m, np.arange(n_x + m, dtype=np.int32), cost)
    for i in range(m):
        idx = np.concatenate([i * K + np.arange(K), [n_x + i]]).astype(np.int32)
        h.addRow(float(prob.b[i]), float(prob.b[i]), len(idx), idx, np.ones(len(idx)))
    for k, t in enumerate(limited):
        for d in range(S.shape[1]):
            nz = np.flatnonzero(S[:, d])
            h.addRow(-inf, float(prob.maxc[t]) * float(prob.C[t, d]), len(nz), (nz * K + k).astype(np.int32),
                     S[nz, d].astype(float))
    h.run()
    x = np.array(h.getSolution().col_value)[:n_x].reshape(m, K)
    return np.maximum(x, 0.0)


def whole(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Round the LP's shares to whole copies that add up to what the LP placed (largest
    remainders first): a large item is dealt with its type's share, early, instead of
    waiting as a left-over fraction for room no bin has kept."""
    X = np.floor(x + 1e-6).astype(np.int64)
    frac = x - X
    short = np.minimum(b, np.round(x.sum(axis=1)).astype(np.int64)) - X.sum(axis=1)
    for i in np.flatnonzero(short > 0):
        X[i, np.argsort(-frac[i], kind="stable")[:short[i]]] += 1
    return X


def deal(prob: Problem, t: int, X: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deal ``X[i]`` copies of each item type over the ``maxc[t]`` bins of type ``t``.

    Largest items first, each type's copies level the bins' room (water filling):
    a bin that took one more large item takes fewer small ones, so the last,
    smallest items fill what is left evenly. Returns the bins' contents and the
    copies no bin could take.
    """
    n = int(prob.maxc[t])
    A = np.zeros((n, prob.m), dtype=np.int64)
    R = np.tile(prob.C[t], (n, 1))
    left = np.zeros(prob.m, dtype=np.int64)
    for i in np.argsort(-(prob.S / ref).sum(axis=1), kind="stable"):
        if X[i] == 0:
            continue
        c = level(R, prob.S[i], int(X[i]), ref)
        A[:, i] += c
        R -= c[:, None] * prob.S[i]
        left[i] += int(X[i] - c.sum())
    return A, left


def level(R: np.ndarray, s: np.ndarray, x: int, ref: np.ndarray) -> np.ndarray:
    """Copies per bin of ``x`` items of size ``s``: the most even rooms left, within what fits.

    Room is measured along the item (the normalized room dotted with the
    normalized size); a bin gets copies down to a common level, found by bisection.
    """
    cap = max_copies(R, s)
    w = s / ref
    step = float(w @ w)
    if step <= 0:
        return np.minimum(cap, x) * (np.arange(len(cap)) == 0)
    rho = (R / ref) @ w
    def copies(lv: float) -> np.ndarray:
        return np.clip(np.floor((rho - lv) / step), 0, cap).astype(np.int64)
    lo, hi = float(rho.min() - step * (x + 1)), float(rho.max())
    if copies(lo).sum() <= x:
        return copies(lo)
    for _ in range(60):
        mid = (lo + hi) / 2
        if copies(mid).sum() >= x:
            lo = mid
        else:
            hi = mid
    c = copies(lo)
    # the level is reached by several bins at once: take the surplus off the lowest rooms
    extra = int(c.sum() - x)
    if extra > 0:
        after = np.where(c > 0, rho - c * step, np.inf)
        for j in np.argsort(after, kind="stable")[:extra]:
            c[j] -= 1
    return c


def best_fit(prob: Problem, A: np.ndarray, bt: np.ndarray, left: np.ndarray, ref: np.ndarray) -> None:
    """Place ``left`` into the room of the bins ``A`` (largest items first, tightest bin first);
    ``A`` and ``left`` are updated in place.

    Copies of one type go to the tightest bin until it is full: that bin stays the
    tightest as it fills, so this is item-by-item best fit in one step per bin.
    """
    R = prob.C[bt] - A @ prob.S
    for i in np.argsort(-(prob.S / ref).sum(axis=1), kind="stable"):
        s = prob.S[i]
        while left[i] > 0:
            ok = np.all(R >= s, axis=1)
            if not ok.any():
                break
            j = int(np.argmin(np.where(ok, ((R - s) / ref).sum(axis=1), np.inf)))
            k = int(min(left[i], max_copies(R[j:j + 1], s)[0]))
            A[j, i] += k
            R[j] -= k * s
            left[i] -= k
