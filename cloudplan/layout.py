"""Blueprint -> Inventory: racks, U positions, hostnames, addresses, BMC references.

Placement rules, in order:
- controllers go one per rack on the first three racks when there are three or more;
- every other group is dealt round-robin over the racks, so losing a rack loses
  an even share of each kind (the rack failure domain the sizing assumed);
- nodes fill each rack from U1 upwards; the two leaves and the management switch
  sit at the top, the spines below them in the racks :func:`fabric.spine_racks`
  picks (spread evenly); a rack never exceeds its units or its power budget (peak
  draw against the derated feed, when the blueprint gives them);
- a converged control plane (edge) runs on the first three hyperconverged hosts,
  one per rack when the racks allow, which join the control role too.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

from pydantic import Field, model_validator

from cloudplan.blueprint import Blueprint, NodeGroup, NodeRole
from cloudplan.controlplane import ControlPlane
from cloudplan.errors import Infeasible, SpecError
from cloudplan.inventory import (BMC, BMCDriver, Expect, Inventory, Network, Node, ProvisioningConfig, RackDevice, RackInfo,
                                 Role)
from cloudplan.sizing.fabric import spine_racks
from cloudplan.spec import Strict

ROLE_CODE = {NodeRole.control: "ctl", NodeRole.compute: "cmp", NodeRole.hyperconverged: "hci",
             NodeRole.storage: "sto", NodeRole.network: "net"}
INVENTORY_ROLE = {NodeRole.control: Role.control, NodeRole.compute: Role.compute,
                  NodeRole.hyperconverged: Role.compute, NodeRole.storage: Role.storage,
                  NodeRole.network: Role.network}
CONVERGED_CONTROLLERS = 3
# Networks every node gets an address on (BMC addresses come from the 'bmc' network).
NODE_NETWORKS = ("provisioning", "api", "storage")


class BMCDefaults(Strict):
    username: str = Field(default="admin", description="BMC user for every node")
    port: int = Field(default=623, gt=0, lt=65536, description="IPMI port")
    driver: BMCDriver | None = Field(default=None, description="ipmi | redfish for every node; default: what "
                                     "the catalog says of each chassis (redfish for 2026 boards)")
    ca_file: str | None = Field(default=None, description="Redfish: CA bundle the BMC certificates chain to")
    password_env: str | None = Field(default=None, description="environment variable with the password "
                                     "(BMC_PASSWORD when neither this nor password_file is given)")
    password_file: str | None = Field(default=None, description="0600 file with the password")

    @model_validator(mode="after")
    def _one_secret_source(self) -> "BMCDefaults":
        if self.password_env and self.password_file:
            raise ValueError("give one of password_env or password_file, not both")
        if not self.password_file and not self.password_env:
            self.password_env = "BMC_PASSWORD"
        return self


class Site(Strict):
    """Where the blueprint goes: networks, naming, BMC credential reference."""

    name: str = Field(description="site name")
    # Node hostnames start with it: lowercase letters, digits and inner hyphens only.
    rack_prefix: str = Field(default="r", pattern=r"^[a-z]([a-z0-9-]{0,20}[a-z0-9])?$",
                             description="racks are named PREFIX1, PREFIX2, ...")
    networks: dict[str, Network] = Field(description="provisioning, api, bmc (required); storage, external (optional)")
    first_host: int = Field(default=10, ge=1, description="offset of the first node address in each network")
    provisioning: ProvisioningConfig | None = Field(default=None, description="boot service settings")
    bmc: BMCDefaults = Field(default_factory=BMCDefaults, description="BMC credentials reference")
    control_plane: ControlPlane | None = Field(default=None, description="registry, VIPs, TLS, Magnum options, "
                                               "copied into the inventory for `cloudplan manifests`")


@dataclass
class _Rack:
    name: str
    usable_u: int
    power_budget_w: float
    next_u: int = 1
    power_w: float = 0.0
    nodes: list[Node] = field(default_factory=list)

    def fits(self, g: NodeGroup) -> bool:
        return (self.next_u + g.height_u - 1 <= self.usable_u
                and self.power_w + rack_power_w(g) <= self.power_budget_w + 1e-6)


def rack_power_w(g: NodeGroup) -> float:
    """What a node takes from its rack's budget: its peak draw (typical for blueprints without one)."""
    return g.peak_power_w if g.peak_power_w is not None else g.power_w


class _Addresses:
    """Hands out host addresses per network in order, skipping the gateway."""

    def __init__(self, site: Site):
        self._iters = {}
        for name, net in site.networks.items():
            hosts = net.network.hosts()
            skip = {ipaddress.ip_address(net.gateway)} if net.gateway else set()
            self._iters[name] = (h for h in itertools.islice(hosts, site.first_host - 1, None) if h not in skip)

    def next(self, network: str, node: str) -> str:
        try:
            return str(next(self._iters[network]))
        except StopIteration:
            raise SpecError(f"network {network} has no address left for {node}", field=f"networks.{network}.cidr") from None


def _check_site(site: Site) -> None:
    for req in ("provisioning", "api", "bmc"):
        if req not in site.networks:
            raise SpecError(f"the site needs a '{req}' network", field=f"networks.{req}")


def _racks(bp: Blueprint, prefix: str) -> list[_Rack]:
    racks = []
    for rg in bp.racks:
        for _ in range(rg.count):
            budget = rg.usable_power_w if rg.usable_power_w is not None else rg.power_budget_w
            racks.append(_Rack(f"{prefix}{len(racks) + 1}", rg.height_u - 3, budget))
    # Leaves and the management switch draw from the rack's budget too, and the spines from theirs.
    sw_power = sum(s.power_w * s.count for s in bp.switches if s.role != "spine") / max(1, len(racks))
    for r in racks:
        r.power_w = sw_power
    spine = _spine(bp)
    if spine is not None and racks:
        for i in spine_racks(spine.count, len(racks)):
            racks[i].usable_u -= spine.height_u
            racks[i].power_w += spine.power_w
    return racks


def _spine(bp: Blueprint):
    return next((s for s in bp.switches if s.role == "spine" and s.count), None)


def _order(bp: Blueprint) -> list[NodeGroup]:
    rank = {NodeRole.control: 0, NodeRole.network: 1, NodeRole.storage: 2, NodeRole.hyperconverged: 3,
            NodeRole.compute: 4}
    return sorted(bp.nodes, key=lambda g: (rank[g.role], g.key))


def _node(g: NodeGroup, name: str, rack: str, u: int, site: Site, addrs: _Addresses, also: list[Role]) -> Node:
    b = site.bmc
    drives = {}
    for d in g.drives:
        drives[d.tier] = drives.get(d.tier, 0) + d.count
    return Node(name=name, role=INVENTORY_ROLE[g.role], also=also, rack=rack, u=u, height_u=g.height_u,
                chassis=g.chassis,
                bmc=_bmc(g, addrs.next("bmc", name), b),
                addresses={n: addrs.next(n, name) for n in NODE_NETWORKS if n in site.networks},
                drives=drives, db_devices=sum(d.count for d in g.db_drives), power_w=g.power_w,
                expect=Expect(cores=g.threads, ram_gib=g.ram_gib,
                              disks=sum(d.count for d in g.drives + g.db_drives + g.local_drives)))


def _bmc(g: NodeGroup, address: str, b: BMCDefaults) -> BMC:
    driver = b.driver or BMCDriver(g.bmc)
    secret = {"password_env": b.password_env, "password_file": b.password_file}
    if driver is BMCDriver.redfish:
        host = f"[{address}]" if ":" in address else address
        return BMC(driver=driver, address=f"https://{host}", username=b.username, ca_file=b.ca_file, **secret)
    return BMC(address=address, port=b.port, username=b.username, **secret)


def _deal(g: NodeGroup, racks: list[_Rack], start: int) -> tuple[list[tuple[_Rack, int]], int]:
    """Deal ``g``'s nodes round-robin from rack ``start``: (rack, first U) of each node, and the next start."""
    i, out = start, []
    for _ in range(g.count):
        for tries in range(len(racks)):
            rack = racks[(i + tries) % len(racks)]
            if rack.fits(g):
                break
        else:
            raise Infeasible(f"no rack has room for another {g.role.value} node ({g.height_u}U, "
                             f"{rack_power_w(g):.0f} W at peak): the racks are full in space or power",
                             requirement="racks")
        out.append((rack, rack.next_u))
        rack.next_u += g.height_u
        rack.power_w += rack_power_w(g)
        i = (i + tries + 1) % len(racks)
    return out, i


def rack_plan(bp: Blueprint) -> list[tuple[str, list[NodeGroup]]]:
    """Which rack every node of ``bp`` goes to, by the rules above: (rack name, one group per node).

    Sizing calls this to check that a plan lays out and to measure what a rack loss takes.
    """
    racks, dealt = _plan(bp, "r")
    return [(r.name, [g for g, rr, _ in dealt if rr is r]) for r in racks]


def _plan(bp: Blueprint, prefix: str) -> tuple[list[_Rack], list[tuple[NodeGroup, _Rack, int]]]:
    """The racks, and every node in the order it was dealt: (group, rack, first U)."""
    racks = _racks(bp, prefix)
    if not racks:
        raise SpecError("the blueprint has no racks", field="racks")
    dealt, start = [], 0
    for g in _order(bp):
        start = 0 if g.role == NodeRole.control else start
        got, start = _deal(g, racks, start)
        dealt += [(g, r, u) for r, u in got]
    return racks, dealt


def _rack_info(bp: Blueprint, racks: list[_Rack]) -> list[RackInfo]:
    models = [rg for rg in bp.racks for _ in range(rg.count)]
    per_rack = {s.role: s for s in bp.switches if s.role in ("leaf", "management")}
    out = []
    for idx, (rack, model) in enumerate(zip(racks, models)):
        top = model.height_u
        devs = []
        if "leaf" in per_rack:
            lf = per_rack["leaf"]
            devs += [RackDevice(name=f"{rack.name}-leaf-{s}", role="leaf", model=lf.model, u=top - k, power_w=lf.power_w)
                     for k, s in enumerate("ab")]
        if "management" in per_rack:
            mg = per_rack["management"]
            devs.append(RackDevice(name=f"{rack.name}-mgmt", role="management", model=mg.model, u=top - 2,
                                   power_w=mg.power_w))
        spine, below = _spine(bp), top - 3
        for j in (j for j, i in enumerate(spine_racks(spine.count, len(racks)) if spine else []) if i == idx):
            devs.append(RackDevice(name=f"spine-{j + 1}", role="spine", model=spine.model, u=below - spine.height_u + 1,
                                   height_u=spine.height_u, power_w=spine.power_w))
            below -= spine.height_u
        out.append(RackInfo(name=rack.name, model=model.model, height_u=model.height_u,
                            power_budget_w=model.power_budget_w, devices=devs))
    return out


def _converged_hosts(bp: Blueprint, dealt: list[tuple[NodeGroup, _Rack, int]]) -> set[int]:
    """Indices (in ``dealt``) of the hyperconverged hosts that carry a converged control plane:
    the first of each rack in turn, so they span as many racks as there are."""
    if not bp.workload.policy.converged_control_plane:
        return set()
    hci = [(i, r.name) for i, (g, r, _) in enumerate(dealt) if g.role == NodeRole.hyperconverged]
    if len(hci) < CONVERGED_CONTROLLERS:
        raise Infeasible(f"a converged control plane needs {CONVERGED_CONTROLLERS} hyperconverged hosts; the "
                         f"blueprint has {len(hci)}", requirement="policy.converged_control_plane")
    order = sorted(hci, key=lambda x: (sum(1 for j, r in hci if r == x[1] and j < x[0]), x[0]))
    return {i for i, _ in order[:CONVERGED_CONTROLLERS]}


def layout(bp: Blueprint, site: Site) -> Inventory:
    """Place every node of ``bp`` in a rack and give it names and addresses from ``site``."""
    _check_site(site)
    racks, dealt = _plan(bp, site.rack_prefix)
    addrs, counter = _Addresses(site), {}
    by_rack: dict[str, list[Node]] = {r.name: [] for r in racks}
    converged = _converged_hosts(bp, dealt)
    for i, (g, rack, u) in enumerate(dealt):
        code = ROLE_CODE[g.role]
        counter[(rack.name, code)] = counter.get((rack.name, code), 0) + 1
        by_rack[rack.name].append(_node(g, f"{rack.name}-{code}-{counter[(rack.name, code)]:02d}", rack.name, u,
                                        site, addrs, [Role.control] if i in converged else []))
    nodes = [n for r in racks for n in by_rack[r.name]]
    return Inventory(name=bp.name, provisioning=site.provisioning, networks=site.networks, nodes=nodes,
                     racks=_rack_info(bp, racks), control_plane=site.control_plane)


def elevation(bp: Blueprint) -> Inventory:
    """The rack layout alone (names, U, power), for drawings: addresses come from a
    documentation-only placeholder site, since a blueprint has no site yet."""
    nets = {n: Network(cidr=c) for n, c in (("provisioning", "10.0.0.0/16"), ("api", "10.1.0.0/16"),
                                             ("bmc", "10.2.0.0/16"))}
    return layout(bp, Site(name="elevation", networks=nets))
