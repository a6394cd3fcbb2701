"""The storage tiers as cephadm service specifications, and the pools they become.

Kolla-Ansible uses Ceph as an external cluster; cloudplan writes what cephadm
needs to build it from the inventory: host specs (with their rack, so CRUSH
knows the failure domains), mon/mgr placement, one OSD spec per device class
and host, and a script that creates one CRUSH rule per device class and the
pools Cinder, Glance and Nova use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cloudplan.errors import ManifestError
from cloudplan.inventory import Inventory, Node, Role
from cloudplan.manifests.kolla import volume_pool
from cloudplan.manifests.site import API_NETWORK, CEPH_REPLICAS, STORAGE_NETWORK, Site, spread
from cloudplan.sizing.crush import RACK_DOMAIN_MIN_RACKS, rule_domain
from cloudplan.spec import Tier

log = logging.getLogger(__name__)

MONITORS = 3
# Kolla-Ansible's default pool names (group_vars ceph.yml); an override of the
# variable renames the pool here too.
POOL_DEFAULTS = {"ceph_glance_pool_name": "images", "ceph_nova_pool_name": "vms",
                 "ceph_cinder_backup_pool_name": "backups"}


@dataclass
class OsdSpec:
    """One cephadm OSD service: a tier's drives on one host."""

    service_id: str
    host: str
    tier: str
    devices: dict[str, Any]
    db_devices: dict[str, Any] | None = None   # where the OSDs' block.db (and WAL) go


@dataclass
class Pool:
    name: str
    tier: str
    rule: str
    purpose: str


def device_filter(tier: Tier, node: Node) -> dict[str, Any]:
    """The ``data_devices`` selection for a tier's drives on a host.

    cephadm tells drives apart by rotation only, so HDDs are ``rotational``
    and a single solid-state tier is ``rotational: false``. When one host has
    both NVMe and SATA/SAS SSDs, the NVMe drives are named by their kernel
    namespace paths (/dev/nvme0n1, ...) and the SSD spec takes the remaining
    non-rotational drives: cephadm does not give a drive held by one spec to
    another.
    """
    count = node.drives[tier]
    if tier == Tier.hdd:
        return {"rotational": True, "limit": count}
    mixed = node.drives.get(Tier.nvme, 0) > 0 and node.drives.get(Tier.ssd, 0) > 0
    if tier == Tier.nvme and mixed:
        return {"paths": [f"/dev/nvme{i}n1" for i in range(count)]}
    return {"rotational": False, "limit": count}


def db_filter(tier: Tier, node: Node) -> dict[str, Any] | None:
    """The ``db_devices`` selection: the HDD OSDs' block.db on the host's flash DB drives.

    ceph-volume splits each DB device evenly among the OSDs of the spec, which is how the
    sizing sized them (:mod:`cloudplan.sizing.bluestore`). The DB drives are told from the
    HDDs by rotation; a host that also has solid-state data drives could not tell them
    from those, so it is refused.
    """
    if not node.db_devices:
        return None
    if not node.drives.get(Tier.hdd, 0):
        raise ManifestError(f"node {node.name}: db_devices {node.db_devices} but no HDD data drives "
                            "(nodes[].drives.hdd): block.db on flash serves HDD OSDs only")
    if any(node.drives.get(t, 0) for t in (Tier.nvme, Tier.ssd)):
        raise ManifestError(f"node {node.name}: db_devices beside NVMe/SSD data drives (nodes[].drives): cephadm "
                            "cannot tell the DB drives from the data drives by rotation; give the host one or the other")
    return {"rotational": False, "limit": node.db_devices} if tier == Tier.hdd else None


def osd_specs(site: Site) -> tuple[list[OsdSpec], list[OsdSpec], list[str]]:
    """(specs to apply first, specs to apply once the first are up, warnings).

    On a host with both NVMe and SSD drives the SSD spec's filter would also
    match the NVMe drives until those hold OSDs of their own spec, so it goes
    in the second batch.
    """
    first, later, warnings = [], [], []
    for tier in site.tiers:
        for node in sorted(site.tier_hosts[tier], key=lambda n: n.name):
            spec = OsdSpec(f"{tier.value}-{node.name}", node.name, tier.value, device_filter(tier, node),
                           db_filter(tier, node))
            mixed = node.drives.get(Tier.nvme, 0) > 0 and node.drives.get(Tier.ssd, 0) > 0
            (later if mixed and tier == Tier.ssd else first).append(spec)
    if later:
        hosts = ", ".join(s.host for s in later)
        warnings.append(f"host(s) {hosts} carry both NVMe and SSD data drives: their NVMe specs name "
                        "/dev/nvme<N>n1 paths, and their SSD specs are in ceph/osd-specs-after-nvme.yaml, "
                        "to apply once the NVMe OSDs are up")
    return first, later, warnings


def ceph_network(inv: Inventory) -> str:
    """Ceph's public network: the storage network when the site has one, else the API network."""
    return STORAGE_NETWORK if STORAGE_NETWORK in inv.networks else API_NETWORK


def ceph_hosts(inv: Inventory, site: Site) -> tuple[list[Node], list[Node]]:
    """(every Ceph host, the monitor hosts): monitors on storage nodes spread over racks, else controllers."""
    storage = inv.by_role(Role.storage)
    mons = spread(storage)[:MONITORS] if len(storage) >= MONITORS else list(site.controllers)
    names = {n.name for n in mons} | {n.name for t in site.tiers for n in site.tier_hosts[t]}
    return [n for n in inv.nodes if n.name in names], mons


def host_entries(inv: Inventory, site: Site) -> list[dict[str, Any]]:
    net = ceph_network(inv)
    hosts, mons = ceph_hosts(inv, site)
    mon_names = {n.name for n in mons}
    entries = []
    for n in hosts:
        addr = n.addresses.get(net)
        if addr is None:
            raise ManifestError(f"node {n.name}: no address on the {net!r} network (nodes[].addresses.{net}); "
                                "Ceph daemons listen there")
        labels = (["_admin", "mon", "mgr"] if n.name in mon_names else []) + (
            ["osd"] if any(n.drives.get(t, 0) for t in site.tiers) else [])
        entries.append({"hostname": n.name, "addr": addr, "labels": labels, "rack": n.rack})
    return entries


def crush_rule(site: Site, tier: Tier) -> tuple[str, str]:
    """(rule name, failure domain) of a tier: the blueprint policy's domain, which the sizing made
    the tier survive the loss of; without a blueprint, by the racks the tier spans."""
    racks = {n.rack for n in site.tier_hosts[tier]}
    domain = rule_domain(len(racks), site.failure_domain, RACK_DOMAIN_MIN_RACKS)
    return f"replicated-{tier.value}-{domain}", domain


def pools(site: Site, settings: dict[str, Any]) -> list[Pool]:
    """Cinder's pool per tier; images and vms on the fastest tier; backups on the slowest."""
    fastest, slowest = site.tiers[0], site.tiers[-1]
    name = {k: str(settings.get(k, v)) for k, v in POOL_DEFAULTS.items()}
    out = [Pool(volume_pool(t), t.value, crush_rule(site, t)[0], f"Cinder volumes on {t.value}") for t in site.tiers]
    out.append(Pool(name["ceph_glance_pool_name"], fastest.value, crush_rule(site, fastest)[0], "Glance images"))
    out.append(Pool(name["ceph_nova_pool_name"], fastest.value, crush_rule(site, fastest)[0], "Nova ephemeral disks"))
    out.append(Pool(name["ceph_cinder_backup_pool_name"], slowest.value, crush_rule(site, slowest)[0],
                    "Cinder backups"))
    return out


def context(inv: Inventory, site: Site, settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Template variables of the ceph/ files."""
    specs, later, warnings = osd_specs(site)
    pool_list = pools(site, settings)
    rules = [dict(zip(("name", "domain"), crush_rule(site, t)), tier=t.value) for t in site.tiers]
    mons = ceph_hosts(inv, site)[1]
    return {
        "hosts": host_entries(inv, site),
        "mon_hosts": [n.name for n in mons],
        "osd_specs": specs,
        "osd_specs_later": later,
        "rules": rules,
        "pools": pool_list,
        "replicas": CEPH_REPLICAS,
        "public_network": inv.networks[ceph_network(inv)].cidr,
        "cinder_pools": [p.name for p in pool_list if p.name.startswith("volumes-")],
        "glance_pool": pool_list[-3].name,
        "nova_pool": pool_list[-2].name,
        "backup_pool": pool_list[-1].name,
    }, warnings
