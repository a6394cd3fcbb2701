"""Racks as built: peak power against derated feeds, one rack model per plan, and plans that
lay out rack by rack (hand-checked)."""

from __future__ import annotations

import yaml

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import load_catalog
from cloudplan.layout import elevation
from cloudplan.sizing.options import storage_options
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Tier
from tests.test_sizing import SPINE, workload, write_catalog

HDD = {"name": "hdd4", "tier": "hdd", "bay": "sata", "capacity_tb": 4, "iops": 150, "throughput_mbps": 200,
       "price_usd": 100, "power_w": 8}


def _racks(d, budget_w: float) -> None:
    doc = {"racks": [{"name": "rack", "height_u": 42, "power_budget_w": budget_w, "price_usd": 500}]}
    (d / "racks.yaml").write_text(yaml.safe_dump(doc))


def test_peak_power_is_cpus_at_tdp_and_drives_spinning_up(tmp_path):
    """cpu8 (100 W TDP), base 0 W, DIMMs 0 W, load factor 0.01: typical 1 W + drives at 8 W;
    peak 100 W + drives at 3 x 8 W (the HDD spin-up default)."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[HDD]))
    wl = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 1}])
    o = next(o for o in storage_options(wl, cat, {Tier.hdd}) if o.drive_count == 4)
    assert (o.power_w, o.peak_power_w) == (1 + 4 * 8, 100 + 4 * 24)
    assert cat.racks[0].usable_power_w == 0.8 * cat.racks[0].power_budget_w


def test_a_plan_that_only_fits_with_one_more_rack(tmp_path):
    """Nodes draw 100 W at peak; a rack's feed is 437.5 W, 350 W derated: 3 nodes per rack.
    18 VMs of 16 vCPU / 64 GiB on 256 GiB hosts (3 each) need 6 + 1 = 7 hosts, with 3 controllers
    10 nodes: 1,000 W fits the totals of 3 racks (1,050 W), but no rack takes a fourth node, so the
    plan that lays out has 4 racks."""
    d = write_catalog(tmp_path / "cat", spines=[SPINE])
    _racks(d, 437.5)
    bp = size_cloud(workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": 18}]), load_catalog(d))
    (g,) = bp.nodes_by_role(NodeRole.compute)
    assert (g.count, g.ram_gib, bp.node_count) == (7, 256, 10)
    assert bp.racks_count == 4
    assert any("did not lay out" in n for n in bp.notes)
    inv = elevation(bp)
    for r in inv.racks:
        assert sum(n.height_u for n in inv.nodes if n.rack == r.name) <= 37
        assert sum(100 for n in inv.nodes if n.rack == r.name) <= 350


def test_every_plan_uses_one_rack_model(tmp_path):
    """Two rack models: the plan racks one of them only (the layout deals nodes evenly)."""
    from cloudplan.io import validate
    from cloudplan.spec import Workload
    from pathlib import Path
    wl = validate(Workload, yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "large.yaml")
                                           .read_text()))
    bp = size_cloud(wl, load_catalog())
    assert len(bp.racks) == 1
    elevation(bp)     # lays out: raises otherwise
