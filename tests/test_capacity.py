"""`cloudplan capacity`: the live cloud's use against its N+1 capacity, and the dates to buy by.

The snapshots under tests/data/capacity/cloud/ are in the formats the real CLIs
print (`openstack ... -f json`, osc-placement, `ceph df -f json`, `ceph osd df
tree -f json`), with figures chosen so every date below can be worked out by
hand (see each test's docstring).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudplan.blueprint import Blueprint
from cloudplan.cli import main
from cloudplan.day2 import forecast, load_snapshot
from cloudplan.errors import SpecError, UsageError
from cloudplan.io import write_model
from cloudplan.sizing.crush import max_per_copy

DATA = Path(__file__).parent / "data" / "capacity" / "cloud"
OLD, NEW = DATA / "2025-12-01", DATA / "2026-12-01"


def _blueprint(**policy) -> Blueprint:
    """The smallest blueprint the forecast reads: the workload's policy and growth."""
    workload = {"name": "cloud-a", "horizon_years": 3, "growth_per_year": 0.25,
                "flavors": [{"name": "m1.small", "vcpus": 1, "ram_gib": 2, "disk_gib": 20, "count": 10}],
                "storage": [{"tier": "nvme", "usable_tib": 5}], "policy": policy}
    return Blueprint.model_validate({
        "name": "cloud-a", "status": "optimal", "solver": "highs", "mip_gap": 0.0, "solve_seconds": 1.0,
        "catalog_date": "2026-11-01", "racks_count": 2, "nodes": [], "switches": [], "racks": [],
        "capacity": {"demanded_vcpus": 0, "offered_vcpus": 0, "offered_vcpus_degraded": 0, "demanded_ram_gib": 0,
                     "offered_ram_gib": 0, "offered_ram_gib_degraded": 0, "ram_per_core_gib": 0},
        "cost": {"capex_usd": 0, "opex_usd_per_month": 0, "tco_usd": 0, "horizon_months": 36, "usd_per_vm_month": 0,
                 "usd_per_vcpu_month": 0, "usd_per_gib_month": 0},
        "workload": workload})


def _load(path: Path):
    return load_snapshot(path, cpu_ratio=4.0, ram_ratio=1.0, reserved_ram_mib=4096)


def _by_name(report):
    return {r.resource: r for r in report.resources}


def test_snapshot_reads_placement_and_ceph():
    """4 hypervisors of 64 VCPU x 4.0 and (524288 - 4096) MiB; the PCI child provider is not a host."""
    s = _load(NEW)
    assert s.source == "placement" and [h.name for h in s.hosts] == ["cmp-r1-01", "cmp-r1-02", "cmp-r2-01",
                                                                       "cmp-r2-02"]
    assert {h.vcpus_offered for h in s.hosts} == {256.0} and {h.ram_mib_offered for h in s.hosts} == {520192.0}
    assert [h.vcpus_used for h in s.hosts] == [128, 128, 64, 64]
    assert s.vms == 30 and s.vms_by_flavor == {"m1.small": 20, "r1.large": 10}
    assert sorted(sum(h.bytes_by_class.values()) / 1024 ** 4 for h in s.ceph_hosts) == [10, 100, 100, 100]
    assert s.ceph_raw_used_bytes == {"nvme": 30 * 1024 ** 4}


def test_forecast_worked_example():
    """Use doubled in the 365.25 days between the snapshots: growth 100 %/year.

    vCPU: 4 x 256 = 1024 offered, 768 with a host lost, 384 used -> 768 after one
    year: 2026-12-01T06:00 + 365.25 d = 2027-12-01; ordered 90 days earlier,
    2027-09-02. All up: log2(1024/384) = 1.415 years = 516.8 days -> 2028-05-01.
    RAM: 4 x 508 GiB = 2032, 1524 with a host lost, 768 used:
    log2(1524/768) = 0.98868 years = 361.1 days -> 2027-11-27.
    """
    r = forecast(_blueprint(), [_load(NEW), _load(OLD)])
    assert r.snapshots == ["2025-12-01T00:00:00+00:00", "2026-12-01T06:00:00+00:00"]
    vcpu, ram = _by_name(r)["vcpu"], _by_name(r)["ram"]
    assert (vcpu.used, vcpu.offered, vcpu.offered_n1, vcpu.history) == (384, 1024, 768, [192, 384])
    assert vcpu.growth_per_year == pytest.approx(1.0, abs=1e-4) and "fitted to 2 snapshots" in vcpu.growth_source
    assert (vcpu.runs_out_n1, vcpu.order_by, vcpu.runs_out) == ("2027-12-01", "2027-09-02", "2028-05-01")
    assert not vcpu.overdue
    assert (ram.used, ram.offered, ram.offered_n1) == (768, 2032, 1524)
    assert ram.runs_out_n1 == "2027-11-27"


def test_ceph_tier_by_the_crush_rule():
    """3x replication on hosts of 100, 100, 100 and 10 TiB.

    All up: min(310/3, 210/2, 110/1) = 103.33 TiB a copy, x 0.85 nearfull = 87.83
    usable TiB. The largest host lost: min(210/3, 110/2, 10/1) = 10 TiB a copy
    (the third copy has nowhere to go but the small host): 8.5 usable TiB,
    below the 10 TiB in use (30 TiB raw / 3): the cloud is not N+1 today.
    """
    r = forecast(_blueprint(), [_load(OLD), _load(NEW)])
    nvme = _by_name(r)["ceph:nvme"]
    assert nvme.offered == pytest.approx(310 / 3 * 0.85, abs=1e-3)
    assert nvme.offered_n1 == pytest.approx(8.5, abs=1e-3) and nvme.used == pytest.approx(10.0)
    assert nvme.runs_out_n1 == "2026-12-01" and nvme.overdue and any("ceph:nvme" in n and "not N+1" in n for n in r.notes)


def test_erasure_coding_changes_copies_and_usable_bytes():
    """EC 2+1 on the same hosts: 3 chunks on 3 hosts, each chunk half a byte of data.

    A chunk may hold 103.33 TiB all up, so usable = 2 x 103.33 x 0.85 = 175.67
    TiB; raw 30 TiB in use is 20 usable TiB (efficiency 2/3).
    """
    r = forecast(_blueprint(protection={"ec_k": 2, "ec_m": 1}), [_load(NEW)])
    nvme = _by_name(r)["ceph:nvme"]
    assert nvme.offered == pytest.approx(2 * 310 / 3 * 0.85, abs=1e-3)
    assert nvme.used == pytest.approx(20.0)


def test_growth_given_or_from_the_blueprint():
    one = forecast(_blueprint(), [_load(NEW)])
    assert {r.growth_per_year for r in one.resources} == {0.25}
    assert all("blueprint" in r.growth_source for r in one.resources)
    # No growth: the dates are "never", not a date far in the future.
    flat = forecast(_blueprint(), [_load(NEW)], growth_per_year=0.0)
    assert _by_name(flat)["vcpu"].runs_out_n1 is None and _by_name(flat)["vcpu"].order_by is None
    with pytest.raises(UsageError, match="growth"):
        forecast(_blueprint(), [_load(NEW)], growth_per_year=-2)


def test_rack_failure_domain_needs_the_inventory():
    with pytest.raises(SpecError, match="--inventory"):
        forecast(_blueprint(failure_domain="rack"), [_load(NEW)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=0, max_size=8), st.integers(1, 6))
def test_crush_bound_against_its_definition(caps, copies):
    """The closed form equals the largest S with copies * S <= sum(min(c_i, S)), found by bisection."""
    fast = max_per_copy(caps, copies)
    lo, hi = 0.0, float(sum(caps)) + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if copies * mid <= sum(min(c, mid) for c in caps) + 1e-12:
            lo = mid
        else:
            hi = mid
    assert math.isclose(fast, lo, rel_tol=1e-6, abs_tol=1e-6)


def test_hypervisor_list_without_placement(tmp_path):
    """A compute API <= 2.87 list carries vCPUs and memory; the blueprint's ratios turn them into offers."""
    snap = tmp_path / "snap"
    shutil.copytree(NEW, snap)
    shutil.rmtree(snap / "inventory"), shutil.rmtree(snap / "usage"), (snap / "resource-providers.json").unlink()
    rows = json.loads((snap / "hypervisors.json").read_text())
    for r in rows:
        r.update({"vCPUs Used": 32, "vCPUs": 64, "Memory MB Used": 4096 + 65536, "Memory MB": 524288})
    rows[3]["State"] = "down"
    (snap / "hypervisors.json").write_text(json.dumps(rows))
    r = forecast(_blueprint(), [_load(snap)])
    vcpu = _by_name(r)["vcpu"]
    assert r.compute_source == "hypervisor-list" and r.down_hosts == ["cmp-r2-02"]
    # Three hosts up of 256 each; the down one is no capacity, its VMs still count as use.
    assert (vcpu.offered, vcpu.offered_n1, vcpu.used) == (768, 512, 128)
    assert _by_name(r)["ram"].used == 256


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "taken-at").unlink(), "missing taken-at"),
    (lambda d: (d / "taken-at").write_text("yesterday\n"), "ISO-8601"),
    (lambda d: (d / "servers.json").write_text("[{"), "servers.json:1:3: not JSON"),
    (lambda d: (d / "servers.json").write_bytes(b"\xff\xfe"), "not UTF-8"),
    (lambda d: (d / "ceph-df.json").write_text('{"stats_by_class": {"nvme": {"total_used_raw_bytes": -1}}}'),
     "stats_by_class.nvme.total_used_raw_bytes"),
])
def test_bad_snapshot_names_file_and_field(tmp_path, damage, message):
    snap = tmp_path / "snap"
    shutil.copytree(NEW, snap)
    damage(snap)
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        _load(snap)


def test_bad_placement_number_names_the_field(tmp_path):
    snap = tmp_path / "snap"
    shutil.copytree(NEW, snap)
    inv = next((snap / "inventory").iterdir())
    rows = json.loads(inv.read_text())
    rows[0]["total"] = "64"
    inv.write_text(json.dumps(rows))
    with pytest.raises(SpecError, match=r"\[0\]\.total"):
        _load(snap)


def test_cli_json_markdown_and_html(tmp_path, capsys):
    bp = write_model(_blueprint(), tmp_path / "bp.yaml")
    assert main(["capacity", str(bp), str(OLD), str(NEW), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["resource"]: r["runs_out_n1"] for r in data["resources"]} == {
        "vcpu": "2027-12-01", "ram": "2027-11-27", "ceph:nvme": "2026-12-01"}
    assert main(["capacity", str(bp), str(OLD), str(NEW)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Capacity: cloud-a") and "| vcpu | 384 vCPU | 768 |" in md and "overdue (2026-09-02)" in md
    assert main(["capacity", str(bp), str(OLD), str(NEW), "-o", str(tmp_path / "c.html")]) == 0
    html = (tmp_path / "c.html").read_text()
    assert html.count("<svg") == 3 and "(projected)" in html and "not N+1 today" in html
    assert main(["capacity", str(bp), str(tmp_path / "nope")]) == 1
    assert "nope: not a snapshot directory" in capsys.readouterr().err
