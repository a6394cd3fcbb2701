"""Greedy packings: the warm start of the exact model and the answer when time runs out.

Two families, each run under several item orderings because no single ordering
wins everywhere in several dimensions:

- item-centric first fit decreasing: items in decreasing "size" order go to the
  first open bin with room; copies of one item type are placed in one vectorized
  step, so the cost is per item type and per open bin, not per item;
- bin-centric filling: fill one bin at a time (items in order, or the item best
  aligned with the room left), then repeat that same bin content as many times as
  the remaining counts allow, which keeps 20,000 items of 50 types cheap.

With several bin types the new-bin choice is cost-aware (value packed per unit cost).
A packing is a list of ``(bin type index, counts per item type, multiplicity)``.
"""

from __future__ import annotations

import numpy as np

from cloudplan.sizing.packing.types import Problem

Packing = list[tuple[int, np.ndarray, int]]


def norm_ref(prob: Problem) -> np.ndarray:
    """Per-dimension scale: the largest capacity (1 where all are zero)."""
    ref = prob.C.max(axis=0).astype(float)
    ref[ref <= 0] = 1.0
    return ref


def orderings(prob: Problem) -> list[np.ndarray]:
    """Item orders (largest first) under several size measures, duplicates dropped."""
    X = prob.S / norm_ref(prob)
    keys = [X.sum(axis=1), X.max(axis=1), (X ** 2).sum(axis=1), X.max(axis=1) + X.sum(axis=1) / max(1, X.shape[1])]
    if X.shape[1] <= 4:
        keys += [X[:, d] + 1e-3 * X.sum(axis=1) for d in range(X.shape[1])]
    out, seen = [], set()
    for k in keys:
        order = np.lexsort((np.arange(len(k)), -k))
        sig = order.tobytes()
        if sig not in seen:
            seen.add(sig)
            out.append(order)
    return out


def max_copies(R: np.ndarray, s: np.ndarray) -> np.ndarray:
    """How many copies of an item of size ``s`` fit in each residual row of ``R``."""
    pos = s > 0
    if not pos.any():
        return np.full(R.shape[0], np.iinfo(np.int64).max // 4, dtype=np.int64)
    return np.where(np.all(R >= 0, axis=1), (R[:, pos] // s[pos]).min(axis=1), 0)


def group(bin_types: np.ndarray, A: np.ndarray) -> Packing:
    """Collapse identical bins (same type, same contents) into patterns with multiplicity."""
    used = A.sum(axis=1) > 0
    if not used.any():
        return []
    key = np.concatenate([bin_types[used, None], A[used]], axis=1)
    uniq, mult = np.unique(key, axis=0, return_counts=True)
    return [(int(row[0]), row[1:].copy(), int(k)) for row, k in zip(uniq, mult)]


def _choose_new_type(prob: Problem, i: int, avail: np.ndarray, capw: np.ndarray, rule: str) -> int:
    fit = np.all(prob.S[i] <= prob.C, axis=1) & (avail > 0)
    if not fit.any():
        return -1
    cand = np.flatnonzero(fit)
    if rule == "cheapest":
        score = prob.cost[cand] + 1e-9 * -capw[cand]
    else:  # cheapest per unit of capacity, the usual choice for large item counts
        score = prob.cost[cand] / np.maximum(capw[cand], 1e-12)
    return int(cand[np.argmin(score)])


def first_fit(prob: Problem, order: np.ndarray, rule: str = "per_capacity") -> Packing | None:
    """Item-centric first fit in ``order``; None when the bins available cannot take everything."""
    d = prob.S.shape[1]
    capw = (prob.C / norm_ref(prob)).sum(axis=1)
    avail = prob.maxc.copy()
    cap = 16
    R = np.zeros((cap, d), dtype=np.int64)
    A = np.zeros((cap, prob.m), dtype=np.int64)
    bt = np.zeros(cap, dtype=np.int64)
    nb = 0
    for i in order:
        r = int(prob.b[i])
        if r == 1 and nb:
            # one copy (every item of the published benchmarks): the first bin with room
            ok = np.all(R[:nb] >= prob.S[i], axis=1)
            j = int(ok.argmax())
            if ok[j]:
                R[j] -= prob.S[i]
                A[j, i] += 1
                continue
        elif nb:
            k = np.minimum(max_copies(R[:nb], prob.S[i]), r)
            before = np.concatenate([[0], np.cumsum(k)[:-1]])
            take = np.clip(r - before, 0, k)
            R[:nb] -= take[:, None] * prob.S[i]
            A[:nb, i] += take
            r -= int(take.sum())
        while r > 0:
            t = _choose_new_type(prob, i, avail, capw, rule)
            if t < 0:
                return None
            per = int(min(max_copies(prob.C[t:t + 1], prob.S[i])[0], r))
            n_new = int(min(-(-r // per), avail[t]))
            if nb + n_new > cap:
                cap = max(2 * cap, nb + n_new)
                R = np.resize(R, (cap, d)); A = np.resize(A, (cap, prob.m)); bt = np.resize(bt, cap)
            counts = np.full(n_new, per, dtype=np.int64)
            counts[-1] = min(per, r - per * (n_new - 1))
            sl = slice(nb, nb + n_new)
            A[sl] = 0
            A[sl, i] = counts
            R[sl] = prob.C[t] - counts[:, None] * prob.S[i]
            bt[sl] = t
            avail[t] -= n_new
            nb += n_new
            r -= int(counts.sum())
    return group(bt[:nb], A[:nb])


def _fill_bin(prob: Problem, t: int, rem: np.ndarray, order: np.ndarray, dot: bool) -> np.ndarray:
    """Contents of one bin of type ``t`` filled from the remaining counts."""
    a = np.zeros(prob.m, dtype=np.int64)
    R = prob.C[t].copy()
    if not dot:
        for i in order:
            if rem[i] > a[i]:
                k = int(min(rem[i] - a[i], max_copies(R[None], prob.S[i])[0]))
                if k > 0:
                    a[i] += k
                    R -= k * prob.S[i]
        return a
    ref = norm_ref(prob)
    X = prob.S / ref
    while True:
        ok = (rem > a) & np.all(prob.S <= R, axis=1)
        if not ok.any():
            return a
        # the item best aligned with the room left, so no dimension is exhausted early
        score = np.where(ok, X @ (R / ref), -np.inf)
        i = int(np.argmax(score))
        a[i] += 1
        R -= prob.S[i]


def bin_centric(prob: Problem, order: np.ndarray, dot: bool = False) -> Packing | None:
    """Fill bins one at a time, choosing the type that packs the most value per cost,
    and repeat each bin content while the remaining counts allow."""
    w = (prob.S / norm_ref(prob)).sum(axis=1) + 1e-9
    rem = prob.b.copy()
    avail = prob.maxc.copy()
    out: Packing = []
    while rem.sum() > 0:
        best = None
        for t in np.flatnonzero(avail > 0):
            a = _fill_bin(prob, int(t), rem, order, dot)
            if a.sum() == 0:
                continue
            ratio = float(a @ w) / max(prob.cost[t], 1e-12)
            if best is None or ratio > best[0]:
                best = (ratio, int(t), a)
        if best is None:
            return None
        _, t, a = best
        nz = a > 0
        k = int(min((rem[nz] // a[nz]).min(), avail[t]))
        out.append((t, a, k))
        rem -= k * a
        avail[t] -= k
    return out


def packing_cost(prob: Problem, packing: Packing) -> float:
    return float(sum(prob.cost[t] * k for t, _, k in packing))


def best_greedy(prob: Problem, budget_orders: int | None = None, pool: Packing | None = None) -> Packing | None:
    """The cheapest packing over all greedy variants (None when none packs everything).

    Every variant's bins are appended to ``pool`` when given: the losing packings
    still hold full bins, good first columns for the master."""
    best, best_cost = None, np.inf
    orders = orderings(prob)[:budget_orders]
    rules = ["per_capacity", "cheapest"] if prob.T > 1 else ["per_capacity"]
    variants = [(first_fit, o, r) for o in orders for r in rules]
    # bin-centric filling costs a pass over the item types per bin: worth it when
    # bins are few or counts are high (the pattern is then repeated many times)
    if prob.m <= 150 or prob.b.sum() > 4 * prob.m:
        variants += [(bin_centric, o, False) for o in orders[:2]]
    if prob.S.shape[1] > 1:
        variants.append((bin_centric, orders[0], True))
    for fn, o, arg in variants:
        p = fn(prob, o, arg)
        if p is not None:
            if pool is not None:
                pool.extend(p)
            c = packing_cost(prob, p)
            if c < best_cost - 1e-9:
                best, best_cost = p, c
    return best


def place_greedy(prob: Problem) -> Packing | None:
    """Place every item into the existing bins (``maxc`` of each type), first fit then
    best fit, largest items first; None when neither rule succeeds."""
    expanded = np.repeat(np.arange(prob.T), np.minimum(prob.maxc, prob.b.sum() + 1))
    for order in orderings(prob)[:2]:
        for rule in ("best", "first"):
            p = _place_into(prob, expanded, order, rule)
            if p is not None:
                return p
    return None


def _place_into(prob: Problem, bt: np.ndarray, order: np.ndarray, rule: str) -> Packing | None:
    """Item-by-item first or best fit into the bins ``bt``, one step per (item type, bin).

    Copies of one type fill the bin the rule picks until it is full: under first
    fit that bin stays the first with room, under best fit it stays the tightest
    (only its room shrinks), so the result is the item-by-item one.
    """
    R = prob.C[bt].copy()
    A = np.zeros((len(bt), prob.m), dtype=np.int64)
    ref = norm_ref(prob)
    for i in order:
        s = prob.S[i]
        r = int(prob.b[i])
        if rule == "first":
            k = np.minimum(max_copies(R, s), r)
            take = np.clip(r - np.concatenate([[0], np.cumsum(k)[:-1]]), 0, k)
            R -= take[:, None] * s
            A[:, i] += take
            r -= int(take.sum())
            if r > 0:
                return None
            continue
        while r > 0:
            ok = np.all(R >= s, axis=1)
            if not ok.any():
                return None
            # tightest fit: least normalized room left afterwards
            j = int(np.argmin(np.where(ok, ((R - s) / ref).sum(axis=1), np.inf)))
            k = int(min(r, max_copies(R[j:j + 1], s)[0]))
            R[j] -= k * s
            A[j, i] += k
            r -= k
    return group(bt, A)
