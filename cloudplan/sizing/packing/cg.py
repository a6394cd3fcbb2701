"""Column generation for the pattern (Gilmore-Gomory) model of vector packing.

Master LP, solved with HiGHS through highspy and grown column by column::

    min  sum_p cost[t(p)] x_p
    s.t. sum_p a[i, p] x_p >= b[i]        (every item type covered; dual pi_i >= 0)
         sum_{p of type t} x_p <= maxc[t] (only for limited bin types; dual mu_t <= 0)

A pattern ``a`` is the content of one bin, with counts, so the model size depends
on the number of item types only. Pricing is a multi-dimensional integer knapsack
per bin type: a vectorized multi-start greedy first, an exact HiGHS MIP only when
the greedy finds no improving pattern.

Any duals (pi >= 0, mu <= 0) give a valid lower bound once scaled into dual
feasibility with upper bounds V_t on the best pattern value per bin type (Farley's
bound): theta * (pi.b + mu.maxc) with theta = min(1, min_t cost_t / (V_t + mu_t)).
So the bound is proven even when the time limit stops the column generation early.
"""

from __future__ import annotations

import logging
import time

import highspy
import numpy as np

from cloudplan.sizing.packing.heur import Packing, max_copies
from cloudplan.sizing.packing.knap import knapsack_bb
from cloudplan.sizing.packing.types import Problem, round_up

log = logging.getLogger(__name__)

INF = highspy.kHighsInf
EPS = 1e-7
#: node budget of the exact branch-and-bound pricer before handing over to HiGHS
KNAP_NODES = 1500
#: how many forced first items the greedy pricer tries per ordering
GREEDY_STARTS = 150
#: above this many candidate items the pair starts are skipped (quadratic memory)
PAIR_LIMIT = 600
#: weight of the stability center in dual smoothing (Wentges); 0, the default, turns it off:
#: on the "New" instances it did not cut the rounds to the LP optimum (see bench/vbp_results.md)
SMOOTHING = 0.0
#: below this weight a smoothed point is too close to the duals to be worth a pricing round
MIN_SMOOTHING = 0.1
#: share of the remaining time one round of exact pricing may take
EXACT_SHARE = 0.25
#: HiGHS simplex strategies of the master. After new columns the old basis stays primal
#: feasible and the primal simplex goes on from it (class1_500_3_0: 0.8 s of CPU where
#: HiGHS's default, the dual, took 2.8 s for the same 40 rounds); after a diving step's
#: new row bounds it stays dual feasible, and the dual is faster there (class2_500_5_0,
#: a whole dive: 25 s of LP against 42 s with the primal)
PRIMAL_SIMPLEX, DUAL_SIMPLEX = 4, 1


def _silent(h: highspy.Highs) -> highspy.Highs:
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    return h


class Master:
    """The restricted master LP and its column pool.

    In ``phase1`` bins cost nothing and each item type has an artificial column of
    cost 1: its optimum is 0 exactly when the (LP) packing is feasible, which is
    how the limited bin counts are proven insufficient.
    """

    def __init__(self, prob: Problem, phase1: bool = False):
        self.prob, self.phase1 = prob, phase1
        self.h = _silent(highspy.Highs())
        self.cols: list[tuple[int, np.ndarray]] = []
        self.keys: dict[bytes, int] = {}
        self.limited_rows = {int(t): prob.m + k for k, t in enumerate(np.flatnonzero(prob.maxc < 2**40))}
        for i in range(prob.m):
            self.h.addRow(float(prob.b[i]), INF, 0, np.array([], dtype=np.int32), np.array([]))
        for t in self.limited_rows:
            self.h.addRow(-INF, float(prob.maxc[t]), 0, np.array([], dtype=np.int32), np.array([]))
        # Artificial columns keep the master feasible before the columns can cover the
        # items; outside phase 1 they are priced far above any real packing.
        art = 1.0 if phase1 else 10.0 * float(max(prob.cost.max(), 1.0)) * max(1, int(prob.b.sum()))
        for i in range(prob.m):
            self.h.addCol(art, 0.0, INF, 1, np.array([i], dtype=np.int32), np.array([1.0]))
        self.n_art = prob.m
        self.value = np.inf
        self.x = np.zeros(0)
        self.rows_changed = True

    def cost_of(self, t: int) -> float:
        return 0.0 if self.phase1 else float(self.prob.cost[t])

    def add(self, t: int, a: np.ndarray) -> int | None:
        """Add pattern ``a`` of bin type ``t``; returns its column index (None if known)."""
        key = np.int64(t).tobytes() + a.tobytes()
        if key in self.keys:
            return None
        nz = np.flatnonzero(a)
        idx = list(nz)
        vals = [float(a[i]) for i in nz]
        if t in self.limited_rows:
            idx.append(self.limited_rows[t])
            vals.append(1.0)
        self.h.addCol(self.cost_of(t), 0.0, INF, len(idx), np.array(idx, dtype=np.int32), np.array(vals))
        self.cols.append((t, a.copy()))
        self.keys[key] = len(self.cols) - 1
        return len(self.cols) - 1

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        """Solve the LP; return (pi per item type, mu per bin type)."""
        self.h.setOptionValue("simplex_strategy", DUAL_SIMPLEX if self.rows_changed else PRIMAL_SIMPLEX)
        self.rows_changed = False
        self.h.run()
        sol = self.h.getSolution()
        self.value = self.h.getInfo().objective_function_value
        self.x = np.array(sol.col_value)[self.n_art:]
        dual = np.array(sol.row_dual)
        pi = np.maximum(dual[: self.prob.m], 0.0)
        mu = np.zeros(self.prob.T)
        for t, r in self.limited_rows.items():
            mu[t] = min(dual[r], 0.0)
        return pi, mu

    def artificial_use(self) -> float:
        return float(np.sum(np.array(self.h.getSolution().col_value)[: self.n_art]))


def dual_bound(prob: Problem, pi: np.ndarray, mu: np.ndarray, V: np.ndarray, costs: np.ndarray) -> float:
    """Lower bound from duals scaled into feasibility (see module docstring)."""
    base = float(pi @ prob.b + mu[prob.maxc < 2**40] @ prob.maxc[prob.maxc < 2**40].astype(float))
    if base <= 0:
        return 0.0
    theta = 1.0
    for t in range(prob.T):
        need = V[t] + mu[t]
        if need > costs[t] + 1e-9:
            theta = min(theta, costs[t] / need if need > 0 else 1.0)
    return theta * base * (1 - 1e-9)


def price_greedy(prob: Problem, t: int, pi: np.ndarray, threshold: float, max_cols: int,
                 demand: np.ndarray | None = None) -> list[np.ndarray]:
    """Improving patterns (value pi.a > threshold) for bin type ``t`` by a multi-start greedy.

    Each start forces one promising item into the bin, then fills it in a ratio
    order; all starts advance together as rows of one array.
    """
    C = prob.C[t]
    b = prob.b if demand is None else demand
    cand = np.flatnonzero((pi > EPS) & np.all(prob.S <= C, axis=1) & (b > 0))
    if len(cand) == 0:
        return []
    S = prob.S[cand]
    ub = np.minimum(b[cand], copies_in(C, S))
    p = pi[cand]
    ref = np.where(C > 0, C, 1).astype(float)
    load = S / ref
    n_starts = min(len(cand), GREEDY_STARTS)
    used = [np.flatnonzero(row > 0) for row in S]
    found: dict[bytes, tuple[float, np.ndarray]] = {}
    pair_starts = _best_pairs(S, p, ub, C, n_starts)
    for n_meas, measure in enumerate((load.sum(axis=1), load.max(axis=1), np.sqrt((load ** 2).sum(axis=1)))):
        ratio = p / (measure + 1e-9)
        order = np.argsort(-ratio, kind="stable")
        singles = np.unique(np.concatenate([order[:n_starts], np.argsort(-p, kind="stable")[:n_starts]]))
        A = np.zeros((len(singles), len(cand)), dtype=np.int64)
        A[np.arange(len(singles)), singles] = 1
        if n_meas == 0 and len(pair_starts):
            # complementary pairs are what single-item starts miss most
            A = np.concatenate([A, pair_starts])
        R = C[None, :] - A @ S
        for j in order:
            # every start fits (R >= 0), so the copies that fit are a division in the
            # dimensions the item uses: the hot loop of a pricing round
            u = used[j]
            fit = (R[:, u] // S[j, u]).min(axis=1) if len(u) else ub[j]
            k = np.minimum(fit, ub[j] - A[:, j])
            if k.any():
                A[:, j] += k
                R -= k[:, None] * S[j]
        vals = A @ p
        for r in np.flatnonzero(vals > threshold + EPS):
            key = A[r].tobytes()
            if key not in found:
                found[key] = (float(vals[r]), A[r])
    best = sorted(found.values(), key=lambda v: -v[0])[:max_cols]
    out = []
    for _, a_c in best:
        a = np.zeros(prob.m, dtype=np.int64)
        a[cand] = a_c
        out.append(a)
    return out


def _best_pairs(S: np.ndarray, p: np.ndarray, ub: np.ndarray, C: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most valuable pairs of items that fit together, as count rows."""
    n = len(p)
    if n > PAIR_LIMIT or n == 0:
        return np.zeros((0, n), dtype=np.int64)
    fit = np.all(S[:, None, :] + S[None, :, :] <= C, axis=2)
    fit &= np.triu(np.ones((n, n), dtype=bool), 1) | np.diag(ub >= 2)
    value = np.where(fit, p[:, None] + p[None, :], -np.inf)
    neg = -value.ravel()
    if k < len(neg):
        # only the k best are wanted: a partition, not a sort of all n^2 pairs
        top = np.argpartition(neg, k - 1)[:k]
        flat = top[np.lexsort((top, neg[top]))]
    else:
        flat = np.argsort(neg, kind="stable")
    flat = flat[np.isfinite(value.ravel()[flat])]
    rows = np.zeros((len(flat), n), dtype=np.int64)
    i, j = np.divmod(flat, n)
    np.add.at(rows, (np.arange(len(flat)), i), 1)
    np.add.at(rows, (np.arange(len(flat)), j), 1)
    return rows


class ExactPricer:
    """max pi.a s.t. sum_i S[i] a_i <= C[t], 0 <= a_i <= min(b_i, copies that fit), integer."""

    def __init__(self, prob: Problem, t: int):
        self.prob, self.t = prob, t
        C = prob.C[t]
        self.ub = np.minimum(prob.b, copies_in(C, prob.S)).astype(float)
        h = self.h = _silent(highspy.Highs())
        m = prob.m
        h.addVars(m, np.zeros(m), self.ub)
        h.changeColsIntegrality(m, np.arange(m, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * m))
        for d in range(prob.S.shape[1]):
            col = prob.S[:, d].astype(float)
            nz = np.flatnonzero(col)
            if len(nz):
                h.addRow(-INF, float(C[d]), len(nz), nz.astype(np.int32), col[nz])
        h.changeObjectiveSense(highspy.ObjSense.kMaximize)
        h.setOptionValue("mip_rel_gap", 1e-6)
        self.extra: list[np.ndarray] = []

    def solve(self, pi: np.ndarray, time_limit: float, floor: float = 0.0) -> tuple[np.ndarray | None, float, float]:
        """Return (best pattern or None, its value, proven upper bound on the best value).

        The branch and bound is tried first; HiGHS only when it runs out of nodes."""
        m = self.prob.m
        self.extra = []
        cand = np.flatnonzero((pi > EPS) & (self.ub > 0))
        if len(cand) == 0:
            return None, 0.0, 0.0
        a_c, val, done, pool = knapsack_bb(pi[cand], self.prob.S[cand], self.ub[cand].astype(np.int64),
                                           self.prob.C[self.t], floor, node_limit=KNAP_NODES)
        for sol in (pool[:-1] if done else pool):
            a = np.zeros(m, dtype=np.int64)
            a[cand] = sol
            self.extra.append(a)
        if done:
            if a_c is None:
                return None, 0.0, floor
            a = np.zeros(m, dtype=np.int64)
            a[cand] = a_c
            return a, val, val
        idx = np.arange(m, dtype=np.int32)
        useful = pi > EPS
        self.h.changeColsCost(m, idx, np.where(useful, pi, 0.0))
        # items worth nothing are fixed out, which shrinks the search a lot
        self.h.changeColsBounds(m, idx, np.zeros(m), np.where(useful, self.ub, 0.0))
        self.h.setOptionValue("time_limit", max(0.01, time_limit))
        self.h.run()
        info = self.h.getInfo()
        status = self.h.getModelStatus()
        upper = float(np.sum(pi[useful] * self.ub[useful]))
        if status == highspy.HighsModelStatus.kOptimal:
            upper = min(upper, max(info.mip_dual_bound, info.objective_function_value))
        elif np.isfinite(info.mip_dual_bound) and info.mip_dual_bound < 1e30:
            upper = min(upper, info.mip_dual_bound)
        if info.primal_solution_status < 2:
            return None, 0.0, upper
        a = self._pattern(self.h.getSolution().col_value)
        if a is None:
            return None, 0.0, upper
        return a, float(a @ pi), upper

    def _pattern(self, values) -> np.ndarray | None:
        """A MIP solution as a pattern, None if rounding broke a capacity."""
        a = np.clip(np.round(np.array(values)).astype(np.int64), 0, self.ub.astype(np.int64))
        return None if np.any(prob_load(self.prob, a) > self.prob.C[self.t]) else a


def copies_in(C: np.ndarray, S: np.ndarray) -> np.ndarray:
    """How many copies of each item (rows of ``S``) fit alone in capacity ``C``."""
    big = np.iinfo(np.int64).max // 4
    with np.errstate(divide="ignore"):
        q = np.where(S > 0, C[None, :] // np.where(S > 0, S, 1), big)
    return q.min(axis=1) if S.shape[1] else np.full(len(S), big)


def prob_load(prob: Problem, a: np.ndarray) -> np.ndarray:
    return a @ prob.S


class ColumnGeneration:
    """Runs the column generation; keeps the best proven lower bound and the columns."""

    def __init__(self, prob: Problem, phase1: bool = False):
        self.prob = prob
        self.master = Master(prob, phase1)
        self.pricers: dict[int, ExactPricer] = {}
        self.costs = np.zeros(prob.T) if phase1 else prob.cost.astype(float)
        self.bound = 0.0
        self.lp_optimal = False
        self.iterations = 0
        self.exact_calls = 0
        self.mispricings = 0

    def seed(self, packing: Packing | None) -> None:
        """Start from the columns of a packing plus one single-type column per item,
        and (outside phase 1) the fullest bins the greedy pricer finds at volume prices.

        The master's first duals are extreme (an item is worth a whole bin or
        nothing) and the first rounds barely move its value: full bins from the
        start shorten that (class1_500_3_0: 42 rounds to the greedy-priced LP
        optimum from the best greedy packing's bins, 24 from these)."""
        if packing:
            for t, a, _ in packing:
                self.master.add(t, a)
        if not self.master.phase1:
            vol = self.volume_duals()
            for t in np.flatnonzero(self.prob.maxc > 0):
                for a in price_greedy(self.prob, int(t), vol, 0.0, max(20, self.prob.m // 3)):
                    self.master.add(int(t), a)
        fits = self.prob.fits()
        for i in range(self.prob.m):
            ok = np.flatnonzero(fits[i] & (self.prob.maxc > 0))
            if len(ok) == 0:
                continue
            t = int(ok[np.argmin(self.costs[ok])])
            a = np.zeros(self.prob.m, dtype=np.int64)
            a[i] = min(int(self.prob.b[i]), int(max_copies(self.prob.C[t:t + 1], self.prob.S[i])[0]))
            self.master.add(t, a)

    def price(self, pi: np.ndarray, mu: np.ndarray, demand: np.ndarray | None = None,
              deadline: float = np.inf, at: tuple[np.ndarray, np.ndarray] | None = None) -> int:
        """Add the greedy pricer's improving columns; return how many were new and improving.

        ``at`` (smoothed duals) is where the pricer searches; a column counts only
        when it improves the LP at ``pi``, ``mu`` (none: a mispricing).
        Hundreds of bin types (a drain check's distinct free spaces) make one round
        long: it stops at the deadline with the columns found so far."""
        prob, added = self.prob, 0
        ps, ms = at if at is not None else (pi, mu)
        for t in range(prob.T):
            if added and time.monotonic() > deadline:
                break
            if prob.maxc[t] > 0:
                thr = self.costs[t] - mu[t]
                for a in price_greedy(prob, t, ps, self.costs[t] - ms[t], max(20, prob.m // 3), demand):
                    if self.master.add(t, a) is not None and float(a @ pi) > thr + EPS:
                        added += 1
        return added

    def price_exact(self, pi: np.ndarray, mu: np.ndarray, deadline: float) -> tuple[int, np.ndarray]:
        """Exact pricing for every bin type: (new columns, upper bounds V_t on pattern values)."""
        prob, added = self.prob, 0
        V = np.zeros(prob.T)
        budget = EXACT_SHARE * max(0.0, deadline - time.monotonic())
        for t in range(prob.T):
            if prob.maxc[t] <= 0:
                continue
            pricer = self.pricers.get(t) or self.pricers.setdefault(t, ExactPricer(prob, t))
            self.exact_calls += 1
            thr = self.costs[t] - mu[t]
            a, val, V[t] = pricer.solve(pi, max(0.02, budget / max(1, prob.T)), thr)
            if a is not None and val > thr + EPS:
                added += self.master.add(t, a) is not None
            # the other improving patterns the search met are good columns too
            for extra in pricer.extra:
                added += self.master.add(t, extra) is not None
        return added, V

    def run(self, deadline: float, stop_at: float = np.inf, step: float | None = None) -> None:
        """Generate columns until the LP is optimal, the deadline passes, or the
        rounded bound reaches ``stop_at`` (an incumbent's cost: nothing left to prove).

        The duals of a degenerate master jump from one extreme point to another;
        pricing at a smoothed point between them and the previous one (Wentges'
        smoothing, started from duals proportional to the item volumes) finds
        columns that stay useful, so far fewer rounds reach the LP optimum."""
        prob, m = self.prob, self.master
        center = [self.volume_duals(), np.zeros(prob.T)] if SMOOTHING > 0 and not m.phase1 else None
        while time.monotonic() < deadline:
            self.iterations += 1
            pi, mu = m.solve()
            if center is not None and self._price_smoothed(pi, mu, center, deadline):
                continue
            if self.price(pi, mu, deadline=deadline):
                continue
            # no greedy column: exact pricing, which also yields a proven bound
            added, V = self.price_exact(pi, mu, deadline)
            self.bound = max(self.bound, dual_bound(prob, pi, mu, V, self.costs))
            proven = bool(np.all(V + mu <= self.costs + EPS))
            if not added:
                self.lp_optimal = proven
                if proven and not m.phase1:
                    self.bound = max(self.bound, m.value * (1 - 1e-9))
                return
            rounded = round_up(self.bound, step)
            if rounded >= stop_at - 1e-9 or (step is not None and rounded >= round_up(m.value, step) - 1e-9):
                m.solve()
                return
        m.solve()

    def _price_smoothed(self, pi: np.ndarray, mu: np.ndarray, center: list, deadline: float) -> bool:
        """Price at points between the stability ``center`` and the LP duals, halving the
        weight of the center after each mispricing; the center moves to the point
        that gave columns. False when none did (the caller prices at the duals)."""
        alpha = SMOOTHING
        while alpha >= MIN_SMOOTHING:
            at = (alpha * center[0] + (1 - alpha) * pi, alpha * center[1] + (1 - alpha) * mu)
            if self.price(pi, mu, deadline=deadline, at=at):
                center[:] = at
                return True
            self.mispricings += 1
            alpha /= 2
        return False

    def volume_duals(self) -> np.ndarray:
        """Dual-feasible prices from item volumes: a convex mix of size / capacity over
        the dimensions (weighted by how full each is) never prices a bin above its cost."""
        prob = self.prob
        cap = np.maximum(prob.C.max(axis=0), 1).astype(float)
        X = prob.S / cap
        w = prob.b @ X
        w = w / w.sum() if w.sum() > 0 else np.full(X.shape[1], 1.0 / max(1, X.shape[1]))
        return (X @ w) * float(prob.cost.min())

    def set_residual(self, demand: np.ndarray, avail: np.ndarray) -> None:
        """Make the master cover ``demand`` with at most ``avail`` bins per limited type."""
        m = self.master
        m.rows_changed = True
        for i in range(self.prob.m):
            m.h.changeRowBounds(i, float(demand[i]), INF)
        for t, r in m.limited_rows.items():
            m.h.changeRowBounds(r, -INF, float(avail[t]))

    def settle(self, demand: np.ndarray, avail: np.ndarray, deadline: float, max_rounds: int) -> None:
        """Re-optimize the LP for a residual ``demand`` with greedy pricing only (diving)."""
        m = self.master
        self.set_residual(demand, avail)
        for _ in range(max_rounds):
            pi, mu = m.solve()
            if time.monotonic() >= deadline or not self.price(pi, mu, demand, deadline):
                return
        m.solve()
