"""From the master LP to integer packings: residual rounding and the integer master.

The master covers items (>=), so an integer solution may hold more copies of an
item than exist; :func:`trim` removes the extra copies, which never overloads a
bin and may empty (and so save) some.
"""

from __future__ import annotations

import logging
import time

import highspy
import numpy as np

from cloudplan.sizing.packing.cg import Master, _silent
from cloudplan.sizing.packing.heur import Packing, best_greedy
from cloudplan.sizing.packing.types import Problem

log = logging.getLogger(__name__)


def trim(prob: Problem, packing: Packing) -> Packing:
    """Remove over-covered copies so every item type is placed exactly ``b`` times."""
    pats = [(t, a.copy(), k) for t, a, k in packing if k > 0]
    covered = np.zeros(prob.m, dtype=np.int64)
    for _, a, k in pats:
        covered += k * a
    excess = covered - prob.b
    for i in np.flatnonzero(excess > 0):
        e = int(excess[i])
        # take from the emptiest patterns first: that is where a bin may be freed
        pats.sort(key=lambda p: int(p[1].sum()))
        out: Packing = []
        for t, a, k in pats:
            q = int(a[i])
            if e <= 0 or q == 0:
                out.append((t, a, k))
                continue
            if e >= k * q:
                b2 = a.copy(); b2[i] = 0
                out.append((t, b2, k))
                e -= k * q
                continue
            full, rest = divmod(e, q)
            keep = k - full - (1 if rest else 0)
            if keep:
                out.append((t, a, keep))
            if full:
                b2 = a.copy(); b2[i] = 0
                out.append((t, b2, full))
            if rest:
                b3 = a.copy(); b3[i] = q - rest
                out.append((t, b3, 1))
            e = 0
        pats = out
    return merge([(t, a, k) for t, a, k in pats if a.sum() > 0 and k > 0])


def merge(packing: Packing) -> Packing:
    """Join patterns with the same bin type and contents."""
    acc: dict[bytes, list] = {}
    for t, a, k in packing:
        key = np.int64(t).tobytes() + a.tobytes()
        if key in acc:
            acc[key][2] += k
        else:
            acc[key] = [t, a, k]
    return [(t, a, k) for t, a, k in acc.values()]


def residual_rounding(prob: Problem, master: Master) -> Packing | None:
    """Round the LP down, pack what is left greedily."""
    x = np.floor(master.x + 1e-6).astype(np.int64)
    base: Packing = [(master.cols[j][0], master.cols[j][1], int(x[j])) for j in np.flatnonzero(x > 0)]
    base = trim(prob, base)
    covered = np.zeros(prob.m, dtype=np.int64)
    used = np.zeros(prob.T, dtype=np.int64)
    for t, a, k in base:
        covered += k * a
        used[t] += k
    rest = prob.b - covered
    if rest.sum() == 0:
        return base
    sub = Problem(prob.S, rest, prob.C, prob.cost, prob.maxc - used, prob.item_names, prob.bin_names)
    extra = best_greedy(sub, budget_orders=3)
    if extra is None:
        return None
    return merge(base + extra)


def integer_master(prob: Problem, master: Master, deadline: float, incumbent: Packing | None,
                   step: float | None) -> Packing | None:
    """Solve the master as a MIP on the generated columns (HiGHS), warm-started from
    ``incumbent``; the absolute gap below one cost step lets HiGHS stop as soon as
    its solution matches its bound."""
    left = deadline - time.monotonic()
    if left <= 0.02 or not master.cols:
        return None
    h = _silent(highspy.Highs())
    h.passModel(master.h.getLp())
    n = master.n_art + len(master.cols)
    idx = np.arange(n, dtype=np.int32)
    h.changeColsIntegrality(n, idx, np.array([highspy.HighsVarType.kInteger] * n))
    if not master.phase1:
        art = np.arange(master.n_art, dtype=np.int32)
        h.changeColsBounds(master.n_art, art, np.zeros(master.n_art), np.zeros(master.n_art))
    h.setOptionValue("time_limit", left)
    if step is not None and not master.phase1:
        h.setOptionValue("mip_abs_gap", step * (1 - 1e-6))
    if incumbent:
        start = np.zeros(n)
        for t, a, k in incumbent:
            j = master.keys.get(np.int64(t).tobytes() + a.tobytes())
            if j is None:
                break
            start[master.n_art + j] += k
        else:
            sol = highspy.HighsSolution()
            sol.col_value = list(start)
            sol.value_valid = True
            h.setSolution(sol)
    h.run()
    if h.getInfo().primal_solution_status < 2:
        return None
    xv = np.round(np.array(h.getSolution().col_value)).astype(np.int64)
    if master.phase1 and xv[: master.n_art].sum() > 0:
        return None
    x = xv[master.n_art:]
    packing = [(master.cols[j][0], master.cols[j][1], int(x[j])) for j in np.flatnonzero(x > 0)]
    return trim(prob, packing)


def _fix(prob: Problem, a: np.ndarray, k: int, r: np.ndarray) -> tuple[np.ndarray, int]:
    """Up to ``k`` copies of pattern ``a`` cut to the residual demand ``r``."""
    nz = a > 0
    full = int(min(k, (r[nz] // a[nz]).min())) if nz.any() else 0
    if full >= 1:
        return a, full
    return np.minimum(a, r), 1


def _complete(prob: Problem, fixed: Packing, r: np.ndarray, avail: np.ndarray) -> Packing | None:
    """Finish an interrupted dive greedily."""
    if r.sum() == 0:
        return merge(fixed)
    sub = Problem(prob.S, r, prob.C, prob.cost, avail, prob.item_names, prob.bin_names)
    extra = best_greedy(sub, budget_orders=2)
    return None if extra is None else merge(fixed + extra)


def _fractional_picks(x: np.ndarray, value: float) -> list[tuple[int, int]]:
    """The largest fractional column, plus other columns above one half when the LP
    is large: fixing a tenth of the bins per step keeps long dives affordable."""
    order = np.argsort(-x, kind="stable")
    many = max(1, int(np.ceil(DIVE_FIX_SHARE * value)))
    picks = [(int(order[0]), 1)]
    picks += [(int(j), 1) for j in order[1:many] if x[j] >= 0.5]
    return picks


def dive(prob: Problem, cg, deadline: float, incumbent_cost: float, step: float | None) -> Packing | None:
    """Diving: fix the LP's integral columns (or its largest fractional one), re-solve
    the LP with greedy pricing on what is left, repeat until everything is packed.
    Gives up when the LP says this dive cannot beat ``incumbent_cost``."""
    from cloudplan.sizing.packing.types import round_up

    m = cg.master
    r, avail = prob.b.copy(), prob.maxc.copy()
    fixed: Packing = []
    fixed_cost = 0.0
    try:
        while r.sum() > 0:
            if time.monotonic() >= deadline:
                return _complete(prob, fixed, r, avail)
            cg.settle(r, avail, deadline, max_rounds=DIVE_ROUNDS)
            if m.artificial_use() > 1e-6:
                return None
            # the LP is only re-optimized with greedy pricing, so its value can be
            # far too high: give up only when the bins fixed already cost too much
            if round_up(fixed_cost, step) >= incumbent_cost - 1e-9:
                return None
            x = m.x
            whole = np.flatnonzero(x >= 1 - 1e-6)
            picks = [(j, int(np.floor(x[j] + 1e-6))) for j in whole] or _fractional_picks(x, m.value)
            before = r.sum()
            for j, k in picks:
                t, a = m.cols[j]
                k = int(min(k, avail[t]))
                if k <= 0 or not np.any(np.minimum(a, r)):
                    continue
                a2, k2 = _fix(prob, a, k, r)
                fixed.append((t, a2.copy(), k2))
                r = r - k2 * a2
                avail[t] -= k2
                fixed_cost += k2 * float(prob.cost[t])
                if a2 is not a:
                    m.add(t, a2)
            if r.sum() == before:
                return _complete(prob, fixed, r, avail)
        return merge(fixed)
    finally:
        cg.set_residual(prob.b, prob.maxc)


#: greedy pricing rounds per diving step
DIVE_ROUNDS = 4
#: share of the LP's bins that one diving step may fix: a quarter, because a step's LP
#: re-solve is slow on large degenerate masters (0.13-0.31 s of CPU at n = 500) and a dive
#: cut by its deadline is finished greedily; against a tenth, at n = 500 (36 instances)
#: 18 fewer-bin answers and 1 more-bin answer (bench/vbp_results.md)
DIVE_FIX_SHARE = 0.25
