"""Facts about the site that every manifest needs, derived once from the inventory.

Pure functions: which three nodes are the controllers, which hosts go in each
Kolla-Ansible host group, the API virtual IP, the interfaces, the storage
tiers. Problems a user must fix are :class:`ManifestError`; things that work
but deserve a look are returned as warnings.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from cloudplan.controlplane import ControlPlane
from cloudplan.errors import ManifestError
from cloudplan.inventory import Inventory, Node, Role
from cloudplan.spec import Tier

log = logging.getLogger(__name__)

# A MariaDB Galera / RabbitMQ quorum needs three members: Kolla-Ansible's
# control group is exactly three hosts here.
CONTROLLERS = 3
API_NETWORK = "api"
EXTERNAL_NETWORK = "external"
STORAGE_NETWORK = "storage"
# Optional networks: the public API VIP's own network, and live migration kept off the API network.
PUBLIC_NETWORK = "public"
MIGRATION_NETWORK = "migration"
# Ceph replicated pools default to size 3: a tier on fewer hosts cannot keep
# three copies on distinct hosts.
CEPH_REPLICAS = 3


@dataclass
class Site:
    """What the templates are rendered from."""

    name: str
    controllers: list[Node]
    spare_controllers: list[Node]
    groups: dict[str, list[Node]]
    api_addresses: dict[str, str]
    vip: str
    api_cidr: str
    interfaces: dict[str, str]
    tiers: list[Tier]
    tier_hosts: dict[Tier, list[Node]]
    storage_cidr: str | None
    racks_used: int
    external_vip: str
    external_vip_interface: str | None
    control_plane: ControlPlane
    ssh_user: str | None
    ssh_key: str | None
    warnings: list[str] = field(default_factory=list)
    failure_domain: str | None = None    # the blueprint policy's CRUSH failure domain (None: by racks spanned)


def spread(nodes: list[Node]) -> list[Node]:
    """``nodes`` ordered one per rack in turn (racks and names sorted), so any prefix spans most racks."""
    by_rack: dict[str, list[Node]] = {}
    for n in sorted(nodes, key=lambda n: (n.rack, n.name)):
        by_rack.setdefault(n.rack, []).append(n)
    return [n for row in zip_longest(*by_rack.values()) for n in row if n is not None]


def choose_controllers(inv: Inventory) -> tuple[list[Node], list[Node], list[str]]:
    """Three control-role nodes on three different racks when the racks allow it.

    Deterministic: racks by name, nodes by name within a rack, taken one per
    rack in turn, so the first three picks sit on distinct racks whenever the
    controllers span three racks.
    """
    controls = inv.by_role(Role.control)
    if len(controls) < CONTROLLERS:
        names = ", ".join(n.name for n in controls) or "none"
        raise ManifestError(
            f"nodes[].role: the inventory has {len(controls)} control node(s) ({names}); Kolla-Ansible needs "
            f"{CONTROLLERS} controllers so MariaDB and RabbitMQ keep a quorum when one fails")
    order = spread(controls)
    chosen, spare = order[:CONTROLLERS], order[CONTROLLERS:]
    by_rack = {n.rack for n in controls}
    warnings = []
    racks = {n.rack for n in inv.nodes}
    chosen_racks = {n.rack for n in chosen}
    if len(chosen_racks) < CONTROLLERS:
        where = "the site has only %d rack(s)" % len(racks) if len(racks) < CONTROLLERS else \
            "the control-role nodes span only %d of the site's %d racks" % (len(by_rack), len(racks))
        warnings.append(f"controllers {', '.join(n.name for n in chosen)} share racks ({where}): "
                        "losing one rack can stop the control plane")
    if spare:
        warnings.append(f"control-role node(s) {', '.join(n.name for n in spare)} are not in Kolla-Ansible's "
                        f"control group (it takes {CONTROLLERS}); give them another role or leave them spare")
    return chosen, spare, warnings


def host_groups(inv: Inventory, controllers: list[Node]) -> tuple[dict[str, list[Node]], list[str]]:
    """Kolla-Ansible's host groups from the inventory's roles."""
    warnings = []
    network = inv.by_role(Role.network)
    if not network:
        network = list(controllers)
        warnings.append("no network-role node: HAProxy, keepalived and the Neutron agents run on the controllers")
    compute = inv.by_role(Role.compute)
    if not compute:
        raise ManifestError("the inventory has no compute node: nothing would run the instances")
    storage = inv.by_role(Role.storage)
    if not storage:
        storage = list(controllers)
        warnings.append("no storage-role node: cinder-volume runs on the controllers")
    groups = {
        "control": list(controllers),
        "network": network,
        "compute": compute,
        "storage": storage,
        # Monitoring services (when an override enables them) run beside the control plane.
        "monitoring": list(controllers),
    }
    return groups, warnings


def api_network(inv: Inventory) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    net = inv.networks.get(API_NETWORK)
    if net is None:
        raise ManifestError(f"the inventory has no {API_NETWORK!r} network (networks.{API_NETWORK}): "
                            "Kolla-Ansible's APIs and its virtual IP live on it")
    return net.network


def api_addresses(inv: Inventory, nodes: list[Node]) -> dict[str, str]:
    """Each host's address on the API network, checked to be inside it."""
    net = api_network(inv)
    out = {}
    for n in nodes:
        addr = n.addresses.get(API_NETWORK)
        if addr is None:
            raise ManifestError(f"node {n.name}: no address on the {API_NETWORK!r} network "
                                f"(nodes[].addresses.{API_NETWORK}); Kolla-Ansible reaches hosts there")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise ManifestError(f"node {n.name}: addresses.{API_NETWORK} {addr!r} is not an IP address") from None
        if ip not in net:
            raise ManifestError(f"node {n.name}: addresses.{API_NETWORK} {addr} is outside {net}")
        out[n.name] = str(ip)
    return out


def _taken(inv: Inventory, name: str) -> set:
    """Addresses of a network nobody else may take: its network, broadcast and gateway, every node's."""
    net = inv.networks[name].network
    taken = {net.network_address, net.broadcast_address}
    gw = inv.networks[name].gateway
    if gw:
        taken.add(ipaddress.ip_address(gw))
    for n in inv.nodes:
        for addr in n.addresses.values():
            try:
                taken.add(ipaddress.ip_address(addr))
            except ValueError:
                continue
    return taken


def choose_vip(inv: Inventory, requested: str | None = None, *, network: str = API_NETWORK,
               field_name: str = "control_plane.internal_vip", also_taken: tuple[str, ...] = ()) -> str:
    """A virtual IP on ``network``: ``requested`` if usable, else the lowest free address below the nodes'.

    The site leaves the first host addresses of each network to gateways and
    VIPs (the layout's ``first_host``); the nodes start above them, so the
    lowest free address under the first node address is in that reserved range.
    """
    if network not in inv.networks:
        raise ManifestError(f"{field_name}: the inventory has no {network!r} network (networks.{network})")
    net = inv.networks[network].network
    taken = _taken(inv, network) | {ipaddress.ip_address(a) for a in also_taken}
    if requested is not None:
        try:
            ip = ipaddress.ip_address(str(requested))
        except ValueError:
            raise ManifestError(f"{field_name} {requested!r} is not an IP address") from None
        if ip not in net:
            raise ManifestError(f"{field_name} {ip} is outside the {network!r} network {net}")
        if ip in taken:
            raise ManifestError(f"{field_name} {ip} is already taken on {net} "
                                "(a node's address, the gateway, the other VIP, or the network/broadcast address)")
        return str(ip)
    nodes = [ipaddress.ip_address(n.addresses[network]) for n in inv.nodes if network in n.addresses]
    ceiling = min(nodes) if nodes else net.broadcast_address
    for ip in net.hosts():
        if ip >= ceiling:
            break
        if ip not in taken:
            return str(ip)
    raise ManifestError(f"{field_name}: no free address on networks.{network} ({net}) below the first node "
                        f"address {ceiling} (the range the site reserves for gateways and VIPs); set {field_name}")


def external_vip(inv: Inventory, cp: ControlPlane, internal: str) -> tuple[str, str | None]:
    """(external VIP, its interface when it is not the API interface): on the 'public' network if any."""
    if PUBLIC_NETWORK in inv.networks:
        net = inv.networks[PUBLIC_NETWORK]
        if not net.interface:
            raise ManifestError(f"networks.{PUBLIC_NETWORK}.interface is not set: the external VIP lives there")
        return choose_vip(inv, cp.external_vip, network=PUBLIC_NETWORK,
                          field_name="control_plane.external_vip"), net.interface
    return choose_vip(inv, cp.external_vip, field_name="control_plane.external_vip", also_taken=(internal,)), None


def interfaces(inv: Inventory) -> tuple[dict[str, str], list[str]]:
    """Kolla-Ansible interface variables from the site's networks."""
    out, warnings = {}, []
    api = inv.networks[API_NETWORK]
    if not api.interface:
        raise ManifestError(f"networks.{API_NETWORK}.interface is not set: Kolla-Ansible binds its APIs "
                            "and the virtual IP to that interface")
    out["network_interface"] = api.interface
    ext = inv.networks.get(EXTERNAL_NETWORK)
    if ext is None or not ext.interface:
        warnings.append(f"no networks.{EXTERNAL_NETWORK}.interface: neutron_external_interface keeps "
                        "Kolla-Ansible's default; instances get no external network until it is set")
    else:
        out["neutron_external_interface"] = ext.interface
    mig = inv.networks.get(MIGRATION_NETWORK)
    if mig is not None:
        if not mig.interface:
            raise ManifestError(f"networks.{MIGRATION_NETWORK}.interface is not set: live migration uses it")
        out["migration_interface"] = mig.interface
    return out, warnings


def blueprint_tiers(blueprint: Mapping[str, Any] | None) -> list[Tier] | None:
    """Storage tiers a blueprint plans: from a `cloudplan size` blueprint, the tiers with
    drives installed (``capacity.tiers[].raw_tib``); from a hand-written one, its
    ``storage`` list of ``{tier: ...}`` (or a mapping by tier). None when it names none."""
    if not blueprint:
        return None
    capacity = blueprint.get("capacity")
    if isinstance(capacity, Mapping) and capacity.get("tiers") is not None:
        raw = [t.get("tier") for t in capacity["tiers"] if isinstance(t, Mapping) and (t.get("raw_tib") or 0) > 0]
    elif blueprint.get("storage"):
        storage = blueprint["storage"]
        raw = list(storage) if isinstance(storage, Mapping) else [
            s.get("tier") if isinstance(s, Mapping) else s for s in storage]
    else:
        return None
    tiers = []
    for t in raw:
        try:
            tiers.append(Tier(str(t)))
        except ValueError:
            raise ManifestError(f"blueprint storage tier {t!r} is not one of "
                                f"{', '.join(x.value for x in Tier)}") from None
    return tiers


def blueprint_failure_domain(blueprint: Mapping[str, Any] | None) -> str | None:
    """The failure domain a blueprint was sized for (``workload.policy.failure_domain`` of a
    `cloudplan size` blueprint, or ``policy.failure_domain`` of a hand-written one); None without."""
    if not blueprint:
        return None
    workload = blueprint.get("workload")
    policy = (workload.get("policy") if isinstance(workload, Mapping) else None) or blueprint.get("policy")
    value = policy.get("failure_domain") if isinstance(policy, Mapping) else None
    if value is None:
        return None
    if str(value) not in ("host", "rack"):
        raise ManifestError(f"blueprint policy.failure_domain {str(value)[:40]!r} is not host or rack")
    return str(value)


def domain_warnings(tier_hosts: dict[Tier, list[Node]], domain: str | None) -> list[str]:
    """A rack-domain policy on a tier whose hosts span fewer racks than its copies: CRUSH cannot
    place every copy, so the pools stay undersized until the racks exist."""
    if domain != "rack":
        return []
    return [f"the blueprint's failure domain is rack but the {t.value} tier's hosts span "
            f"{len({n.rack for n in hosts})} rack(s): its {CEPH_REPLICAS} copies need {CEPH_REPLICAS} racks"
            for t, hosts in tier_hosts.items() if len({n.rack for n in hosts}) < CEPH_REPLICAS]


def storage_tiers(inv: Inventory, blueprint: Mapping[str, Any] | None) -> tuple[list[Tier], dict[Tier, list[Node]], list[str]]:
    """Tiers present (fastest first) and the hosts carrying each; a blueprint tier without drives is an error."""
    hosts = {t: [n for n in inv.nodes if n.drives.get(t, 0) > 0] for t in Tier}
    present = [t for t in Tier if hosts[t]]
    warnings = []
    wanted = blueprint_tiers(blueprint)
    if wanted is not None:
        missing = [t.value for t in wanted if t not in present]
        if missing:
            raise ManifestError(f"the blueprint has storage tier(s) {', '.join(missing)} but no inventory node "
                                "has data drives of that tier (nodes[].drives)")
        extra = [t.value for t in present if t not in wanted]
        if extra:
            # One pool per tier the blueprint has: drives nobody planned for stay out of Ceph.
            warnings.append(f"the inventory has {', '.join(extra)} drives the blueprint does not plan for; "
                            "they are left out of Ceph (no OSDs, no pool)")
            present = [t for t in present if t in wanted]
    if not present:
        raise ManifestError("no node has data drives (nodes[].drives): the recipe backs Cinder, Glance and Nova "
                            "with Ceph, which needs at least one storage tier")
    for t in present:
        if len(hosts[t]) < CEPH_REPLICAS:
            warnings.append(f"the {t.value} tier is on {len(hosts[t])} host(s): a {CEPH_REPLICAS}-replica pool "
                            "needs 3 hosts to place its copies")
    return present, {t: hosts[t] for t in present}, warnings


def describe_site(inv: Inventory, *, blueprint: Mapping[str, Any] | None = None,
                  vip: str | None = None) -> Site:
    """Everything the templates need, checked. ``vip`` (from the overrides) wins over the site's."""
    cp = inv.control_plane or ControlPlane()
    controllers, spare, warnings = choose_controllers(inv)
    groups, w = host_groups(inv, controllers)
    warnings += w
    members = {n.name: n for g in groups.values() for n in g}
    addrs = api_addresses(inv, list(members.values()))
    ifaces, w = interfaces(inv)
    warnings += w
    tiers, tier_hosts, w = storage_tiers(inv, blueprint)
    warnings += w
    domain = blueprint_failure_domain(blueprint)
    warnings += domain_warnings(tier_hosts, domain)
    storage_net = inv.networks.get(STORAGE_NETWORK)
    name = (blueprint or {}).get("name") or inv.name or "cloud"
    field_name = "kolla_internal_vip_address" if vip is not None else "control_plane.internal_vip"
    internal = choose_vip(inv, vip if vip is not None else cp.internal_vip, field_name=field_name)
    ext, ext_iface = external_vip(inv, cp, internal)
    prov = inv.provisioning
    return Site(
        name=str(name), controllers=controllers, spare_controllers=spare, groups=groups,
        api_addresses=addrs, vip=internal, api_cidr=str(api_network(inv)),
        interfaces=ifaces, tiers=tiers, tier_hosts=tier_hosts,
        storage_cidr=storage_net.cidr if storage_net else None,
        racks_used=len({n.rack for n in controllers}), external_vip=ext, external_vip_interface=ext_iface,
        control_plane=cp, ssh_user=prov.ssh_user if prov else None,
        ssh_key=prov.ssh_private_key_file if prov else None, warnings=warnings, failure_domain=domain)
