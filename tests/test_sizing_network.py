"""Network and control plane as built: spines for every leaf uplink, spines racked, cables by
distance, storage traffic against the NICs, recovery time, controllers that grow, network nodes,
and the converged edge. Hand-checked on small catalogs; real HiGHS solves throughout."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import SwitchRole, load_catalog
from cloudplan.errors import Infeasible, SpecError
from cloudplan.inventory import Role
from cloudplan.layout import elevation
from cloudplan.manifests.site import choose_controllers
from cloudplan.sizing import control, fabric, traffic
from cloudplan.sizing.options import storage_options
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Tier
from tests.test_sizing import small_workloads, workload, write_catalog

SPINE8 = {"name": "spine8", "role": "spine", "ports": 8, "port_speed_gbps": 100, "price_usd": 2000, "power_w": 0}
SPINE8_2U = {**SPINE8, "name": "spine8-2u", "form_factor_u": 2, "power_w": 30}
# 1,000 IOPS each way and 2,400 MB/s: mClock's 1,200 MiB/s cap binds, the client load is small.
SSD = {"name": "ssd4", "tier": "ssd", "bay": "sata", "capacity_tb": 4, "iops": 1000, "write_iops": 1000,
       "throughput_mbps": 2400, "price_usd": 300, "power_w": 0}
BIG_CPU = {"name": "cpu32", "socket": "S1", "cores": 16, "threads": 32, "price_usd": 3000, "tdp_w": 100}
RACK_FEED_W = 437.5          # 350 W derated: three 100 W nodes per rack


def _catalog(tmp_path, *, spines=(SPINE8,), drives=(), nic=None, cpus=(), feed_w=None):
    d = write_catalog(tmp_path / "cat", spines=spines, drives=drives)
    if nic is not None or cpus:
        servers = yaml.safe_load((d / "servers.yaml").read_text())
        if nic is not None:
            servers["chassis"][0].update(nic_ports=nic[0], nic_speed_gbps=nic[1])
        (d / "servers.yaml").write_text(yaml.safe_dump(servers))
        doc = yaml.safe_load((d / "cpus.yaml").read_text())
        doc["cpus"] += list(cpus)
        (d / "cpus.yaml").write_text(yaml.safe_dump(doc))
    if feed_w is not None:
        (d / "racks.yaml").write_text(yaml.safe_dump(
            {"racks": [{"name": "rack", "height_u": 42, "power_budget_w": feed_w, "price_usd": 500}]}))
    return load_catalog(d)


def _four_rack_plan(cat):
    """18 VMs of 16 vCPU / 64 GiB: 7 hosts and 3 controllers at 100 W peak, three per rack: 4 racks."""
    return size_cloud(workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": 18}]), cat)


def test_eight_leaves_need_four_spines(tmp_path):
    """Leaves of 4 uplinks, spines of 8 ports: 2 spines take 2 x 8 / 4 = 4 leaves, 4 spines take 8.
    Four racks have 8 leaves, so the spine layer is 4 (4 divides the 4 uplinks: one to each)."""
    bp = _four_rack_plan(_catalog(tmp_path, feed_w=RACK_FEED_W))
    count = {s.role: s.count for s in bp.switches}
    assert bp.racks_count == 4
    assert (count["leaf"], count["spine"]) == (8, 4)
    assert any("4 x spine8 for 8 leaves x 4 uplinks (1 to each spine" in n for n in bp.notes)


def test_two_racks_keep_two_spines(tmp_path):
    """Two racks, four leaves: 2 spines of 8 ports take exactly 4 x 4 uplinks."""
    cat = _catalog(tmp_path, feed_w=2 * 437.5)   # 700 W derated: seven nodes per rack
    bp = size_cloud(workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": 18}]), cat)
    count = {s.role: s.count for s in bp.switches}
    assert (bp.racks_count, count["leaf"], count["spine"]) == (2, 4, 2)


def test_spines_are_racked_with_their_units_and_power(tmp_path):
    """Four 2U spines of 30 W over four racks: one below each rack's management switch, at units
    usable-5 and usable-4 (40 usable U: 38-39), and each rack's 350 W holds its nodes and its spine."""
    bp = _four_rack_plan(_catalog(tmp_path, spines=(SPINE8_2U,), feed_w=RACK_FEED_W))
    inv = elevation(bp)
    spines = [(r.name, d) for r in inv.racks for d in r.devices if d.role == "spine"]
    assert sorted(r for r, _ in spines) == sorted(r.name for r in inv.racks)       # one per rack
    usable = bp.racks[0].height_u
    assert {(d.u, d.height_u) for _, d in spines} == {(usable - 4, 2)}
    for r in inv.racks:
        nodes = [n for n in inv.nodes if n.rack == r.name]
        assert max(n.u + n.height_u - 1 for n in nodes) < usable - 4              # below the spine
        assert sum(100 for _ in nodes) + 30 <= 350


def test_cables_follow_the_distance(tmp_path):
    """Leaf l sits in rack l // 2; spine j of 4 in rack j (spread over 4 racks). A leaf reaches
    the spine in its own rack with a 100G DAC (2 m), the others over 3.6 m or more: AOC. So 8
    leaves x 1 DAC and 8 x 3 AOC; a 25G DAC per node port, a patch lead per BMC and switch."""
    bp = _four_rack_plan(_catalog(tmp_path, feed_w=RACK_FEED_W))
    got = {(c.kind, c.purpose): c.count for c in bp.cables}
    assert got[("dac-100g", "leaf to spine")] == 8
    assert got[("aoc-100g", "leaf to spine")] == 24
    assert got[("dac-25g", "node to leaf")] == 2 * bp.node_count
    assert got[("cat6", "BMC to management switch")] == bp.node_count
    assert got[("cat6", "switch management port")] == 8 + 4
    cabling = sum(c.count * c.unit_price_usd for c in bp.cables)
    assert bp.cost.breakdown_usd["cabling"] == pytest.approx(cabling)
    assert fabric.spine_racks(2, 20) == [5, 15] and fabric.spine_racks(8, 2) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert fabric.cable_for(0.6 * 45 + 3, 100) == "aoc-100g" and fabric.cable_for(0.6 * 46 + 3, 100) == "optics-100g"


def test_a_node_whose_nics_cannot_carry_its_recovery_traffic_is_dropped(tmp_path):
    """One 10 Gb/s port. An OSD backfills at mClock's 50 % of 1,200 MiB/s = 5.033 Gb/s and serves
    1 / (0.7 / 1000 + 0.3 * 3 / 1000) = 625 client IOPS of 4 KiB, reads once and writes 3 times:
    625 * 32768 * (0.7 + 0.3 * 3) = 0.033 Gb/s. Two OSDs need 10.13 Gb/s: over 10; one fits."""
    cat = _catalog(tmp_path, drives=[SSD], nic=(1, 10))
    wl = workload(storage=[{"tier": "ssd", "usable_tib": 1}])
    by_drives = {o.drive_count: traffic.node_traffic(o, wl, cat) for o in storage_options(wl, cat, {Tier.ssd})}
    assert by_drives[1].recovery_gbps == pytest.approx(0.5 * 1200 * 2**20 * 8 / 1e9)
    assert by_drives[1].client_gbps == pytest.approx(625 * 32768 * 1.6 / 1e9)
    assert (by_drives[1].fits, by_drives[2].fits) == (True, False)
    bp = size_cloud(wl, cat)
    holders = [g for g in bp.nodes if g.drives]
    assert holders and all(d.count == 1 for g in holders for d in g.drives)
    assert any("NICs cannot carry" in n for n in bp.notes)
    (r,) = bp.recovery
    # Hosts of one 3.638 TiB OSD each, the tier at 1 / (1/3) = 3 TiB stored: the largest host holds
    # its share, and the others backfill it at 5.033 Gb/s each.
    n = sum(g.count for g in holders)
    raw = 4e12 / 2**40
    assert r.data_tib == pytest.approx(raw * 3 / (n * raw))
    assert r.recovery_gbps == pytest.approx((n - 1) * 0.5 * 1200 * 2**20 * 8 / 1e9)
    assert r.hours == pytest.approx(r.data_tib * 2**40 * 8 / (r.recovery_gbps * 1e9) / 3600)


def test_a_tier_no_nic_can_carry_is_named(tmp_path):
    cat = _catalog(tmp_path, drives=[SSD], nic=(1, 1))
    with pytest.raises(Infeasible) as err:
        size_cloud(workload(storage=[{"tier": "ssd", "usable_tib": 1}]), cat)
    assert err.value.requirement == "storage[0].tier" and "NICs" in str(err.value)


def test_controllers_grow_with_the_hypervisors(tmp_path):
    """threads = max(16, ceil(H / 10 + V / 1000)); RAM max(256, 3 x threads) + 8 + 4 + 4 GiB.
    10 VMs and 100 hypervisors: 11 threads, the 16-thread CPU; 200 hypervisors: 21, the 32-thread one."""
    cat = _catalog(tmp_path, cpus=[BIG_CPU])
    wl = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 10}])
    assert control.controller_need(wl, 100).threads == 16
    assert control.controller_option(wl, cat, 100).cpu.name == "cpu8"
    need = control.controller_need(wl, 200)
    assert (need.threads, need.ram_gib) == (21, 256 + 16)
    assert control.controller_option(wl, cat, 200).cpu.name == "cpu32"


def test_a_plan_of_many_vms_buys_bigger_controllers(tmp_path):
    """17,000 VMs of 1 vCPU / 1 GiB: 17 threads from the VMs alone, so cpu8 (16 threads) cannot be
    a controller and the plan's controllers are cpu32; the sizing reports the rule's figures."""
    cat = _catalog(tmp_path, cpus=[BIG_CPU])
    wl = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 17000}],
                  policy={"controller_min_cores": 16, "controller_min_ram_gib": 256, "cpu_allocation_ratio": 16})
    bp = size_cloud(wl, cat)
    (ctl,) = bp.nodes_by_role(NodeRole.control)
    c = bp.control_plane
    assert c.controller_threads == max(16, math.ceil(c.hypervisors / 10 + 17000 / 1000)) > 16
    assert ctl.cpu == "cpu32" and ctl.count == 3 and ctl.threads >= c.controller_threads


def test_network_nodes_when_the_policy_asks(tmp_path):
    bp = size_cloud(workload(policy={"controller_min_cores": 16, "controller_min_ram_gib": 256,
                                     "network_nodes": 2}), _catalog(tmp_path))
    (net,) = bp.nodes_by_role(NodeRole.network)
    assert net.count == 2 and net.threads >= control.NETWORK_NODE_THREADS
    inv = elevation(bp)
    assert len(inv.by_role(Role.network)) == 2
    with pytest.raises(SpecError, match="policy.network_nodes: 1 leaves the gateways"):
        workload(policy={"network_nodes": 1})


def test_converged_edge_puts_the_control_plane_on_three_hyperconverged_hosts(tmp_path):
    """No controllers; every VM host is hyperconverged and keeps 16 threads and 32 + 8 + 4 + 4 GiB
    for the control plane: a 32-thread host with one OSD (1 core, 2 threads) offers
    (32 - 16 - 2) x 4 = 56 vCPUs. Two replicas heal on three hosts; three of them join the control role."""
    cat = _catalog(tmp_path, drives=[SSD], cpus=[BIG_CPU])
    wl = workload(flavors=[{"name": "s", "vcpus": 2, "ram_gib": 4, "count": 20}],
                  storage=[{"tier": "ssd", "usable_tib": 1, "protection": {"replicas": 2}}],
                  policy={"controller_min_cores": 16, "controller_min_ram_gib": 256,
                          "converged_control_plane": True})
    bp = size_cloud(wl, cat)
    assert not bp.nodes_by_role(NodeRole.control)
    hci = bp.nodes_by_role(NodeRole.hyperconverged)
    assert hci and all(n.role == NodeRole.hyperconverged for n in bp.nodes)
    assert sum(g.count for g in hci) >= 3
    for g in hci:
        osd_threads = sum(d.count for d in g.drives) * 1 * g.threads / g.cores
        assert g.vcpu_capacity == pytest.approx((g.threads - 16 - osd_threads) * 4)
        assert g.nova_reserved_host_memory_mb == 512 + 48 * 1024 + sum(d.count for d in g.drives) * 8 * 1024
    assert bp.control_plane.converged and bp.workload.policy.converged_control_plane
    inv = elevation(bp)
    ctl = inv.by_role(Role.control)
    assert len(ctl) == 3 and all(n.role == Role.compute for n in ctl)
    chosen, _, _ = choose_controllers(inv)
    assert {n.name for n in chosen} == {n.name for n in ctl}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_workloads())
def test_every_blueprint_lays_out_with_its_spines(wl):
    """Every plan lays out with its spines racked (the layout's dealing checks each rack's units and
    derated feed with the spines in): every spine in a rack, above the nodes, no rack over its
    units; the spine layer is an even ECMP count with a port for every leaf uplink."""
    cat = load_catalog()
    bp = size_cloud(wl, cat, time_limit_s=20)
    inv = elevation(bp)
    count = {s.role: s.count for s in bp.switches}
    racked = [d for r in inv.racks for d in r.devices if d.role == "spine"]
    assert len(racked) == count.get("spine", 0)
    # Ports: every data link and management uplink on a leaf, every BMC and switch on a management switch.
    leaf, mgmt = cat.cheapest(SwitchRole.leaf), cat.cheapest(SwitchRole.management)
    ports = {c.name: c.nic_ports for c in cat.chassis}
    links = sum(ports[g.chassis] * g.count for g in bp.nodes)
    assert leaf.ports * count["leaf"] >= links + fabric.mgmt_uplinks(mgmt) * count["management"]
    assert mgmt.ports * count["management"] >= bp.node_count + count["leaf"] + count.get("spine", 0)
    if bp.racks_count > 1:
        spine = next(s for s in cat.switches if s.name == next(g.model for g in bp.switches if g.role == "spine"))
        leaf = cat.cheapest(SwitchRole.leaf)
        assert count["spine"] in fabric.ECMP_SPINE_COUNTS and leaf.uplinks % count["spine"] == 0
        assert count["spine"] * spine.ports >= count["leaf"] * leaf.uplinks
    for r, rg in zip(inv.racks, [rg for rg in bp.racks for _ in range(rg.count)]):
        nodes = [n for n in inv.nodes if n.rack == r.name]
        units = sum(n.height_u for n in nodes) + sum(d.height_u for d in r.devices)
        assert units <= rg.height_u
        assert all(d.u + d.height_u - 1 <= rg.height_u for d in r.devices)
        assert max((n.u + n.height_u - 1 for n in nodes), default=0) < min(d.u for d in r.devices)


def test_edge_example_prints_its_recovery_and_control_plane(capsys):
    """The bundled edge example through the CLI: three hyperconverged hosts, no controllers, the
    healing table and the converged control plane printed, and the same figures in the JSON."""
    from pathlib import Path

    from cloudplan.cli import main
    edge = Path(__file__).resolve().parents[1] / "examples" / "edge.yaml"
    assert main(["size", str(edge)]) == 0
    text = capsys.readouterr().out
    assert "Healing and storage traffic" in text and "Control plane: converged on three" in text
    assert main(["size", str(edge), "--json"]) == 0
    s = yaml.safe_load(capsys.readouterr().out)
    assert {n["role"] for n in s["nodes"]} == {"hyperconverged"}
    assert sum(n["count"] for n in s["nodes"]) == 3
    assert s["control_plane"]["converged"] and s["recovery"][0]["tier"] == "nvme"
    assert {c["purpose"] for c in s["cables"]} >= {"node to leaf", "BMC to management switch"}
