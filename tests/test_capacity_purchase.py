"""`cloudplan capacity --next-purchase`: the expansion sizing run on the live use, grown.

The snapshots are test_capacity's (real CLI formats): 20 m1.small and 10 r1.large instances
in the newest, vCPU and NVMe use doubled in the year between the two (fitted growth 100 %),
10 usable TiB on NVMe. The installed blueprint is sized by `cloudplan size` on a small
catalog priced by hand; the addition by the real MILP (HiGHS).
"""

from __future__ import annotations

import json

import pytest
import yaml

from cloudplan.catalog import load_catalog
from cloudplan.cli import main
from cloudplan.day2 import forecast
from cloudplan.day2.next_purchase import next_purchase, purchase_workload
from cloudplan.io import validate, write_model
from cloudplan.sizing.expansion import expand_cloud
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Workload
from test_capacity import NEW, OLD, _load
from test_sizing import write_catalog

NVME4 = {"name": "nvme4", "tier": "nvme", "bay": "nvme", "capacity_tb": 4, "iops": 500000,
         "throughput_mbps": 3000, "price_usd": 400, "power_w": 0}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    d = write_catalog(tmp_path_factory.mktemp("cat"), drives=[NVME4])
    servers = yaml.safe_load((d / "servers.yaml").read_text())
    servers["chassis"][0]["bays"] = {"nvme": 4}
    (d / "servers.yaml").write_text(yaml.safe_dump(servers))
    cat = load_catalog(d)
    wl = validate(Workload, {"name": "cloud-a", "horizon_years": 1, "growth_per_year": 0.25,
                             "flavors": [{"name": "m1.small", "vcpus": 1, "ram_gib": 2, "count": 20},
                                         {"name": "r1.large", "vcpus": 8, "ram_gib": 32, "count": 10}],
                             "storage": [{"tier": "nvme", "usable_tib": 5}],
                             "policy": {"controller_min_cores": 16, "controller_min_ram_gib": 256}})
    return size_cloud(wl, cat), cat, d


def test_the_workload_is_todays_use_grown_at_the_fitted_rates(installed):
    bp, _, _ = installed
    report = forecast(bp, [_load(OLD), _load(NEW)])
    wl, notes = purchase_workload(bp, report, years=1.0)
    assert {f.name: f.count for f in wl.flavors} == {"m1.small": 20, "r1.large": 10}
    assert wl.growth_per_year == pytest.approx(1.0) and wl.horizon_years == 1.0
    assert {f.name: wl.grown_count(f) for f in wl.flavors} == {"m1.small": 40, "r1.large": 20}
    (s,) = wl.storage
    assert wl.grown_storage(s).usable_tib == pytest.approx(20.0)     # 10 TiB used, doubled
    assert notes == []


def test_the_purchase_carries_the_grown_use_with_a_host_lost(installed):
    bp, cat, _ = installed
    report = forecast(bp, [_load(OLD), _load(NEW)])
    p = next_purchase(bp, report, cat, years=1.0)
    assert p.vms_sized == 60 and p.usable_tib_sized == {"nvme": 20.0}
    assert p.lines and p.capex_usd > 0
    # the same sizing, read as a whole cloud: N+1 holds on the mixed fleet
    wl, _ = purchase_workload(bp, report, years=1.0)
    grown = expand_cloud(wl, cat, bp)
    assert grown.placement.feasible_degraded
    assert grown.capacity.tiers[0].offered_usable_tib_degraded >= 20.0 - 1e-6
    assert sum(n.count for n in grown.nodes if n.new) == sum(x.count for x in p.lines)


def test_cli_reports_the_next_purchase_in_json_and_markdown(installed, tmp_path, capsys):
    bp, _, cat_dir = installed
    path = write_model(bp, tmp_path / "bp.yaml")
    args = ["capacity", str(path), str(OLD), str(NEW), "--next-purchase", "1", "--profiles", str(cat_dir)]
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["next_purchase"]["vms_sized"] == 60 and data["next_purchase"]["lines"]
    assert main(args + ["-o", str(tmp_path / "c.md")]) == 0
    md = (tmp_path / "c.md").read_text()
    assert "## Next purchase" in md and "60 instances, 20 usable TiB on nvme" in md
    assert main(args + ["-o", str(tmp_path / "c.html")]) == 0
    assert "<h2>Next purchase</h2>" in (tmp_path / "c.html").read_text()
