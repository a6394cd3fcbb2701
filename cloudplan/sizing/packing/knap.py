"""Exact pricing by depth-first branch and bound on the multi-dimensional knapsack.

In the instances that matter here a bin holds a handful of items, so a search
that takes items by decreasing value and bounds each node by "the k most valuable
remaining items, where k is the most items the room left can possibly hold" proves
optimality after few nodes. When the node budget runs out the caller falls back
to the HiGHS MIP.
"""

from __future__ import annotations

import bisect

import numpy as np


def knapsack_bb(p: np.ndarray, S: np.ndarray, ub: np.ndarray, C: np.ndarray, floor: float,
                node_limit: int = 20000) -> tuple[np.ndarray | None, float, bool, list[np.ndarray]]:
    """max p.a s.t. S'a <= C, 0 <= a <= ub integer, only solutions better than ``floor``.

    Returns (best a found above ``floor`` or None, its value, search completed, every
    improving solution met on the way). When completed and nothing was found, no
    solution is worth more than ``floor``.
    """
    n, d = S.shape
    order = np.lexsort((S.sum(axis=1), -p))
    p, S, ub = p[order], S[order], ub[order]
    # expanded copies, for the cardinality bound and the value prefix sums
    rep = np.repeat(np.arange(n), ub)
    pe = np.concatenate([[0.0], np.cumsum(p[rep])])
    start = np.concatenate([[0], np.cumsum(ub)]).tolist()
    cums = [np.cumsum(np.sort(S[rep, k])).tolist() for k in range(d)]
    total = len(rep)
    pe_l = pe.tolist()
    Sl = [tuple(int(v) for v in row) for row in S]
    pl = p.tolist()
    ubl = [int(u) for u in ub]

    # per dimension, the best value per unit of size among items k.. (suffix maximum):
    # room left times that ratio bounds what the room can still earn
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(S > 0, p[:, None] / np.where(S > 0, S, 1), np.inf)
    suf = np.maximum.accumulate(ratio[::-1], axis=0)[::-1].tolist() if n else []

    best_val, best_a = floor, None
    pool: list[list[int]] = []
    a = [0] * n
    nodes = 0

    def bound(k: int, R: list[int], v: float) -> float:
        most = min(bisect.bisect_right(cums[j], R[j]) for j in range(d)) if d else total
        s = start[k]
        b = v + pe_l[min(total, s + most)] - pe_l[s]
        rk = suf[k]
        for j in range(d):
            b = min(b, v + R[j] * rk[j])
        return b

    def dfs(k: int, R: list[int], v: float) -> bool:
        nonlocal best_val, best_a, nodes
        nodes += 1
        if nodes > node_limit:
            return False
        if v > best_val + 1e-9:
            best_val, best_a = v, a.copy()
            pool.append(best_a)
        for k2 in range(k, n):
            # the bound only shrinks as k2 moves to less valuable items
            if bound(k2, R, v) <= best_val + 1e-9:
                return True
            s = Sl[k2]
            c = ubl[k2]
            for j in range(d):
                if s[j] > 0:
                    c = min(c, R[j] // s[j])
            for cnt in range(c, 0, -1):
                a[k2] = cnt
                ok = dfs(k2 + 1, [R[j] - cnt * s[j] for j in range(d)], v + cnt * pl[k2])
                a[k2] = 0
                if not ok:
                    return False
        return True

    done = dfs(0, [int(c) for c in C], 0.0)
    sols = []
    for sol in pool:
        full = np.zeros(n, dtype=np.int64)
        full[order] = sol
        sols.append(full)
    if best_a is None:
        return None, floor, done, sols
    return sols[-1], best_val, done, sols
