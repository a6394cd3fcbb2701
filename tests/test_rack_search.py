"""The rack-count search of the rack failure domain: the cutoff that lets a probe stop when it
cannot beat the best plan (a real HiGHS solve of a hand-checkable model), the leaping walk to the
first plan, and the ranking that picks where the full MILP runs."""

from __future__ import annotations

import pytest

from cloudplan.catalog import load_catalog
from cloudplan.errors import Infeasible
from cloudplan.sizing import milp
from cloudplan.sizing.plan import _builder, _first_plan, _fixed, _rank_rack_counts, demand_for
from cloudplan.sizing.options import build_options
from tests.test_sizing import SPINE, workload, write_catalog


def _model(tmp_path, R: int):
    wl = workload(policy={"failure_domain": "rack", "controller_min_cores": 16, "controller_min_ram_gib": 256})
    cat = load_catalog(write_catalog(tmp_path / "cat", spines=[SPINE]))
    demand = demand_for(wl)
    options = build_options(wl, cat, set())
    fixed = _fixed(wl, cat, hypervisors=0)
    return lambda: _builder(wl, cat, demand, fixed, (cat.racks[0], R))(options)


def test_a_cutoff_below_the_optimum_finds_no_plan_and_above_it_the_optimum(tmp_path):
    """The same model three ways: without a cutoff, with the optimum plus a dollar (the same plan
    comes back), and with the optimum less a dollar (nothing can beat it: NoBetterPlan, which the
    search treats as "no better plan here")."""
    build = _model(tmp_path, 3)
    best = milp.solve(build(), gap=0.0)
    again = milp.solve(build(), gap=0.0, cutoff_usd=best.objective_usd + 1)
    assert again.objective_usd == pytest.approx(best.objective_usd) and again.counts == best.counts
    with pytest.raises(milp.NoBetterPlan):
        milp.solve(build(), gap=0.0, cutoff_usd=best.objective_usd - 1)
    assert issubclass(milp.NoBetterPlan, Infeasible)


def test_the_walk_leaps_to_the_first_plan():
    """Plans exist from 27 racks on: from 19 the walk probes 19, 20, 21, 23, 27 (steps 1, 1, 2, 4)."""
    seen = []

    def probe(R):
        seen.append(R)
        return object() if R >= 27 else None

    assert _first_plan(probe, 19, 200) == 27
    assert seen == [19, 20, 21, 23, 27]
    assert _first_plan(lambda R: None, 19, 22) is None


def test_ranking_is_by_restricted_cost_and_skips_counts_without_a_plan():
    class Sol:
        def __init__(self, usd):
            self.objective_usd = usd

    costs = {20: 5.0, 21: 3.0, 23: 4.0}

    def restricted(R):
        if R not in costs:
            raise Infeasible("no plan")
        return Sol(costs[R])

    assert _rank_rack_counts(restricted, [20, 21, 22, 23]) == [21, 23, 20]
