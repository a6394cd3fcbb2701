"""Honest optimality: a plan is "optimal" only against a bound that holds for the whole catalog,
and the bound it reports is one (checked against the full-catalog MILP where that solves)."""

from __future__ import annotations

from pathlib import Path

import yaml

from cloudplan.blueprint import summary
from cloudplan.catalog import load_catalog
from cloudplan.io import validate
from cloudplan.sizing import milp
from cloudplan.sizing.options import build_options
from cloudplan.sizing.plan import _builder, _fixed, _nic_checked, demand_for, size_cloud
from cloudplan.spec import Workload
from tests.test_sizing import workload, write_catalog

ROOT = Path(__file__).resolve().parents[1]


def test_all_configurations_seen_is_optimal_over_the_catalog(tmp_path):
    """No hyperconverged builds (no drives): the MILP sees every configuration, so its bound is the
    catalog's. 9 VMs of 16 vCPU / 64.5 GiB: 3 per 256 GiB host, 3 + 1 = 4 hosts ($19,200) against
    4 per 512 GiB host (vCPU), 3 + 1 = 4 hosts ($28,800); the totals agree with the placement."""
    bp = size_cloud(workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": 9}]),
                    load_catalog(write_catalog(tmp_path / "cat")))
    (g,) = [n for n in bp.nodes if n.role.value == "compute"]
    assert (g.count, g.ram_gib) == (4, 256)
    assert bp.optimal_over.startswith("solved over all")
    assert bp.status == "optimal" and bp.catalog_gap is not None and bp.catalog_gap <= 0.0005 + 1e-9
    s = summary(bp)
    assert s["optimality"]["catalog_gap"] == bp.catalog_gap and s["status"] == "optimal"


def test_the_catalog_bound_is_below_the_full_catalog_optimum():
    """The small example with every hyperconverged build: the full-catalog MILP solves here, and its
    optimum must lie between the reported catalog-wide bound and the plan."""
    wl = validate(Workload, yaml.safe_load((ROOT / "examples" / "small.yaml").read_text()))
    cat = load_catalog()
    bp = size_cloud(wl, cat)
    demand = demand_for(wl)
    tiers = set(demand.raw_tib)
    options, _ = _nic_checked(wl, cat, build_options(wl, cat, tiers), tiers)
    fixed = _fixed(wl, cat, bp.control_plane.hypervisors)
    full = milp.solve(_builder(wl, cat, demand, fixed)(options), "highs", 60, 1e-6)
    plan_usd = bp.catalog_lower_bound_usd / (1 - bp.catalog_gap) if bp.catalog_gap < 1 else float("inf")
    assert bp.catalog_lower_bound_usd <= full.objective_usd + 1e-3
    assert full.objective_usd <= plan_usd * (1 + 1e-6)


def test_a_repaired_plan_is_not_called_optimal_against_the_totals_bound(tmp_path):
    """The hand-checked repair of test_sizing (5 x 256 GiB, where totals say 4): the plan is optimal on
    paper, but the only catalog-wide bound is the totals MILP's, one host below; it is "feasible"."""
    bp = size_cloud(workload(), load_catalog(write_catalog(tmp_path / "cat")))
    assert bp.status == "feasible" and bp.catalog_gap > 0.0005


def test_a_plan_over_a_subset_is_not_called_optimal():
    """The medium example: the MILP sees a subset of the hyperconverged builds and the LP bound is far
    below the plan, so the plan is "feasible", with both gaps stated."""
    wl = validate(Workload, yaml.safe_load((ROOT / "examples" / "medium.yaml").read_text()))
    bp = size_cloud(wl, load_catalog())
    assert "of" in bp.optimal_over and "hyperconverged builds" in bp.optimal_over
    assert bp.status == "feasible" and bp.catalog_gap > bp.candidate_gap
    assert any("lower bound that holds for every plan over the whole catalog" in n for n in bp.notes)
