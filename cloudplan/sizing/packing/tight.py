"""Packings that meet the volume bound: enumerate the low-waste bins, solve an exact cover.

With one bin type and a lower bound of ``L`` bins, a packing into ``L`` bins
wastes in dimension ``d`` exactly ``W_d = L * C_d - volume_d`` in total, so each
of its bins wastes at most ``W_d`` there. When ``W`` is small (the tight
instances, where every bin of the optimum is full), few bin contents qualify,
and they are found directly instead of waiting for column generation to price
them: every bin of one, two or three items whose waste is within ``W`` in every
dimension, by sorting the items along the tightest dimension and looking up,
for every pair, the third items whose size lies in the window that fills it.

An exact-cover MIP over those contents then finds a packing of ``L`` bins. When
no bin can hold four items the enumeration is complete, so a cover of more than
``L`` bins (or none) proves that ``L`` bins are not enough.
"""

from __future__ import annotations

import logging
import time

import highspy
import numpy as np

from cloudplan.sizing.packing.heur import Packing
from cloudplan.sizing.packing.types import Problem

log = logging.getLogger(__name__)

#: most (pair, third item) candidates looked at before the enumeration gives up
MAX_CANDIDATES = 300_000
#: most room, in bins, the tightest dimension may leave: beyond it the low-waste
#: contents are too many for the exact cover to settle anything in time
MAX_WASTE_BINS = 0.5
#: most bin contents handed to the exact-cover MIP
MAX_PATTERNS = 20_000


def waste_allowance(prob: Problem, bins: int) -> np.ndarray:
    """``W_d``: the total room ``bins`` bins of the only type leave in each dimension."""
    return bins * prob.C[0] - prob.b @ prob.S


def at_most_three(prob: Problem) -> bool:
    """No bin holds four items: the four smallest (with their counts) overflow some dimension."""
    for d in range(prob.S.shape[1]):
        order = np.argsort(prob.S[:, d], kind="stable")
        smallest = np.repeat(prob.S[order, d], np.minimum(prob.b[order], 4))[:4]
        if len(smallest) == 4 and int(smallest.sum()) > int(prob.C[0, d]):
            return True
    return False


def low_waste_patterns(prob: Problem, W: np.ndarray, deadline: float) -> np.ndarray | None:
    """Every bin content of one to three items with waste at most ``W``, as rows
    ``(i, j, k)`` of item types (-1 for none; i <= j <= k).

    None when the candidates would exceed :data:`MAX_CANDIDATES`, the contents
    :data:`MAX_PATTERNS`, or the deadline passes: the allowance is then too loose
    for this to be the way."""
    S, b, C, m = prob.S, prob.b, prob.C[0], prob.m
    d0 = int(np.argmin(W / np.maximum(C, 1)))
    order = np.argsort(S[:, d0], kind="stable")
    key = S[order, d0]
    # expected third items per pair: the share of sizes a window of W falls on
    spread = max(1, int(key[-1] - key[0]) + 1) if m else 1
    if m * m / 2 * m * min(1.0, (int(W[d0]) + 1) / spread) > MAX_CANDIDATES:
        return None
    single = np.flatnonzero(np.all(C - S <= W, axis=1))
    parts = [np.stack([single, np.full(len(single), -1), np.full(len(single), -1)], axis=1)]
    seen = found = len(single)
    for i in range(m):
        if time.monotonic() > deadline:
            return None
        J = np.arange(i if b[i] >= 2 else i + 1, m)
        R = C - S[i] - S[J]
        ok = np.all(R >= 0, axis=1)
        J, R = J[ok], R[ok]
        pairs = J[np.all(R <= W, axis=1)]
        parts.append(np.stack([np.full(len(pairs), i), pairs, np.full(len(pairs), -1)], axis=1))
        lo = np.searchsorted(key, R[:, d0] - W[d0], side="left")
        hi = np.searchsorted(key, R[:, d0], side="right")
        cnt = np.maximum(hi - lo, 0)
        seen += int(cnt.sum())
        if seen > MAX_CANDIDATES:
            return None
        if not cnt.any():
            found += len(pairs)
            continue
        jj = np.repeat(J, cnt)
        rr = np.repeat(R, cnt, axis=0)
        kk = order[np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)]
        room = rr - S[kk]
        keep = (kk >= jj) & np.all(room >= 0, axis=1) & np.all(room <= W, axis=1)
        # a type used twice or three times must have that many copies
        same_ij, same_jk = jj == i, kk == jj
        need = 1 + same_ij.astype(int) + (same_jk & same_ij).astype(int)
        keep &= (b[i] >= need) & ~(same_jk & ~same_ij & (b[jj] < 2))
        parts.append(np.stack([np.full(int(keep.sum()), i), jj[keep], kk[keep]], axis=1))
        found += len(pairs) + int(keep.sum())
        if found > MAX_PATTERNS:
            return None
    return np.concatenate(parts).astype(np.int64)


def exact_cover(prob: Problem, trip: np.ndarray, deadline: float) -> tuple[Packing | None, float | None]:
    """Fewest bins of the contents ``trip`` placing every item exactly: (packing, proven minimum).

    The minimum is inf when no cover exists, None when HiGHS did not finish; the
    packing None when it found none."""
    n, m = len(trip), prob.m
    A = np.zeros((n, m), dtype=np.int64)
    for col in range(3):
        sel = trip[:, col] >= 0
        np.add.at(A, (np.flatnonzero(sel), trip[sel, col]), 1)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", max(0.01, deadline - time.monotonic()))
    b = prob.b.astype(float)
    h.addRows(m, b, b, 0, np.array([], dtype=np.int64), np.array([], dtype=np.int32), np.array([]))
    nz_rows, nz_cols = np.nonzero(A)
    starts = np.searchsorted(nz_rows, np.arange(n)).astype(np.int64)
    h.addCols(n, np.ones(n), np.zeros(n), np.full(n, highspy.kHighsInf), len(nz_rows), starts,
              nz_cols.astype(np.int32), A[nz_rows, nz_cols].astype(float))
    h.changeColsIntegrality(n, np.arange(n, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * n))
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return None, np.inf
    proven = float(h.getInfo().objective_function_value) if status == highspy.HighsModelStatus.kOptimal else None
    if h.getInfo().primal_solution_status < 2:
        return None, proven
    x = np.round(np.array(h.getSolution().col_value)).astype(np.int64)
    return [(0, A[j].copy(), int(x[j])) for j in np.flatnonzero(x > 0)], proven


def pack_tight(prob: Problem, bins: int, deadline: float) -> tuple[Packing | None, bool]:
    """A packing into ``bins`` bins of the only type when the low-waste contents allow one.

    Returns (packing or None, whether ``bins`` is proven too few)."""
    if prob.T != 1 or prob.maxc[0] < bins:
        return None, False
    W = waste_allowance(prob, bins)
    if np.any(W < 0):
        return None, True
    if np.min(W / np.maximum(prob.C[0], 1)) > MAX_WASTE_BINS:
        return None, False
    A = low_waste_patterns(prob, W, deadline)
    if A is None or len(A) == 0:
        return None, A is not None and at_most_three(prob)
    if time.monotonic() > deadline:
        return None, False
    packing, minimum = exact_cover(prob, A, deadline)
    complete = at_most_three(prob)
    log.debug("tight: %d low-waste contents, cover %s, complete %s", len(A), minimum, complete)
    if packing is not None and sum(k for _, _, k in packing) <= bins:
        return packing, False
    return None, complete and minimum is not None and minimum > bins
