"""One reservation of the OSDs' cores and RAM: what sizing credits a hyperconverged host with
is what the drain check (upgrade, maintenance, replace) lets it carry."""

from __future__ import annotations

import pytest

from cloudplan.blueprint import NodeRole
from cloudplan.sizing.reserve import osd_reservation
from cloudplan.spec import Tier
from cloudplan.upgrade.models import MIB_PER_GIB, UpgradeDefaults
from cloudplan.upgrade.placement import _compute_hosts
from test_maintenance import medium  # noqa: F401 (a fixture: the medium example sized and laid out)


def test_reservation_by_hand():
    """Eight NVMe OSDs (2 cores, 16 GiB each) and four HDD OSDs (1 core, 6 GiB) on SMT-2:
    20 cores, 40 threads, 152 GiB."""
    r = osd_reservation({Tier.nvme: 8, Tier.hdd: 4})
    assert (r.cores, r.threads, r.ram_gib) == (20, 40, 152)
    assert osd_reservation({Tier.nvme: 8}, threads_per_core=1).threads == 16


def test_the_drain_check_counts_what_sizing_planned(medium):
    """Every VM host of the medium blueprint: the drain check's schedulable vCPUs and RAM (from the
    inventory's threads and RAM, less the OSDs' threads and RAM, at Nova's defaults) equal the
    blueprint's vcpu_capacity and vm_ram_gib."""
    _, _, blueprint, inventory = medium
    hosts = {h.name: h for h in _compute_hosts(inventory, {}, UpgradeDefaults(), None)}
    groups = {(g.role.value, g.chassis, sum(d.count for d in g.drives)): g for g in blueprint.nodes}
    hci = 0
    for node in inventory.nodes:
        if node.name not in hosts:
            continue
        role = "hyperconverged" if node.drives else "compute"
        g = groups[(role, node.chassis, sum(node.drives.values()))]
        hci += g.role == NodeRole.hyperconverged
        assert hosts[node.name].vcpu_capacity == pytest.approx(g.vcpu_capacity), node.name
        assert hosts[node.name].ram_mib_capacity == pytest.approx(g.vm_ram_gib * MIB_PER_GIB, abs=1), node.name
    assert hci > 0      # the example has hyperconverged hosts: the OSD share is exercised


def test_nova_reserves_what_sizing_kept(medium):
    """Each hyperconverged host's config/nova/<host>/nova.conf keeps from Nova exactly the threads and
    RAM the blueprint did not offer to VMs: threads - reserved_host_cpus = vcpu_capacity / ratio."""
    import configparser

    from cloudplan.manifests import render_all
    _, _, blueprint, inventory = medium
    files = render_all(inventory, blueprint=blueprint.model_dump(mode="json"))
    groups = {(g.chassis, sum(d.count for d in g.drives)): g for g in blueprint.nodes
              if g.role == NodeRole.hyperconverged}
    pol = blueprint.workload.policy
    checked = 0
    for node in inventory.nodes:
        g = groups.get((node.chassis, sum(node.drives.values())))
        if g is None or not node.drives:
            continue
        conf = configparser.ConfigParser()
        conf.read_string(files[f"config/nova/{node.name}/nova.conf"])
        cpus = int(conf["DEFAULT"]["reserved_host_cpus"])
        assert (g.threads - cpus) * pol.cpu_allocation_ratio == pytest.approx(g.vcpu_capacity), node.name
        assert int(conf["DEFAULT"]["reserved_host_memory_mb"]) == g.nova_reserved_host_memory_mb
        checked += 1
    assert checked > 0
