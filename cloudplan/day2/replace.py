"""Replacing a node under the same name: can it go, how it is taken out, how its successor comes in.

Two questions decide whether the node may go:

* **its VMs**: they must fit on the other compute hosts' free capacity, the
  drain check's packing question for one host (:class:`DrainChecker`);
* **its OSDs**: ``ceph orch osd rm --replace`` first moves every placement
  group off them, and ``ceph osd safe-to-destroy`` only passes once each PG
  has its copies elsewhere. So, with the node gone, every tier it holds OSDs
  of must still have ``size`` distinct failure domains (else its PGs stay
  degraded, below ``size`` or even ``min_size``, until the successor is in),
  and room for its data by the CRUSH bound: ``n`` copies on ``n`` distinct
  domains of capacities ``c_i`` hold ``S`` a copy when
  ``n*S <= sum_i min(c_i, S)`` (:func:`cloudplan.sizing.crush.max_per_copy`), below the
  ratio at which Ceph stops backfilling (``osd_backfillfull_ratio``).

A node that passes keeps its name: the inventory gets the successor's BMC
address and MAC (the old hardware's UUID and NIC MACs are dropped, to be
learned), its OSD ids are kept by ``--replace`` for the new drives, and the
steps to bring it up are printed.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from cloudplan.blueprint import Blueprint
from cloudplan.day2.capacity import TIB
from cloudplan.day2.snapshot import Snapshot
from cloudplan.errors import SpecError
from cloudplan.inventory import Inventory, Node, Role
from cloudplan.io import validate, write_model
from cloudplan.manifests.ceph import MONITORS
from cloudplan.sizing.crush import max_per_copy
from cloudplan.spec import Protection, Tier
from cloudplan.upgrade.ceph import PoolProtection, domain_of
from cloudplan.upgrade.drain import DrainChecker
from cloudplan.upgrade.models import MIB_PER_GIB, Cloud, PlanStep, UpgradeDefaults
from cloudplan.upgrade.plan import HEALTH_COMMANDS
from cloudplan.upgrade.roll import (
    CEPH_HEALTH_WAIT,
    COMPUTE_UP_WAIT,
    LIVE_MIGRATE_HOST,
    ceph_pools,
)

# Ceph's osd_backfillfull_ratio: backfill (the re-creation of the copies a removed OSD
# held) stops on an OSD this full, so the data must fit the survivors below it.
CEPH_BACKFILLFULL_RATIO = 0.90
TB = 1000 ** 4


class OsdCheck(BaseModel):
    """Whether one tier can lose the node's OSDs and re-create their copies elsewhere."""

    tier: str = Field(description="storage tier: nvme, ssd or hdd")
    scheme: str = Field(description="'3x replication' or 'EC 4+2'")
    size: int = Field(description="copies or chunks per placement group")
    min_size: int = Field(description="copies or chunks a placement group needs to serve I/O")
    failure_domain: str = Field(description="CRUSH failure domain: host or rack")
    domains_before: int = Field(description="failure domains of the tier with the node")
    domains_after: int = Field(description="failure domains of the tier without the node")
    per_copy_tib_after: float | None = Field(default=None, description="what each copy (chunk) may hold on the "
                                             "survivors below the backfillfull ratio, TiB; None: capacities unknown")
    data_per_copy_tib: float | None = Field(default=None, description="data each copy (chunk) holds, TiB")
    data_source: str = Field(default="", description="where the data figure came from")
    ok: bool = Field(description="the node's OSDs can go")
    reason: str | None = Field(default=None, description="why they cannot")


class Replacement(BaseModel):
    """What `cloudplan replace` found and prints."""

    node: str = Field(description="the node replaced under the same name")
    role: Role = Field(description="its role")
    rack: str = Field(description="its rack")
    verdict: str = Field(description="go or no-go")
    reasons: list[str] = Field(default_factory=list, description="every reason for a no-go")
    warnings: list[str] = Field(default_factory=list, description="findings that do not block it")
    vms: int = Field(default=0, description="VMs on the node (in the placement checked)")
    vm_ram_gib: float = Field(default=0.0, description="their RAM, GiB")
    drainable: bool | None = Field(default=None, description="its VMs fit on the other hosts; None: no VMs to move")
    drained_by: str = Field(default="", description="how the drain was decided: bound, greedy or exact")
    osds: list[OsdCheck] = Field(default_factory=list, description="per tier the node holds OSDs of")
    bmc_address: str = Field(description="the successor's BMC address")
    mac: str = Field(description="the successor's provisioning MAC")
    decommission: PlanStep = Field(description="taking the node out, in order")
    bring_up: PlanStep = Field(description="bringing the successor in, once the inventory is written")


def _drive_tb(blueprint: Blueprint, node: Node) -> dict[str, float]:
    """Capacity per data drive of each tier, decimal TB, from the node's blueprint group: the one with
    its chassis and drive counts first, then its chassis, then any."""
    want = {t.value: c for t, c in node.drives.items() if c}

    def distance(g) -> tuple[bool, bool]:
        return g.chassis != node.chassis, {d.tier.value: d.count for d in g.drives} != want

    out: dict[str, float] = {}
    for g in sorted(blueprint.nodes, key=distance):
        for d in g.drives:
            out.setdefault(d.tier.value, d.capacity_tb)
    return out


def tier_capacities(inventory: Inventory, pools: list[PoolProtection], *, blueprint: Blueprint | None = None,
                    snapshot: Snapshot | None = None) -> dict[str, dict[str, float]]:
    """Bytes of OSD capacity per tier and host: the live cluster's (`ceph osd df tree`) when a
    snapshot is given, else the blueprint's drives; empty when neither says."""
    if snapshot is not None and snapshot.ceph_hosts:
        return {p.tier: {h.name: float(h.bytes_by_class.get(p.tier, 0)) for h in snapshot.ceph_hosts
                         if h.bytes_by_class.get(p.tier)} for p in pools}
    if blueprint is None:
        return {}
    nodes = {n.name: n for n in inventory.nodes}
    out: dict[str, dict[str, float]] = {}
    for p in pools:
        for h in p.hosts:
            node = nodes[h]
            tb = _drive_tb(blueprint, node).get(p.tier)
            if tb is not None:
                out.setdefault(p.tier, {})[h] = node.drives.get(Tier(p.tier), 0) * tb * TB
    return out


def data_per_copy(pools: list[PoolProtection], protection: Protection, *, blueprint: Blueprint | None = None,
                  snapshot: Snapshot | None = None) -> dict[str, tuple[float, str]]:
    """(bytes each copy or chunk holds, source) per tier: the live raw use over ``size`` from a snapshot
    (`ceph df`), else the blueprint's usable demand at the end of its horizon (per chunk for EC)."""
    out: dict[str, tuple[float, str]] = {}
    per_chunk = 1.0 if protection.replicas is not None else float(protection.ec_k)
    for p in pools:
        if snapshot is not None and p.tier in snapshot.ceph_raw_used_bytes:
            out[p.tier] = (snapshot.ceph_raw_used_bytes[p.tier] / p.size, f"raw use in {snapshot.path} / {p.size}")
        elif blueprint is not None:
            demand = next((t.demanded_usable_tib for t in blueprint.capacity.tiers if t.tier.value == p.tier), None)
            if demand is not None:
                out[p.tier] = (demand * TIB / per_chunk,
                               f"blueprint {blueprint.name}'s demand at the end of its horizon")
    return out


def osd_checks(inventory: Inventory, node: Node, pools: list[PoolProtection],
               capacities: dict[str, dict[str, float]], data: dict[str, tuple[float, str]],
               ratio: float = CEPH_BACKFILLFULL_RATIO) -> list[OsdCheck]:
    """One check per tier the node holds OSDs of."""
    nodes = {n.name: n for n in inventory.nodes}
    out = []
    for p in pools:
        if node.name not in p.hosts:
            continue
        left = [nodes[h] for h in p.hosts if h != node.name]
        after = len({domain_of(h, p.failure_domain) for h in left})
        reasons = []
        if after < p.size:
            below = min(p.size, after) < p.min_size
            reasons.append(f"Ceph tier {p.tier} ({p.scheme}, min_size {p.min_size}) keeps {after} "
                           f"{p.failure_domain} failure domain(s) without {node.name}, fewer than its {p.size} copies: "
                           + ("its placement groups fall below min_size and stop I/O"
                              if below else f"its placement groups stay at {after} copies, so `ceph orch osd rm` "
                              "cannot move them and `ceph osd safe-to-destroy` never passes")
                           + "; add a host to the tier first")
        per_copy = data_copy = None
        source = ""
        caps = capacities.get(p.tier)
        missing = sorted(h.name for h in left if caps is not None and h.name not in caps)
        if missing:
            # A host the capacities do not name (another name in CRUSH, or no figure for it) is not
            # counted as empty: that would refuse for want of data, not of room.
            source = f"no {p.tier} capacity for {', '.join(missing[:5])}"
            caps = None
        if caps is not None and p.tier in data:
            domains: dict[str, float] = {}
            for h in left:
                domains[domain_of(h, p.failure_domain)] = domains.get(domain_of(h, p.failure_domain), 0.0) + \
                    caps.get(h.name, 0.0)
            per_copy = max_per_copy(list(domains.values()), p.size) * ratio
            data_copy, source = data[p.tier]
            if data_copy > per_copy and after >= p.size:
                reasons.append(f"Ceph tier {p.tier} ({p.scheme}) cannot hold its data without {node.name}: each of "
                               f"its {p.size} copies holds {data_copy / TIB:,.1f} TiB ({source}), the other "
                               f"{p.failure_domain}s hold {per_copy / TIB:,.1f} TiB a copy below the backfillfull "
                               f"ratio {ratio:g} by the CRUSH bound")
        out.append(OsdCheck(tier=p.tier, scheme=p.scheme, size=p.size, min_size=p.min_size,
                            failure_domain=p.failure_domain, domains_before=p.domains, domains_after=after,
                            per_copy_tib_after=None if per_copy is None else round(per_copy / TIB, 3),
                            data_per_copy_tib=None if data_copy is None else round(data_copy / TIB, 3),
                            data_source=source, ok=not reasons, reason="; ".join(reasons) or None))
    return out


def _short(name: str) -> str:
    return name.split(".", 1)[0].lower()


def replaced_inventory(inventory: Inventory, name: str, *, bmc_address: str, mac: str) -> Inventory:
    """The inventory with ``name``'s hardware swapped: the successor's BMC address and MAC; the old
    machine's UUID and NIC MACs dropped (learned from the new one); everything else kept."""
    data = inventory.model_dump(mode="json", exclude_none=True)
    for i, n in enumerate(data["nodes"]):
        if n["name"] == name:
            n["bmc"]["address"] = bmc_address
            n["mac"] = mac
            n.pop("uuid", None)
            n.pop("nics", None)
            break
    else:
        raise SpecError(f"no node named {name!r} in the inventory", field="nodes")
    return validate(Inventory, data, path=f"inventory with {name}'s successor")


def find_node(inventory: Inventory, name: str, source: str | None = None) -> Node:
    for n in inventory.nodes:
        if n.name == name or _short(n.name) == _short(name):
            return n
    raise SpecError(f"no node named {name!r} in the inventory", path=source, field="nodes[].name")


def _drain(cloud: Cloud | None, node: Node,
           defaults: UpgradeDefaults) -> tuple[int, float, bool | None, str, str | None]:
    """(VMs, their RAM GiB, drainable or None, decided by, reason) for the node in ``cloud``."""
    if cloud is None:
        return 0, 0.0, None, "", None
    host = next((h for h in cloud.hosts if h.name == node.name), None)
    if host is None or host.vm_count == 0:
        return 0, 0.0, None, "empty", None
    verdict = DrainChecker(cloud, defaults).fits([host])
    reason = None if verdict.fits else f"{node.name}'s VMs cannot be live-migrated away: {verdict.reason}"
    return host.vm_count, round(host.used_ram_mib / MIB_PER_GIB, 1), verdict.fits, verdict.decided_by, reason


def _on(command: str, name: str) -> str:
    return command.replace("HOST", name)


def _is_ceph_host(inventory: Inventory, node: Node) -> bool:
    """OSD hosts, and the monitors' hosts: storage nodes when there are enough, else the controllers
    (the rule of the manifests' cephadm hosts.yaml)."""
    if any(node.drives.values()):
        return True
    if node.role == Role.storage:
        return True
    return node.role == Role.control and len(inventory.by_role(Role.storage)) < MONITORS


def _neutron_moves(inventory: Inventory, node: Node) -> list[PlanStep]:
    """Kolla's guide for removing hosts that run the L3 and DHCP agents: move their routers and networks."""
    peers = [n.name for n in inventory.by_role(node.role) if n.name != node.name]
    if node.role not in (Role.control, Role.network) or not peers:
        return []
    target = peers[0]
    return [
        PlanStep(description=f"Move {node.name}'s routers to {target}'s L3 agent, then disable its L3 agent",
                 command=f"l3_id=$(openstack network agent list --host {node.name} --agent-type l3 -f value -c ID); "
                         f"target_l3_id=$(openstack network agent list --host {target} --agent-type l3 -f value "
                         "-c ID); "
                         "openstack router list --agent $l3_id -f value -c ID | while read router; do "
                         "openstack network agent remove router $l3_id $router --l3; "
                         "openstack network agent add router $target_l3_id $router --l3; done; "
                         "openstack network agent set $l3_id --disable"),
        PlanStep(description=f"Move {node.name}'s networks to {target}'s DHCP agent",
                 command=f"dhcp_id=$(openstack network agent list --host {node.name} --agent-type dhcp -f value "
                         "-c ID); "
                         f"target_dhcp_id=$(openstack network agent list --host {target} --agent-type dhcp -f value "
                         "-c ID); openstack network list --agent $dhcp_id -f value -c ID | while read network; do "
                         "openstack network agent remove network $dhcp_id $network --dhcp; "
                         "openstack network agent add network $target_dhcp_id $network --dhcp; done"),
    ]


def _osd_steps(name: str) -> list[PlanStep]:
    return [
        PlanStep(description=f"The ids of {name}'s OSDs (its CRUSH host bucket)",
                 command=f"OSDS=$(cephadm shell -- ceph osd ls-tree {name})"),
        PlanStep(description="Confirm Ceph can stop them with every placement group still active (fails if not)",
                 command="cephadm shell -- ceph osd ok-to-stop $OSDS"),
        PlanStep(description="Move their placement groups to the other OSDs, then mark them destroyed: the ids "
                             "stay in the CRUSH map for the successor's drives",
                 command="cephadm shell -- ceph orch osd rm $OSDS --replace"),
        PlanStep(description="Wait until every placement group has its copies elsewhere",
                 command="until cephadm shell -- ceph osd safe-to-destroy $OSDS; do sleep 60; done"),
    ]


def decommission_steps(inventory: Inventory, node: Node, *, kolla_inventory: str,
                       vms: int, osds: bool) -> PlanStep:
    """Taking ``node`` out: empty it, let Ceph move its data, stop its containers, drop its service records."""
    name = node.name
    children = [PlanStep(description="Verify health first: every service and agent up, Ceph HEALTH_OK",
                         command=HEALTH_COMMANDS)]
    if node.role == Role.compute:
        children += [
            PlanStep(description="Disable its compute service so nothing new is scheduled there",
                     command=f"openstack compute service set --disable --disable-reason 'replacing {name}' "
                             f"{name} nova-compute"),
            PlanStep(description=f"Live-migrate its {vms} VM(s) to the other hosts",
                     command=_on(LIVE_MIGRATE_HOST, name)),
            PlanStep(description="Verify no server is left on it (the list must be empty)",
                     command=f"openstack server list --all-projects --host {name} -f value -c ID"),
        ]
    children += _neutron_moves(inventory, node)
    if osds:
        children += _osd_steps(name)
    if _is_ceph_host(inventory, node):
        children.append(PlanStep(description="Move its other Ceph daemons (monitor, manager, crash, exporters) "
                                 "away; cephadm labels it _no_schedule and _no_conf_keyring",
                                 command=f"cephadm shell -- ceph orch host drain {name}"))
    if node.role != Role.storage:
        children.append(PlanStep(description="Stop every Kolla container on it (Kolla's guide for removing hosts)",
                                 command=f"kolla-ansible stop -i {kolla_inventory} --yes-i-really-really-mean-it "
                                         f"--limit {name}"))
        children += [
            PlanStep(description="Delete its network agents (the successor registers new ones)",
                     command=f"openstack network agent list --host {name} -f value -c ID | while read id; do "
                             "openstack network agent delete $id; done"),
            PlanStep(description="Delete its compute service records (and with them its resource provider)",
                     command=f"openstack compute service list --os-compute-api-version 2.53 --host {name} -f value "
                             "-c ID | while read id; do openstack compute service delete --os-compute-api-version "
                             "2.53 $id; done"),
        ]
    port = f" -p {node.bmc.port}" if node.bmc.port != 623 else ""
    children.append(PlanStep(description=f"Power the old machine off through its BMC {node.bmc.address} (the "
                             "password from IPMI_PASSWORD), then swap the hardware",
                             command=f"ipmitool -I lanplus -H {node.bmc.address}{port} -U {node.bmc.username} -E "
                                     "chassis power off"))
    return PlanStep(description=f"Take {name} out ({node.role.value}, rack {node.rack})", children=children)


def bring_up_steps(inventory: Inventory, node: Node, *, inventory_file: str, kolla_inventory: str,
                   manifests_dir: str, blueprint_file: str | None, osds: bool) -> PlanStep:
    """Bringing the successor in under the same name, once the inventory holds its BMC and MAC."""
    name = node.name
    bp = f" --blueprint {blueprint_file}" if blueprint_file else ""
    # Kolla's guide: a new controller's bootstrap and deploy include every controller (clusters such
    # as RabbitMQ need each other's /etc/hosts entries); a compute host alone is enough.
    limit = "control" if node.role == Role.control else name
    children = [
        PlanStep(description="Provision it (a state file of its own: the cloud's records the old machine as "
                             "deployed, and a run there would leave the name alone)",
                 command=f"cloudplan provision {inventory_file} --state replace-{name}.db --only {name}"),
        PlanStep(description="Regenerate the Kolla-Ansible and cephadm files (every existing password kept)",
                 command=f"cloudplan manifests {inventory_file} -o {manifests_dir}{bp}"),
    ]
    if node.role != Role.storage:
        children += [
            PlanStep(description="Prepare the host for Kolla (Docker, users, /etc/hosts)",
                     command=f"kolla-ansible bootstrap-servers -i {kolla_inventory} --limit {limit}"),
            PlanStep(description="Pull the images to it", command=f"kolla-ansible pull -i {kolla_inventory} "
                                                                 f"--limit {name}"),
            PlanStep(description="Deploy its containers", command=f"kolla-ansible deploy -i {kolla_inventory} "
                                                                 f"--limit {limit}"),
        ]
    if _is_ceph_host(inventory, node):
        children += [
            PlanStep(description="Let cephadm reach it (its key on the new OS)",
                     command=f"ssh-copy-id -f -i /etc/ceph/ceph.pub root@{name}"),
            PlanStep(description="Make it schedulable again: cephadm redeploys its daemons"
                     + (" and, from the OSD specs, OSDs on the new drives with the destroyed ids" if osds else ""),
                     # The drain set both (_no_conf_keyring from Reef on; an absent label only prints an error).
                     command=f"cephadm shell -- ceph orch host label rm {name} _no_schedule; "
                             f"cephadm shell -- ceph orch host label rm {name} _no_conf_keyring"),
            PlanStep(description="Wait for HEALTH_OK (backfill onto the new OSDs)", command=CEPH_HEALTH_WAIT),
        ]
    if node.role == Role.compute:
        children.append(PlanStep(description="Wait until its nova-compute reports up",
                                 command=_on(COMPUTE_UP_WAIT, name)))
    children.append(PlanStep(description="Verify health again", command=HEALTH_COMMANDS))
    return PlanStep(description=f"Bring {name}'s successor in", children=children)


def _warnings(inventory: Inventory, node: Node) -> list[str]:
    out = []
    if node.role == Role.control and len(inventory.by_role(Role.control)) < 3:
        out.append(f"{len(inventory.by_role(Role.control))} controller(s): Galera and RabbitMQ lose their quorum "
                   f"while {node.name} is out (three keep it with one gone)")
    if _is_ceph_host(inventory, node) and not any(node.drives.values()):
        out.append(f"{node.name} runs a Ceph monitor: the other monitors keep the quorum until it is back")
    return out


def check_replacement(inventory: Inventory, name: str, *, bmc_address: str, mac: str, cloud: Cloud | None = None,
                      protection: Protection | None = None, blueprint: Blueprint | None = None,
                      snapshot: Snapshot | None = None, defaults: UpgradeDefaults | None = None,
                      inventory_file: str = "inventory.yaml", manifests_dir: str = "deploy/",
                      blueprint_file: str | None = None) -> Replacement:
    """Whether ``name`` can be replaced now, and the steps. ``cloud`` is the VM placement (the drain
    check's); Ceph capacities and data come from ``snapshot`` (the live cluster), else ``blueprint``."""
    defaults = defaults or UpgradeDefaults()
    node = find_node(inventory, name, inventory_file)
    protection = protection or (blueprint.workload.policy.protection if blueprint else Protection())
    pools = ceph_pools(inventory, protection, blueprint.workload.policy.failure_domain.value if blueprint else None)
    osds = osd_checks(inventory, node, pools, tier_capacities(inventory, pools, blueprint=blueprint,
                                                               snapshot=snapshot),
                      data_per_copy(pools, protection, blueprint=blueprint, snapshot=snapshot))
    vms, ram, drainable, decided, drain_reason = _drain(cloud, node, defaults)
    reasons = ([drain_reason] if drain_reason else []) + [o.reason for o in osds if o.reason]
    warnings = _warnings(inventory, node)
    if node.role == Role.compute and cloud is None:
        warnings.append(f"no placement given: whether {node.name}'s VMs fit elsewhere was not checked")
    for o in osds:
        if o.per_copy_tib_after is None:
            why = o.data_source or "no capacities or data (give --blueprint or --snapshot)"
            warnings.append(f"tier {o.tier}: {why}: only its failure domains were checked")
    kolla_inventory = f"{manifests_dir.rstrip('/')}/multinode"
    mac = replaced_inventory(inventory, node.name, bmc_address=bmc_address, mac=mac).node(node.name).mac
    return Replacement(
        node=node.name, role=node.role, rack=node.rack, verdict="no-go" if reasons else "go", reasons=reasons,
        warnings=warnings, vms=vms, vm_ram_gib=ram, drainable=drainable, drained_by=decided, osds=osds,
        bmc_address=bmc_address, mac=mac,
        decommission=decommission_steps(inventory, node, kolla_inventory=kolla_inventory, vms=vms, osds=bool(osds)),
        bring_up=bring_up_steps(inventory, node, inventory_file=inventory_file, kolla_inventory=kolla_inventory,
                                manifests_dir=manifests_dir, blueprint_file=blueprint_file, osds=bool(osds)))


def write_replacement(inventory: Inventory, result: Replacement, path: str | Path) -> Path:
    """Write the inventory with the successor's BMC and MAC under the node's name, atomically.
    Refused (nothing written) for a no-go."""
    if result.verdict != "go":
        raise SpecError(f"{result.node} cannot be replaced now; the inventory was not changed", path=str(path))
    return write_model(replaced_inventory(inventory, result.node, bmc_address=result.bmc_address, mac=result.mac),
                       path)
