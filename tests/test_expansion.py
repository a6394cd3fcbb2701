"""Expansion on an installed base: hand-checked additions, the CRUSH bound on the mixed fleet, bad input.

Every test solves real models with the real HiGHS solver; the installed base is itself a
blueprint `cloudplan size` wrote. The catalog is test_sizing's: no energy, support or
space costs, so every TCO is capex and can be checked on paper.
"""

from __future__ import annotations

import pytest
from cloudplan.blueprint import Blueprint, NodeRole
from cloudplan.catalog import load_catalog
from cloudplan.errors import Infeasible, SpecError
from cloudplan.io import load_model, write_model
from cloudplan.sizing import crush
from cloudplan.sizing.capacity import domain_capacities
from cloudplan.sizing.expansion import expand_cloud, grown
from cloudplan.sizing.plan import size_cloud
from cloudplan.sizing.tiers import tier_demands
from tests.test_cli import run
from tests.test_sizing import workload, write_catalog

SSD4 = {"name": "ssd4", "tier": "ssd", "bay": "sata", "capacity_tb": 4, "iops": 90000, "throughput_mbps": 500,
        "price_usd": 300, "power_w": 0}


def vms(count: int):
    return workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": count}])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The 10-VM cloud of test_sizing's first test: 5 hosts of 256 GiB (3 VMs each), 3 controllers."""
    d = tmp_path_factory.mktemp("installed")
    bp = size_cloud(vms(10), load_catalog(write_catalog(d / "cat")))
    assert [(g.role, g.ram_gib, g.count) for g in bp.nodes if g.role == NodeRole.compute] == [
        (NodeRole.compute, 256, 5)]
    return bp


def kept_and_new(bp):
    old = [(g.role.value, g.ram_gib, g.count) for g in bp.nodes if not g.new]
    new = [(g.role.value, g.ram_gib, g.count) for g in bp.nodes if g.new]
    return old, new


def test_one_more_host_of_the_kind_installed(installed, tmp_path):
    """13 VMs: 5 hosts hold 15 but only 12 with one lost; a sixth 256 GiB host ($4,800) keeps 15 with
    one lost. A 512 GiB host ($7,200) would do too, dearer. Nothing else is bought but the new host's
    cables: two 25G DACs ($35 each) to the leaves and a Cat6 lead ($6) for its BMC."""
    cat = load_catalog(write_catalog(tmp_path / "cat"))
    bp = expand_cloud(vms(13), cat, installed)
    old, new = kept_and_new(bp)
    assert old == [("compute", 256, 5), ("control", 512, 3)]
    assert new == [("compute", 256, 1)]
    e = bp.expansion
    assert (e.added_nodes, e.added_racks, e.added_switches) == (1, 0, {})
    assert e.capex_usd == pytest.approx(4800 + 76) and e.tco_usd == pytest.approx(4876, abs=0.01)
    assert bp.placement.feasible and bp.placement.feasible_degraded
    # The first MILP's bound (no host bought) is all that holds for every plan: no optimality is claimed.
    assert bp.status == "feasible" and bp.catalog_gap > 0.5
    # The whole cloud is priced: the installed nodes at what they were bought for.
    assert bp.cost.capex_usd == pytest.approx(installed.cost.capex_usd + 4876)


def test_a_new_kind_wins_when_it_is_cheaper(installed, tmp_path):
    """Prices moved: 64 GiB DIMMs at $150 make a 512 GiB host $5,200 (4 VMs, vCPU-bound) against $4,800
    for 256 GiB (3 VMs). 27 VMs on 5 installed 256 GiB hosts (15 VMs):
    - more 256 GiB hosts: 5 + n - 1 >= 9 hosts left with one lost -> n = 5, $24,000;
    - 512 GiB hosts: losing one (the largest, 4 VMs) leaves 15 + 4k - 4 >= 27 -> k = 4, $20,800
      (k = 3 gives 23); losing a 256 GiB host leaves 12 + 16 = 28.
    The aggregate MILP first buys 4 x 256 GiB (its totals carry 27.7 VMs); the exact placement
    refuses it and the repair lets the 512 GiB build win. With --prefer-fleet-skus: 5 x 256 GiB.
    Each new host also brings its cables ($76: two 25G DACs and a Cat6 lead)."""
    cat = load_catalog(write_catalog(tmp_path / "cat", dimms=((32, 100), (64, 150))))
    bp = expand_cloud(vms(27), cat, installed)
    assert kept_and_new(bp)[1] == [("compute", 512, 4)]
    assert bp.expansion.capex_usd == pytest.approx(20800 + 4 * 76)
    assert bp.placement.feasible_degraded
    same = expand_cloud(vms(27), cat, installed, prefer_fleet_skus=True)
    assert kept_and_new(same)[1] == [("compute", 256, 5)]
    assert same.expansion.capex_usd == pytest.approx(24000 + 5 * 76)
    assert same.expansion.prefer_fleet_skus


def test_storage_growth_meets_the_crush_bound_on_the_mixed_fleet(tmp_path):
    """10 TiB usable on SSD (3 replicas) grows to 15 TiB: the grown fleet, old and new hosts together,
    holds each copy on distinct hosts with the largest host lost (crush.holds, independent of the MILP)."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    small = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 1}],
                     storage=[{"tier": "ssd", "usable_tib": 10}])
    base = size_cloud(small, cat)
    more = grown(small, 1.5)
    bp = expand_cloud(more, cat, base)
    (td,) = tier_demands(more)
    caps = domain_capacities(bp, td.tier)
    assert crush.holds(crush.without_largest(caps), td.copies, td.per_copy_tib)
    assert bp.capacity.tiers[0].offered_usable_tib_degraded >= 15 - 1e-6
    assert bp.expansion.added_nodes >= 1
    before = sorted((g.key, g.count) for g in base.nodes)
    assert sorted((g.key, g.count) for g in bp.nodes if not g.new) == before
    # Without the new hosts the grown demand does not hold: the addition is needed.
    old_caps = domain_capacities(base, td.tier)
    assert not crush.holds(crush.without_largest(old_caps), td.copies, td.per_copy_tib)


def test_installed_hardware_missing_from_the_catalog_is_named(installed, tmp_path):
    cat = load_catalog(write_catalog(tmp_path / "cat"))
    bad = installed.model_copy(deep=True)
    bad.nodes[0].cpu = "cpu-gone"
    with pytest.raises(SpecError) as e:
        expand_cloud(vms(13), cat, bad, source="bp.yaml")
    assert "cpu-gone" in str(e.value) and e.value.field == "nodes[0].cpu" and e.value.path == "bp.yaml"


def test_rack_failure_domain_is_refused_with_the_reason(installed, tmp_path):
    cat = load_catalog(write_catalog(tmp_path / "cat"))
    wl = workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": 13}],
                  policy={"failure_domain": "rack", "controller_min_cores": 16, "controller_min_ram_gib": 256})
    with pytest.raises(Infeasible, match="failure_domain: host"):
        expand_cloud(wl, cat, installed)


@pytest.mark.parametrize("policy", [{"network_nodes": 2}, {"converged_control_plane": True}])
def test_network_nodes_and_a_converged_control_plane_are_refused_with_the_reason(installed, tmp_path, policy):
    cat = load_catalog(write_catalog(tmp_path / "cat"))
    wl = workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": 13}],
                  policy={"controller_min_cores": 16, "controller_min_ram_gib": 256, **policy})
    with pytest.raises(Infeasible, match="size the grown cloud anew"):
        expand_cloud(wl, cat, installed)


def test_cli_writes_the_whole_cloud_with_the_new_nodes_marked(installed, tmp_path, capsys):
    cat_dir = write_catalog(tmp_path / "cat")
    bp_path, out_path, wl_path = tmp_path / "bp.yaml", tmp_path / "grown.yaml", tmp_path / "wl.yaml"
    write_model(installed, bp_path)
    write_model(vms(13), wl_path)
    code, out, err = run(capsys, "size", wl_path, "--installed", bp_path, "--profiles", cat_dir, "-o", out_path)
    assert code == 0, err
    assert "Addition to t" in out and "$4,800" in out
    bp = load_model(Blueprint, out_path)
    assert [(g.ram_gib, g.count, g.new) for g in bp.nodes if g.role == NodeRole.compute] == [(256, 5, False),
                                                                                           (256, 1, True)]
    assert all(g.purchased_on == installed.catalog_date for g in bp.nodes if not g.new)
    code, _, err = run(capsys, "size", wl_path, "--prefer-fleet-skus")
    assert code == 2 and "--prefer-fleet-skus needs --installed" in err
