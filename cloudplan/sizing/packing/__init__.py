"""Exact multi-dimensional packing: minimum-cost packings with a proven lower bound.

``pack`` packs item types (VM flavors with counts) into bin types (host kinds with
a cost and an optional number available) at minimum cost; ``place`` answers
whether given bins can hold given items (drain checks, N+1 re-placement);
``fill`` puts as many items as fit into the bins that exist and returns the rest
(hosts that take hundreds of VMs each, see :mod:`.fill`);
``verify`` re-checks any answer independently of how it was found.

The method, cheapest first, stopping as soon as the cost meets the bound:

1. simple bounds (volume per dimension, items that pairwise cannot share a bin)
   and greedy packings (see :mod:`.heur`);
2. with one bin type, the low-waste enumeration when the bound is nearly tight
   (see :mod:`.tight`) and a local search that takes bins out of the best
   packing one at a time (see :mod:`.local`);
3. column generation on the pattern model (see :mod:`.cg`), whose LP
   bound is proven even when interrupted;
4. residual rounding of the LP, diving, then the master as a MIP on the
   generated columns; with one bin type the local search again, where it stopped
   (from the LP's packing if that has fewer bins), for whatever time is left.

Example::

    >>> from cloudplan.sizing.packing import ItemType, BinType, pack
    >>> r = pack([ItemType("m1", (4, 8), 6)], [BinType("host", (16, 32))])
    >>> r.bins_by_type, r.optimal
    ({'host': 2}, True)
"""

from __future__ import annotations

import logging
import time

import numpy as np

from cloudplan.errors import Infeasible, SolverError
from cloudplan.sizing.packing import local
from cloudplan.sizing.packing.cg import ColumnGeneration
from cloudplan.sizing.packing.fill import fill as fill_dense
from cloudplan.sizing.packing.heur import Packing, best_greedy, packing_cost, place_greedy
from cloudplan.sizing.packing.integer import dive, integer_master, residual_rounding
from cloudplan.sizing.packing.tight import pack_tight, waste_allowance
from cloudplan.sizing.packing.types import (UNLIMITED, BinType, ItemType, PackingResult, Pattern, Problem,
                                            explain_unfit, round_up, to_problem)

__all__ = ["ItemType", "BinType", "Pattern", "PackingResult", "pack", "place", "fill", "verify", "lower_bound"]

log = logging.getLogger(__name__)

#: share of the time limit the low-waste enumeration (one bin type, volume bound nearly tight) may take
TIGHT_TIME_SHARE = 0.1
#: the same when some dimension has no room at all: every bin of a packing at the
#: bound is full there, and the enumeration is the direct way to find one
FULL_TIGHT_TIME_SHARE = 0.4
#: share of the time limit the local search may take first (one bin type)
LOCAL_TIME_SHARE = 0.3
#: share of the time left after it at which column generation stops (bound as proven so far)
CG_TIME_SHARE = 0.4
#: share of that time after which diving stops; the integer master gets the rest
DIVE_TIME_SHARE = 0.8
#: items per bin from which ``place`` tries the LP-split fill before the exact model
FILL_ITEMS_PER_BIN = 8


def volume_bound(prob: Problem) -> float:
    """Cheapest capacity that holds the total volume, the worst dimension decides.

    Per dimension this is a fractional knapsack over bin types (cheapest capacity
    first, within ``maxc``); infinite when the available bins cannot hold it."""
    best = 0.0
    for d in range(prob.S.shape[1]):
        need = float(prob.b @ prob.S[:, d])
        if need <= 0:
            continue
        # need - (need / cap) * cap leaves a rounding residue that grows with the volume (MiB of RAM).
        tol = 1e-9 * max(1.0, need)
        cap = prob.C[:, d].astype(float)
        order = np.argsort(np.where(cap > 0, prob.cost / np.maximum(cap, 1e-12), np.inf), kind="stable")
        total = 0.0
        for t in order:
            if cap[t] <= 0 or need <= 0:
                continue
            n = min(need / cap[t], float(prob.maxc[t]))
            total += n * prob.cost[t]
            need -= n * cap[t]
        best = max(best, total if need <= tol else np.inf)
    return best


def conflict_bound(prob: Problem) -> float:
    """Items that pairwise fit in no bin together each need their own bin (greedy clique)."""
    if prob.m == 0:
        return 0.0
    # together[i, j]: items i and j fit together in some bin type
    together = np.zeros((prob.m, prob.m), dtype=bool)
    for t in range(prob.T):
        if prob.maxc[t] > 0:
            together |= np.all(prob.S[:, None, :] + prob.S[None, :, :] <= prob.C[t], axis=2)
    alone = ~np.diag(together)
    key = (prob.S / np.maximum(prob.C.max(axis=0), 1)).sum(axis=1) + 10.0 * alone
    clique: list[int] = []
    for i in np.argsort(-key, kind="stable"):
        if not together[i, clique].any():
            clique.append(int(i))
    count = sum(int(prob.b[i]) if alone[i] else 1 for i in clique)
    usable = prob.maxc > 0
    # Summed as Python ints: four unlimited types (2**61 each) overflow an int64 sum.
    if count > sum(int(c) for c in np.minimum(prob.maxc[usable], UNLIMITED)):
        return np.inf
    return count * float(prob.cost[usable].min()) if usable.any() else np.inf


def lower_bound(items: list[ItemType], bins: list[BinType]) -> float:
    """The simple proven lower bound on the cost of packing ``items`` (no LP)."""
    prob = to_problem(items, bins)
    return round_up(max(volume_bound(prob), conflict_bound(prob)), prob.integral_costs())


def _result(prob: Problem, packing: Packing | None, lb: float, t0: float, status: str,
            **stats) -> PackingResult:
    patterns, by_type = [], {}
    for t, a, k in sorted(packing or [], key=lambda p: (p[0], -p[2])):
        items = {prob.item_names[i]: int(a[i]) for i in np.flatnonzero(a)}
        patterns.append(Pattern(prob.bin_names[t], items, int(k)))
        by_type[prob.bin_names[t]] = by_type.get(prob.bin_names[t], 0) + int(k)
    # priced per bin type, not per pattern: ten bins at 3.9 cost 39, not 38.99999999999999
    cost = float(sum(float(prob.cost[prob.bin_names.index(name)]) * n for name, n in by_type.items()))
    optimal = status == "optimal"
    return PackingResult(patterns, by_type, cost, float(lb), optimal, time.monotonic() - t0, status, stats=stats)


def _better(prob: Problem, a: Packing | None, b: Packing | None) -> Packing | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if packing_cost(prob, b) < packing_cost(prob, a) - 1e-9 else a


def _limited_message(prob: Problem) -> str:
    limited = ", ".join(f"{prob.bin_names[t]} x{int(prob.maxc[t])}" for t in range(prob.T)
                        if prob.maxc[t] < UNLIMITED)
    return f"the bins available by max_count ({limited}) cannot hold all items"


def pack(items: list[ItemType], bins: list[BinType], *, time_limit_s: float = 5.0) -> PackingResult:
    """Minimum-cost packing of all ``items`` into bins of the given types.

    Returns the best packing found within ``time_limit_s`` with a proven lower
    bound; ``optimal`` when they meet. Raises :class:`Infeasible` naming the item
    (and dimension) when an item fits no bin type, or when the limited bin counts
    are proven too few; :class:`SolverError` when nothing was found in time.
    """
    t0 = time.monotonic()
    deadline = t0 + time_limit_s
    prob = to_problem(items, bins)
    if prob.m == 0:
        return _result(prob, [], 0.0, t0, "optimal")
    explain_unfit(items, bins, prob)
    step = prob.integral_costs()
    lb = round_up(max(volume_bound(prob), conflict_bound(prob)), step)
    if not np.isfinite(lb):
        raise Infeasible(f"{_limited_message(prob)}: not enough total capacity or too many "
                         f"items that cannot share a bin", requirement="max_count")
    greedies: Packing = []
    best = best_greedy(prob, pool=greedies)
    stats = {"greedy_cost": packing_cost(prob, best) if best else None, "simple_bound": float(lb)}
    if best is not None and packing_cost(prob, best) <= lb + 1e-9:
        return _result(prob, best, lb, t0, "optimal", **stats)

    if best is not None and prob.T == 1 and prob.cost[0] > 0:
        # its own share, counted from now: the greedies before it take long on many item types
        best, lb = _tight(prob, best, lb, time.monotonic() + _tight_share(prob, lb) * time_limit_s, stats)
        if packing_cost(prob, best) <= lb + 1e-9:
            return _result(prob, best, lb, t0, "optimal", **stats)

    reducer = None
    if best is not None and local.applicable(prob):
        reducer = local.Reducer(prob, best)
        best = _eliminate(prob, reducer, best, lb, time.monotonic() + LOCAL_TIME_SHARE * time_limit_s, stats)
        if packing_cost(prob, best) <= lb + 1e-9:
            return _result(prob, best, lb, t0, "optimal", **stats)
    # the later phases share what is left
    t1 = time.monotonic()
    rest = max(0.0, deadline - t1)

    seed = best
    if best is None:
        # The greedy could not fit everything into the limited bins: phase 1 either
        # proves the counts insufficient or finds a first packing.
        found, proven, cg1 = _phase1(prob, t1 + CG_TIME_SHARE * rest, deadline)
        if proven:
            raise Infeasible(f"{_limited_message(prob)} (proven by the LP relaxation)",
                             requirement="max_count")
        best = found
        seed = [(t, a, 1) for t, a in cg1.master.cols]

    cg = ColumnGeneration(prob)
    cg.seed((seed or []) + greedies)
    stop_at = packing_cost(prob, best) if best else np.inf
    cg.run(t1 + CG_TIME_SHARE * rest, stop_at=stop_at, step=step)
    lb = max(lb, round_up(cg.bound, step))
    stats.update(lp_bound=float(cg.bound), lp_optimal=cg.lp_optimal, columns=len(cg.master.cols),
                 iterations=cg.iterations, exact_pricing=cg.exact_calls)
    best = _integer_phase(prob, cg, best, lb, step, t1, rest, stats)
    if best is not None and packing_cost(prob, best) > lb + 1e-9 and local.applicable(prob):
        # the integer master often ends early (it proved its columns can do no better);
        # the search goes on where it stopped, from the LP's packing if that is better
        reducer = reducer or local.Reducer(prob, best)
        reducer.offer(best)
        best = _eliminate(prob, reducer, best, lb, deadline, stats)
    if best is None:
        raise SolverError(f"no packing found within {time_limit_s:g} s (lower bound {lb:g}); "
                          f"raise the time limit")
    cost = packing_cost(prob, best)
    status = "optimal" if cost <= lb + 1e-9 else "feasible"
    log.debug("pack: cost %s, bound %s, %s", cost, lb, stats)
    return _result(prob, best, lb, t0, status, **stats)


def _eliminate(prob: Problem, reducer: local.Reducer, best: Packing, lb: float, deadline: float,
               stats: dict) -> Packing:
    """One bin type: the local search (see :mod:`.local`) takes bins out of its
    packing until ``deadline``, down to the bound."""
    t = time.monotonic()
    floor = int(round(lb / float(prob.cost[0])))
    fewer = reducer.run(floor, deadline)
    stats["local_s"] = round(stats.get("local_s", 0.0) + time.monotonic() - t, 3)
    stats.setdefault("local_from", int(sum(k for _, _, k in best)))
    return _better(prob, best, fewer)


def _tight_share(prob: Problem, lb: float) -> float:
    room = waste_allowance(prob, int(round(lb / float(prob.cost[0]))))
    return FULL_TIGHT_TIME_SHARE if room.min() == 0 else TIGHT_TIME_SHARE


def _tight(prob: Problem, best: Packing, lb: float, deadline: float, stats: dict) -> tuple[Packing, float]:
    """One bin type: look for a packing at the bound among the low-waste bin contents
    (see :mod:`.tight`); a proof that none exists raises the bound by one bin."""
    bins = int(round(lb / float(prob.cost[0])))
    t = time.monotonic()
    found, too_few = pack_tight(prob, bins, deadline)
    stats["tight"] = "found" if found else ("proof" if too_few else "no")
    stats["tight_s"] = round(time.monotonic() - t, 3)
    if too_few:
        lb = float(bins + 1) * float(prob.cost[0])
    return _better(prob, best, found), lb


def _integer_phase(prob: Problem, cg: ColumnGeneration, best: Packing | None, lb: float,
                   step: float | None, t0: float, time_limit_s: float, stats: dict) -> Packing | None:
    """Residual rounding, then diving, then the integer master, each only while the
    incumbent is above the proven bound; ``t0`` and ``time_limit_s`` are the span
    these phases and the column generation share."""
    def open_gap() -> bool:
        return best is None or packing_cost(prob, best) > lb + 1e-9

    if open_gap():
        best = _better(prob, best, residual_rounding(prob, cg.master))
    if open_gap():
        dived = dive(prob, cg, t0 + DIVE_TIME_SHARE * time_limit_s,
                     packing_cost(prob, best) if best else np.inf, step)
        stats["dive_cost"] = packing_cost(prob, dived) if dived else None
        best = _better(prob, best, dived)
    if open_gap():
        best = _better(prob, best, integer_master(prob, cg.master, t0 + time_limit_s, best, step))
    return best


def _phase1(prob: Problem, cg_deadline: float, deadline: float):
    """Feasibility with limited bins: (packing or None, infeasibility proven, the CG)."""
    cg1 = ColumnGeneration(prob, phase1=True)
    cg1.seed(None)
    cg1.run(cg_deadline)
    if cg1.bound > 1e-6:
        return None, True, cg1
    found = integer_master(prob, cg1.master, deadline, None, None)
    return found, False, cg1


def place(items: list[ItemType], bins: list[BinType], *, time_limit_s: float = 5.0) -> PackingResult:
    """Can all ``items`` be placed into the bins that exist (``max_count`` of each type)?

    A greedy answers the easy cases in milliseconds; otherwise simple bounds or the
    LP relaxation prove infeasibility, or the exact model finds a placement. Status
    is "feasible", "infeasible" (proven) or "unknown" (neither within the limit);
    never raises for a merely impossible placement.
    """
    t0 = time.monotonic()
    deadline = t0 + time_limit_s
    # a bin type without a count stands for one existing bin
    norm = [b if b.max_count is not None else BinType(b.name, b.capacity, b.cost, 1) for b in bins]
    prob = to_problem(items, norm)
    if prob.m == 0:
        return _result(prob, [], 0.0, t0, "feasible")
    found = place_greedy(prob)
    if found is not None:
        return _result(prob, found, 0.0, t0, "feasible", method="greedy")
    if prob.b.sum() >= FILL_ITEMS_PER_BIN * prob.maxc.sum():
        # many items per bin: the LP split places what the greedies fragment, where
        # the exact model's pricing is slowest
        found, left = fill_dense(prob)
        if not left.any():
            return _result(prob, found, 0.0, t0, "feasible", method="fill")
    try:
        explain_unfit(items, norm, prob)
    except Infeasible as e:
        return _infeasible(prob, t0, str(e))
    if not np.isfinite(volume_bound(prob)) or not np.isfinite(conflict_bound(prob)):
        return _infeasible(prob, t0, "not enough total capacity, or too many items that cannot share a bin")
    found, proven, _ = _phase1(prob, t0 + CG_TIME_SHARE * time_limit_s, deadline)
    if proven:
        return _infeasible(prob, t0, "the LP relaxation cannot place all items")
    if found is not None:
        return _result(prob, found, 0.0, t0, "feasible", method="exact")
    res = _result(prob, None, 0.0, t0, "unknown")
    res.message = f"neither a placement nor a proof of infeasibility within {time_limit_s:g} s"
    return res


def fill(items: list[ItemType], bins: list[BinType]) -> tuple[PackingResult, list[ItemType]]:
    """Place as many ``items`` as the bins that exist (``max_count`` of each type) hold.

    Fast for many small items (an LP and a few passes over the bins, see
    :mod:`.fill`), with no proof either way: returns the placement, status
    "feasible" when it holds everything, and the items left over (the counts not
    placed). Bin types without ``max_count`` are not used.
    """
    t0 = time.monotonic()
    prob = to_problem(items, bins)
    packing, left = fill_dense(prob)
    rest = [ItemType(name, tuple(int(v) for v in prob.S[i]), int(left[i]))
            for i, name in enumerate(prob.item_names) if left[i] > 0]
    res = _result(prob, packing, 0.0, t0, "unknown" if rest else "feasible", method="fill")
    if rest:
        res.message = f"{sum(it.count for it in rest)} items left over"
    return res, rest


def _infeasible(prob: Problem, t0: float, why: str) -> PackingResult:
    res = _result(prob, None, np.inf, t0, "infeasible")
    res.message = why
    return res


def verify(result: PackingResult, items: list[ItemType], bins: list[BinType]) -> None:
    """Check a result independently: no bin over capacity in any dimension, no bin type
    used beyond ``max_count``, every item placed exactly ``count`` times.
    Raises :class:`SolverError` naming the offending pattern, bin type or item."""
    size = {it.name: it.size for it in items}
    btypes = {b.name: b for b in bins}
    placed = {it.name: 0 for it in items}
    used: dict[str, int] = {}
    for n, p in enumerate(result.patterns):
        if p.bin_type not in btypes:
            raise SolverError(f"pattern {n}: unknown bin type {p.bin_type}")
        if p.multiplicity < 0:
            raise SolverError(f"pattern {n}: negative multiplicity")
        cap = btypes[p.bin_type].capacity
        for d, c in enumerate(cap):
            load = 0
            for name, k in p.items.items():
                if name not in size:
                    raise SolverError(f"pattern {n}: unknown item type {name}")
                if k < 0:
                    raise SolverError(f"pattern {n}: negative count of {name}")
                load += k * size[name][d]
            if load > c:
                raise SolverError(f"pattern {n} on {p.bin_type}: dimension {d} holds {load} > capacity {c}")
        for name, k in p.items.items():
            placed[name] += k * p.multiplicity
        used[p.bin_type] = used.get(p.bin_type, 0) + p.multiplicity
    for name, n_used in used.items():
        mc = btypes[name].max_count
        if mc is not None and n_used > mc:
            raise SolverError(f"bin type {name}: {n_used} bins used but only {mc} available")
        if result.bins_by_type.get(name, 0) != n_used:
            raise SolverError(f"bin type {name}: bins_by_type says {result.bins_by_type.get(name, 0)}, "
                              f"patterns use {n_used}")
    for it in items:
        if placed[it.name] != it.count:
            raise SolverError(f"item {it.name}: placed {placed[it.name]} times, expected {it.count}")
    cost = sum(btypes[p.bin_type].cost * p.multiplicity for p in result.patterns)
    if abs(cost - result.cost) > 1e-6 * max(1.0, abs(cost)):
        raise SolverError(f"result cost {result.cost} differs from the patterns' cost {cost}")
