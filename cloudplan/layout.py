"""Blueprint -> Inventory: racks, U positions, hostnames, addresses, BMC references.

Placement rules, in order:
- controllers go one per rack on the first three racks when there are three or more;
- every other group is dealt round-robin over the racks, so losing a rack loses
  an even share of each kind (the rack failure domain the sizing assumed);
- nodes fill each rack from U1 upwards; the two leaves and the management switch
  sit at the top; a rack never exceeds its units or its power budget.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

from pydantic import Field, model_validator

from cloudplan.blueprint import Blueprint, NodeGroup, NodeRole
from cloudplan.controlplane import ControlPlane
from cloudplan.errors import Infeasible, SpecError
from cloudplan.inventory import (BMC, Expect, Inventory, Network, Node, ProvisioningConfig, RackDevice, RackInfo,
                                 Role)
from cloudplan.spec import Strict

ROLE_CODE = {NodeRole.control: "ctl", NodeRole.compute: "cmp", NodeRole.hyperconverged: "hci",
             NodeRole.storage: "sto"}
INVENTORY_ROLE = {NodeRole.control: Role.control, NodeRole.compute: Role.compute,
                  NodeRole.hyperconverged: Role.compute, NodeRole.storage: Role.storage}
# Networks every node gets an address on (BMC addresses come from the 'bmc' network).
NODE_NETWORKS = ("provisioning", "api", "storage")


class BMCDefaults(Strict):
    username: str = Field(default="admin", description="BMC user for every node")
    port: int = Field(default=623, gt=0, lt=65536, description="IPMI port")
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
    rack_prefix: str = Field(default="r", description="racks are named PREFIX1, PREFIX2, ...")
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
        return self.next_u + g.height_u - 1 <= self.usable_u and self.power_w + g.power_w <= self.power_budget_w


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


def _racks(bp: Blueprint, site: Site) -> list[_Rack]:
    racks = []
    for rg in bp.racks:
        for _ in range(rg.count):
            racks.append(_Rack(f"{site.rack_prefix}{len(racks) + 1}", rg.height_u - 3, rg.power_budget_w))
    # Leaves and the management switch draw from the rack's budget too.
    sw_power = sum(s.power_w * s.count for s in bp.switches if s.role != "spine") / max(1, len(racks))
    for r in racks:
        r.power_w = sw_power
    return racks


def _order(bp: Blueprint) -> list[NodeGroup]:
    rank = {NodeRole.control: 0, NodeRole.storage: 1, NodeRole.hyperconverged: 2, NodeRole.compute: 3}
    return sorted(bp.nodes, key=lambda g: (rank[g.role], g.key))


def _node(g: NodeGroup, name: str, rack: _Rack, site: Site, addrs: _Addresses) -> Node:
    b = site.bmc
    drives = {}
    for d in g.drives:
        drives[d.tier] = drives.get(d.tier, 0) + d.count
    return Node(name=name, role=INVENTORY_ROLE[g.role], rack=rack.name, u=rack.next_u, height_u=g.height_u,
                chassis=g.chassis,
                bmc=BMC(address=addrs.next("bmc", name), port=b.port, username=b.username,
                        password_env=b.password_env, password_file=b.password_file),
                addresses={n: addrs.next(n, name) for n in NODE_NETWORKS if n in site.networks},
                drives=drives, power_w=g.power_w,
                expect=Expect(cores=g.threads, ram_gib=g.ram_gib, disks=sum(d.count for d in g.drives)))


def _place(g: NodeGroup, racks: list[_Rack], start: int, site: Site, addrs: _Addresses, counter: dict) -> int:
    """Deal ``g``'s nodes round-robin from rack ``start``; returns the next start."""
    i = start
    for _ in range(g.count):
        for tries in range(len(racks)):
            rack = racks[(i + tries) % len(racks)]
            if rack.fits(g):
                break
        else:
            raise Infeasible(f"no rack has room for another {g.role.value} node ({g.height_u}U, {g.power_w:.0f} W): "
                             "the racks are full in space or power", requirement="racks")
        code = ROLE_CODE[g.role]
        counter[(rack.name, code)] = counter.get((rack.name, code), 0) + 1
        node = _node(g, f"{rack.name}-{code}-{counter[(rack.name, code)]:02d}", rack, site, addrs)
        rack.nodes.append(node)
        rack.next_u += g.height_u
        rack.power_w += g.power_w
        i = (i + tries + 1) % len(racks)
    return i


def _rack_info(bp: Blueprint, racks: list[_Rack]) -> list[RackInfo]:
    models = [rg for rg in bp.racks for _ in range(rg.count)]
    per_rack = {s.role: s for s in bp.switches if s.role in ("leaf", "management")}
    out = []
    for rack, model in zip(racks, models):
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
        out.append(RackInfo(name=rack.name, model=model.model, height_u=model.height_u,
                            power_budget_w=model.power_budget_w, devices=devs))
    return out


def layout(bp: Blueprint, site: Site) -> Inventory:
    """Place every node of ``bp`` in a rack and give it names and addresses from ``site``."""
    _check_site(site)
    racks = _racks(bp, site)
    if not racks:
        raise SpecError("the blueprint has no racks", field="racks")
    addrs, counter, start = _Addresses(site), {}, 0
    for g in _order(bp):
        start = 0 if g.role == NodeRole.control else start
        start = _place(g, racks, start, site, addrs, counter)
    nodes = [n for r in racks for n in r.nodes]
    return Inventory(name=bp.name, provisioning=site.provisioning, networks=site.networks, nodes=nodes,
                     racks=_rack_info(bp, racks), control_plane=site.control_plane)


def elevation(bp: Blueprint) -> Inventory:
    """The rack layout alone (names, U, power), for drawings: addresses come from a
    documentation-only placeholder site, since a blueprint has no site yet."""
    nets = {n: Network(cidr=c) for n, c in (("provisioning", "10.0.0.0/16"), ("api", "10.1.0.0/16"),
                                             ("bmc", "10.2.0.0/16"))}
    return layout(bp, Site(name="elevation", networks=nets))
