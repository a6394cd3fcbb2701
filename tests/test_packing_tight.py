"""Tight instances: the generated triplet family and the low-waste enumeration.

The optimum of a triplet instance is n / 3 by construction (the volume bound, and
the planted triplets reach it); the small cases with a proof are checked against
the brute force of :mod:`test_packing`, which shares no code with the engine.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_packing import brute_force, check_fits

from cloudplan.sizing import vbp
from cloudplan.sizing.packing import BinType, ItemType, pack


def test_triplet_instances_are_seeded_and_tight():
    a, b = vbp.triplet_instance(5, 60, 3), vbp.triplet_instance(5, 60, 3)
    assert a.items == b.items and a.items != vbp.triplet_instance(5, 60, 4).items
    S = np.array([it.size for it in a.items])
    cap = vbp.TRIPLET_CAPACITY
    # strictly between a quarter and a half: no bin holds four items, three fill it
    assert S.min() > cap / 4 and S.max() < cap / 2
    assert (S.sum(axis=0) == 20 * cap).all() and a.n_items == 60
    assert vbp.parse_vbp(vbp.format_vbp(a), a.name).items == a.items
    with pytest.raises(vbp.CloudplanError, match="multiple of 3"):
        vbp.triplet_instance(3, 61, 0)


@pytest.mark.parametrize("d, n, seed", [(3, 60, 0), (5, 120, 1), (10, 249, 2), (3, 498, 3)])
def test_triplets_reach_the_known_optimum(d, n, seed):
    inst = vbp.triplet_instance(d, n, seed)
    bins = [BinType("bin", inst.capacity, 1.0)]
    r = pack(inst.items, bins, time_limit_s=5)
    check_fits(r, inst.items, bins)
    assert r.lower_bound <= n // 3
    assert r.bins == n // 3 and r.optimal
    # every bin of an optimum is an exactly full triplet
    assert all(sum(p.items.values()) == 3 for p in r.patterns)


def test_no_exact_cover_proves_one_more_bin():
    # capacity 20: 9, 9, 9, 7, 6 have volume 40 (2 bins) but no three of them (no bin
    # takes four) fill a bin exactly, so 2 bins are impossible; the optimum is 3
    items = [ItemType("a", (9,), 3), ItemType("b", (7,), 1), ItemType("c", (6,), 1)]
    bins = [BinType("bin", (20,))]
    r = pack(items, bins, time_limit_s=5)
    check_fits(r, items, bins)
    assert r.stats["simple_bound"] == 2 and r.stats["tight"] == "proof"
    assert r.lower_bound == 3 == r.bins and r.optimal
    assert brute_force(items, bins) == 3


@st.composite
def at_most_three_per_bin(draw):
    """One bin type whose every item exceeds a quarter of it in some dimension."""
    d = draw(st.integers(1, 2))
    cap = tuple(draw(st.integers(12, 24)) for _ in range(d))
    items = []
    for k in range(draw(st.integers(3, 4))):
        size = tuple(draw(st.integers(c // 4 + 1, c // 2)) for c in cap)
        items.append(ItemType(f"i{k}", size, draw(st.integers(1, 3))))
    return items, [BinType("bin", cap, float(draw(st.integers(1, 3))))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at_most_three_per_bin())
def test_tight_bound_never_exceeds_brute_force(inst):
    """Most of these the greedy already solves; the rest go through the enumeration,
    whose proofs (a raised bound) must agree with the brute force."""
    items, bins = inst
    opt = brute_force(items, bins)
    r = pack(items, bins, time_limit_s=3)
    check_fits(r, items, bins)
    assert r.lower_bound <= opt + 1e-6 <= r.cost + 2e-6
    if r.optimal:
        assert r.cost == pytest.approx(opt)


def test_bench_generates_the_family_and_reports_it():
    sources = vbp.triplet_sources(dims=(3,), sizes=(60,), seeds=2)
    assert [n for n, _ in sources] == ["triplet_60_3_0.vbp", "triplet_60_3_1.vbp"]
    runs = vbp.run_benchmark([], time_limit_s=5, extra=sources)
    table = vbp.compare_known(runs, vbp.triplet_known(sources))
    assert table[0]["class"] == "triplet" and table[0]["known"] == 2
    assert table[0]["at_opt"] == 2 and table[0]["mean_gap_pct"] == 0
