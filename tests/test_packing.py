"""The packing engine on instances whose optimum is known by hand or by brute force.

Every result is re-checked by :func:`check_fits`, written here independently of
the library's ``verify``: no bin over capacity in any dimension, every item
placed exactly ``count`` times, no bin type used beyond ``max_count``.
"""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudplan.errors import CloudplanError, Infeasible, SolverError
from cloudplan.sizing.packing import (BinType, ItemType, PackingResult, Pattern, fill, lower_bound, pack, place,
                                      verify)


def check_fits(result: PackingResult, items: list[ItemType], bins: list[BinType]) -> None:
    size = {it.name: it.size for it in items}
    cap = {b.name: b for b in bins}
    placed = {it.name: 0 for it in items}
    used: dict[str, int] = {}
    for p in result.patterns:
        assert p.multiplicity >= 1
        for d, c in enumerate(cap[p.bin_type].capacity):
            assert sum(n * size[name][d] for name, n in p.items.items()) <= c, (p, d)
        for name, n in p.items.items():
            placed[name] += n * p.multiplicity
        used[p.bin_type] = used.get(p.bin_type, 0) + p.multiplicity
    assert placed == {it.name: it.count for it in items}
    assert used == {k: v for k, v in result.bins_by_type.items() if v}
    for name, n in used.items():
        assert cap[name].max_count is None or n <= cap[name].max_count
    assert result.cost == pytest.approx(sum(cap[p.bin_type].cost * p.multiplicity for p in result.patterns))
    verify(result, items, bins)


def test_complementary_flavors_share_hosts():
    """A = (6 vCPU, 4 GiB) and B = (4, 6), two of each, hosts (10, 10): A+A and B+B
    overflow a dimension, A+B fills a host exactly, so the optimum is 2 hosts
    (and the volume bound 20/10 = 2 proves it)."""
    items = [ItemType("A", (6, 4), 2), ItemType("B", (4, 6), 2)]
    bins = [BinType("host", (10, 10))]
    r = pack(items, bins)
    check_fits(r, items, bins)
    assert r.bins == 2 and r.optimal and r.status == "optimal" and r.lower_bound == 2
    assert all(p.items == {"A": 1, "B": 1} for p in r.patterns)


def test_aggregate_arithmetic_is_not_enough():
    """Four VMs of 6 vCPU on 10-vCPU hosts with plenty of RAM: total vCPU 24 says
    3 hosts, but no host holds two of them, so 4 are needed; the pairwise-conflict
    bound proves 4."""
    items = [ItemType("big", (6, 1), 4)]
    bins = [BinType("host", (10, 100))]
    assert lower_bound(items, bins) == 4
    r = pack(items, bins)
    check_fits(r, items, bins)
    assert r.bins == 4 and r.optimal


def test_lp_bound_beats_volume_bound():
    """Five items (4, 4) in hosts (10, 10): the volume bound says 80/100 -> 1 host,
    no pair conflicts, but a host holds at most 2 (3 x 4 > 10), so 3 hosts are
    optimal; only the pattern LP (5/2 = 2.5 -> 3) proves it."""
    items = [ItemType("m", (4, 4), 5)]
    bins = [BinType("host", (10, 10))]
    r = pack(items, bins)
    check_fits(r, items, bins)
    assert r.bins == 3 and r.lower_bound == 3 and r.optimal


def test_cheaper_mix_of_bin_types():
    """Five (4, 4) VMs; small host (4, 4) costs 1 and holds 1, large host (16, 16)
    costs 3 and holds 4. Options: 5 small = 5, 2 large = 6, 1 large + 1 small = 4:
    the optimum is 4."""
    items = [ItemType("m", (4, 4), 5)]
    bins = [BinType("small", (4, 4), 1.0), BinType("large", (16, 16), 3.0)]
    r = pack(items, bins)
    check_fits(r, items, bins)
    assert r.cost == 4 and r.bins_by_type == {"small": 1, "large": 1} and r.optimal


def test_expensive_large_bins_are_avoided():
    """Same VMs, but the large host costs 5: five small hosts (cost 5) tie one large
    plus one small (5 + 1 = 6)? No: 5 < 6, so five small hosts are optimal."""
    items = [ItemType("m", (4, 4), 5)]
    bins = [BinType("small", (4, 4), 1.0), BinType("large", (16, 16), 5.0)]
    r = pack(items, bins)
    check_fits(r, items, bins)
    assert r.cost == 5 and r.bins_by_type == {"small": 5} and r.optimal


def test_max_count_respected():
    """Eight (4, 4) VMs, only one large host (cost 3, holds 4): 1 large + 4 small = 7
    beats 8 small, and the second large host that would make it 6 does not exist."""
    items = [ItemType("m", (4, 4), 8)]
    bins = [BinType("small", (4, 4), 1.0), BinType("large", (16, 16), 3.0, max_count=1)]
    r = pack(items, bins)
    check_fits(r, items, bins)
    assert r.cost == 7 and r.bins_by_type == {"small": 4, "large": 1} and r.optimal


def test_max_count_infeasible_is_proven():
    """Five (4, 4) VMs, two hosts (10, 10) each holding at most two: impossible, and
    neither volume nor pairwise conflicts show it; the LP does."""
    items = [ItemType("m", (4, 4), 5)]
    bins = [BinType("host", (10, 10), max_count=2)]
    with pytest.raises(Infeasible) as e:
        pack(items, bins, time_limit_s=5)
    assert "max_count" in str(e.value)


def test_item_fitting_no_bin_is_named():
    items = [ItemType("ok", (1, 1), 1), ItemType("huge", (2, 64), 1)]
    bins = [BinType("a", (8, 32)), BinType("b", (16, 48))]
    with pytest.raises(Infeasible) as e:
        pack(items, bins)
    assert "huge" in str(e.value) and "dimension 1" in str(e.value)


def test_bad_input_is_a_cloudplan_error():
    with pytest.raises(CloudplanError):
        pack([ItemType("x", (1,), 1)], [BinType("b", (1, 1))])
    with pytest.raises(CloudplanError):
        pack([ItemType("x", (1,), 1), ItemType("x", (1,), 2)], [BinType("b", (4,))])


def test_empty_items():
    r = pack([], [BinType("b", (4,))])
    assert r.bins == 0 and r.optimal and r.patterns == []


def test_verify_rejects_overload_and_missing_items():
    items = [ItemType("m", (6, 1), 2)]
    bins = [BinType("h", (10, 10))]
    over = PackingResult([Pattern("h", {"m": 2}, 1)], {"h": 1}, 1.0, 1.0, False, 0.0, "feasible")
    with pytest.raises(SolverError, match="dimension 0"):
        verify(over, items, bins)
    missing = PackingResult([Pattern("h", {"m": 1}, 1)], {"h": 1}, 1.0, 1.0, False, 0.0, "feasible")
    with pytest.raises(SolverError, match="placed 1 times"):
        verify(missing, items, bins)


# --- brute force ---------------------------------------------------------------

def brute_force(items: list[ItemType], bins: list[BinType]) -> float:
    """Minimum cost by dynamic programming over remaining counts: pick the content
    of one more bin among all feasible ones (unlimited bin types)."""
    sizes = [it.size for it in items]

    def fits(content: tuple[int, ...], cap: tuple[int, ...]) -> bool:
        return all(sum(c * s[d] for c, s in zip(content, sizes)) <= cap[d] for d in range(len(cap)))

    @functools.lru_cache(maxsize=None)
    def best(rem: tuple[int, ...]) -> float:
        if not any(rem):
            return 0.0
        out = float("inf")
        first = next(i for i, r in enumerate(rem) if r)
        for content in itertools.product(*[range(r + 1) for r in rem]):
            # the first remaining item goes into this bin: avoids symmetric orders
            if content[first] == 0:
                continue
            for b in bins:
                if fits(content, b.capacity):
                    out = min(out, b.cost + best(tuple(r - c for r, c in zip(rem, content))))
        return out

    return best(tuple(it.count for it in items))


@st.composite
def tiny_instances(draw):
    d = draw(st.integers(1, 3))
    n_bins = draw(st.integers(1, 2))
    bins = [BinType(f"b{k}", tuple(draw(st.integers(4, 10)) for _ in range(d)),
                    float(draw(st.integers(1, 4)))) for k in range(n_bins)]
    biggest = tuple(max(b.capacity[j] for b in bins) for j in range(d))
    n_items = draw(st.integers(1, 3))
    items = [ItemType(f"i{k}", tuple(draw(st.integers(0, biggest[j])) for j in range(d)), draw(st.integers(1, 3)))
             for k in range(n_items)]
    # every item must fit some bin type on its own
    items = [it for it in items if any(all(s <= c for s, c in zip(it.size, b.capacity)) for b in bins)]
    return items or [ItemType("i0", (1,) * d, 1)], bins


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_instances())
def test_matches_brute_force(inst):
    """The lower bound never exceeds the brute-force optimum; a result marked optimal
    equals it; any result costs at least the optimum and really fits."""
    items, bins = inst
    opt = brute_force(items, bins)
    r = pack(items, bins, time_limit_s=3)
    check_fits(r, items, bins)
    assert r.lower_bound <= opt + 1e-6
    assert r.cost >= opt - 1e-6
    if r.optimal:
        assert r.cost == pytest.approx(opt)


# --- scaling -------------------------------------------------------------------

def general_purpose_flavors(count: int) -> list[ItemType]:
    """50 flavors at 4 GiB per vCPU, sizes 2..16 vCPU: 20 of 2, then 10 each of 4, 8, 16
    vCPU, so one copy of each totals 320 vCPU and ``count`` copies fill
    ``count * 320 / 128`` large hosts exactly."""
    cpus = [2] * 20 + [4] * 10 + [8] * 10 + [16] * 10
    return [ItemType(f"f{k:02d}", (c, 4 * c), count) for k, c in enumerate(cpus)]


HOST_KINDS = [BinType("small", (32, 128), 2.0), BinType("mid", (64, 256), 3.0), BinType("large", (128, 512), 5.0)]


def test_scales_with_flavors_not_vm_count():
    """200 VMs (4 per flavor) need 10 large hosts (1280 vCPU / 128), cost 50; 20,000
    VMs (400 per flavor) need exactly 100 times that. The large host is the cheapest
    per vCPU, so the volume bound proves both optima."""
    small_items, big_items = general_purpose_flavors(4), general_purpose_flavors(400)
    small = pack(small_items, HOST_KINDS)
    big = pack(big_items, HOST_KINDS)
    check_fits(small, small_items, HOST_KINDS)
    check_fits(big, big_items, HOST_KINDS)
    assert sum(it.count for it in big_items) == 20_000
    assert small.optimal and big.optimal
    assert small.bins_by_type == {"large": 10} and small.cost == 50
    assert big.bins == 100 * small.bins and big.cost == 100 * small.cost
    # patterns carry counts: the answer's size follows the flavors, not the VM count
    assert len(big.patterns) <= 2 * len(big_items)


def test_hard_instance_returns_valid_answer_within_limit():
    """Complementary flavors (each pair fills a small host exactly) on three host
    kinds with non-integral costs: whatever is found in a short limit must fit and
    its bound must not exceed the volume optimum (25 large hosts, cost 97.5)."""
    items = []
    for k, (a, r) in enumerate([(3, 17), (7, 100), (12, 64), (20, 5), (25, 90), (30, 40), (9, 9), (16, 64)]):
        items += [ItemType(f"f{k}", (a, r), 5), ItemType(f"g{k}", (32 - a, 128 - r), 5)]
    bins = [BinType("small", (32, 128), 1.1), BinType("mid", (64, 256), 2.0), BinType("large", (128, 512), 3.9)]
    r = pack(items, bins, time_limit_s=1.5)
    check_fits(r, items, bins)
    # 40 pairs, 4 per large host: 10 large hosts cost 39, which nothing can beat
    assert r.lower_bound <= 39 + 1e-6 <= r.cost + 1e-6


# --- place ---------------------------------------------------------------------

def test_place_easy_case_uses_greedy():
    """Drain check shape: ~1000 free slots in 50 capacity kinds, 20 VMs of 3 flavors."""
    bins = [BinType(f"h{k}", (2 + (k * 7) % 40, 8 + (k * 29) % 200), 1.0, max_count=16 + k % 10) for k in range(50)]
    assert sum(b.max_count for b in bins) > 1000
    items = [ItemType("a", (4, 16), 8), ItemType("b", (8, 32), 6), ItemType("c", (2, 8), 6)]
    r = place(items, bins)
    assert r.status == "feasible" and r.stats["method"] == "greedy"
    check_fits(r, items, bins)


def test_place_needs_exact_model():
    """Two hosts of 10; VMs 4, 4, 3, 3, 3, 3: first fit decreasing puts 4+4 together
    and strands a 3, but 4+3+3 twice fills both hosts exactly."""
    items = [ItemType("four", (4, 1), 2), ItemType("three", (3, 1), 4)]
    bins = [BinType("h", (10, 10), max_count=2)]
    r = place(items, bins)
    assert r.status == "feasible" and r.stats["method"] == "exact"
    check_fits(r, items, bins)


def test_place_infeasible_by_lp():
    """Five (4, 4) VMs and two (10, 10) hosts: volume fits, no pair conflicts, yet a
    host holds two at most; the LP proves it and place() reports, not raises."""
    r = place([ItemType("m", (4, 4), 5)], [BinType("h", (10, 10), max_count=2)])
    assert r.status == "infeasible" and r.patterns == [] and "LP" in r.message


def test_place_infeasible_by_volume_and_fit():
    r = place([ItemType("m", (6, 6), 3)], [BinType("h", (10, 10), max_count=2)])
    assert r.status == "infeasible"
    r = place([ItemType("m", (11, 1), 1)], [BinType("h", (10, 10), max_count=5)])
    assert r.status == "infeasible" and "m" in r.message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fill_never_overfills_and_accounts_for_every_item(data):
    """``fill`` (the fast repair packing): whatever it places fits the bins that exist, and
    what it places plus what it returns as left over is exactly what was asked."""
    d = data.draw(st.integers(1, 3))
    bins = [BinType(f"b{j}", tuple(data.draw(st.integers(10, 60)) for _ in range(d)), 1.0 + j,
                    data.draw(st.integers(1, 6))) for j in range(data.draw(st.integers(1, 3)))]
    items = [ItemType(f"i{k}", tuple(data.draw(st.integers(1, 25)) for _ in range(d)), data.draw(st.integers(1, 60)))
             for k in range(data.draw(st.integers(1, 5)))]
    result, rest = fill(items, bins)
    size = {it.name: it.size for it in items}
    left = {it.name: it.count for it in rest}
    assert all(it.size == size[it.name] and 0 < it.count for it in rest)
    placed = [ItemType(it.name, it.size, it.count - left.get(it.name, 0)) for it in items]
    assert all(it.count >= 0 for it in placed)
    check_fits(result, [it for it in placed if it.count], bins)
    assert (result.status == "feasible") == (not rest)


def test_fill_places_a_dense_instance_a_greedy_fragments():
    """Two host kinds, 120 small VMs taking 83 % of the first dimension of the bins: fill places them all."""
    bins = [BinType("a", (60, 60), max_count=4), BinType("b", (40, 80), max_count=3)]
    items = [ItemType("x", (2, 3), 60), ItemType("y", (3, 2), 60)]   # 300 + 300 per dimension
    result, rest = fill(items, bins)
    assert not rest and result.status == "feasible"
    check_fits(result, items, bins)



def test_smoothed_column_generation_reaches_the_same_lp_optimum(monkeypatch):
    """Dual smoothing changes where the pricer looks, never the LP optimum or the
    bound's validity: with and without it the runs end at the same proven LP value."""
    import time

    from cloudplan.sizing.packing import cg, types

    items = [ItemType(f"f{k}", (2 + k % 5, 3 + (7 * k) % 6, 1 + (3 * k) % 4), 1 + k % 3) for k in range(12)]
    bins = [BinType("host", (10, 12, 8))]
    prob = types.to_problem(items, bins)
    bounds = {}
    for alpha in (0.0, 0.5):
        monkeypatch.setattr(cg, "SMOOTHING", alpha)
        run = cg.ColumnGeneration(prob)
        run.seed(None)
        run.run(time.monotonic() + 30)
        assert run.lp_optimal
        bounds[alpha] = run.bound
    assert bounds[0.5] == pytest.approx(bounds[0.0], rel=1e-6)
    r = pack(items, bins, time_limit_s=5)
    check_fits(r, items, bins)
    assert bounds[0.0] <= r.cost + 1e-6


def test_best_pairs_are_the_most_valuable_pairs_by_brute_force():
    """The pair starts of the greedy pricer are the k most valuable pairs that fit
    together (a pair of one item needs two copies available), checked against every pair."""
    import numpy as np

    from cloudplan.sizing.packing.cg import _best_pairs

    rng = np.random.default_rng(7)
    S = rng.integers(0, 7, size=(30, 3))
    p = rng.random(30)
    ub = rng.integers(1, 3, size=30)
    C = np.array([8, 8, 8])
    every = sorted((p[i] + p[j] for i in range(30) for j in range(i, 30)
                    if (i < j or ub[i] >= 2) and np.all(S[i] + S[j] <= C)), reverse=True)
    for k in (1, 10, 40, len(every) + 5):
        rows = _best_pairs(S, p, ub, C, k)
        assert np.all(rows.sum(axis=1) == 2) and np.all(rows <= ub) and np.all(rows @ S <= C)
        assert sorted(rows @ p, reverse=True) == pytest.approx(every[:k])


def test_greedy_pricer_patterns_fit_with_zero_sizes():
    """Items of size zero in some or all dimensions (the pricer divides only by the sizes
    an item uses): every pattern fits, respects the counts, and the best one is the
    brute-force optimum on an instance small enough to enumerate."""
    import itertools

    import numpy as np

    from cloudplan.sizing.packing import cg, types

    items = [ItemType("a", (4, 0), 3), ItemType("b", (0, 5), 2), ItemType("c", (3, 3), 2), ItemType("z", (0, 0), 2)]
    prob = types.to_problem(items, [BinType("host", (10, 10))])
    pi = np.array([0.45, 0.5, 0.4, 0.05])
    pats = cg.price_greedy(prob, 0, pi, 0.0, 50)
    assert pats
    for a in pats:
        assert np.all(a @ prob.S <= prob.C[0]) and np.all((0 <= a) & (a <= prob.b))
    best = max(float(np.array(a) @ pi) for a in itertools.product(*(range(int(c) + 1) for c in prob.b))
               if np.all(np.array(a) @ prob.S <= prob.C[0]))
    assert float(pats[0] @ pi) == pytest.approx(best)


def test_every_greedy_packing_seeds_the_master():
    """best_greedy hands every variant's bins to the pool (each a bin that fits), and the
    master seeded with them starts at least as low as from the best packing alone."""
    import time

    import numpy as np

    from cloudplan.sizing.packing import cg, heur, types

    items = [ItemType(f"f{k}", (2 + k % 5, 3 + (7 * k) % 6, 1 + (3 * k) % 4), 1) for k in range(40)]
    prob = types.to_problem(items, [BinType("host", (10, 12, 8))])
    pool: heur.Packing = []
    best = heur.best_greedy(prob, pool=pool)
    assert len(pool) > len(best)
    assert all(np.all(a @ prob.S <= prob.C[t]) for t, a, _ in pool)
    values = []
    for seed in (best, best + pool):
        run = cg.ColumnGeneration(prob)
        run.seed(seed)
        run.master.solve()
        values.append(run.master.value)
    assert values[1] <= values[0] + 1e-9
    run.run(time.monotonic() + 30)
    assert run.lp_optimal and run.bound <= heur.packing_cost(prob, best) + 1e-9
