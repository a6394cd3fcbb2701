"""Host reservations, hand-checked: OSDs take physical cores, Ceph daemons and the per-VM
hypervisor overhead take RAM, so no host is planned past its physical RAM."""

from __future__ import annotations

import pytest

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import load_catalog
from cloudplan.sizing.control import controller_option
from cloudplan.sizing.options import compute_options, hyperconverged_options, storage_options
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Tier
from tests.test_sizing import workload, write_catalog
from tests.test_sizing_crush import SSD4


def test_osds_take_physical_cores_on_hyperconverged_hosts(tmp_path):
    """cpu8: 8 cores, 16 threads. Four SSD OSDs at 1 core each take 4 cores = 8 threads:
    (16 - 8) x 4 = 32 vCPU (counting threads, 48 were credited). RAM: 256 - 0.5 - 4 x 8 = 223.5 GiB."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    wl = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 1}])
    hci = hyperconverged_options(wl, cat, compute_options(wl, cat), {Tier.ssd})
    four = next(o for o in hci if o.drive_count == 4 and o.ram_gib == 256)
    assert (four.vcpus, four.vm_ram_gib, four.osd_cores, four.osd_ram_gib) == (32.0, 223.5, 4.0, 32.0)


def test_storage_hosts_and_controllers_keep_room_for_ceph_daemons(tmp_path):
    """A storage host with 4 SSD OSDs needs 4 + 2 cores and 4 x 8 + 16 + 8 (mon) + 4 (mgr) = 60 GiB;
    a controller 256 + 8 + 4 + 4 (rgw) = 272 GiB, so the 512 GiB build (8 x 64 GiB) is the only one."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    wl = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 1}])
    for o in storage_options(wl, cat, {Tier.ssd}):
        assert o.cores >= o.drive_count + 2 and o.ram_gib >= o.drive_count * 8 + 28
    assert controller_option(wl, cat, hypervisors=1).ram_gib == 512


def test_per_vm_overhead_changes_the_host_count(tmp_path):
    """8 VMs of 4 vCPU / 63.5 GiB; hosts of 256 GiB ($4,800, 255.5 for VMs) or 512 GiB ($7,200, 511.5).
    Without overhead a 512 GiB host takes all 8 (508 GiB): 2 hosts with N+1, $14,400 (3 x 256 GiB ties on
    cost and loses on the node count). With 0.5 GiB per VM each takes 64 GiB: 7 per 512 GiB host
    (3 hosts, $21,600), 3 per 256 GiB host (ceil(8 / 3) + 1 = 4 hosts, $19,200): 4 x 256 GiB."""
    cat = load_catalog(write_catalog(tmp_path / "cat"))
    flavors = [{"name": "m", "vcpus": 4, "ram_gib": 63.5, "count": 8}]
    with_overhead = size_cloud(workload(flavors=flavors), cat)
    (g,) = with_overhead.nodes_by_role(NodeRole.compute)
    assert (g.count, g.ram_gib) == (4, 256)
    assert with_overhead.capacity.demanded_ram_gib == pytest.approx(8 * 64)
    no_overhead = size_cloud(workload(flavors=flavors, policy={"controller_min_cores": 16,
                                                               "controller_min_ram_gib": 256,
                                                               "vm_overhead_gib": 0}), cat)
    (g,) = no_overhead.nodes_by_role(NodeRole.compute)
    assert (g.count, g.ram_gib) == (2, 512)


def test_no_host_is_planned_past_its_physical_ram():
    """Bundled catalog, medium example: on every VM host the VMs placed (with their overhead), the OSDs'
    RAM and Nova's reservation fit in the host's physical RAM."""
    import yaml
    from pathlib import Path
    from cloudplan.io import validate
    from cloudplan.spec import Workload
    wl = validate(Workload, yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "medium.yaml")
                                           .read_text()))
    bp = size_cloud(wl, load_catalog())
    flavor = {f.name: f for f in wl.flavors}
    def kind(g):
        drives = "".join(f"|{d.count}x{d.model}" for d in g.drives)
        return f"{g.role.value}|{g.chassis}|{g.sockets}x{g.cpu}|{g.dimm_count}x{g.dimm}{drives}"
    groups = {kind(g): g for g in bp.nodes}
    assert any(g.role == NodeRole.hyperconverged for g in bp.nodes)
    for p in bp.placement.patterns:
        g = groups[p["kind"]]
        vm_ram = sum((flavor[n].ram_gib + 0.5) * k for n, k in p["vms"].items())
        assert vm_ram + g.osd_ram_gib_reserved + 0.5 <= g.ram_gib + 1e-6, (p, g.key)
