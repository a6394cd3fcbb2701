"""Layout of an expansion into the racks already standing: `cloudplan layout --existing`.

The installed nodes keep everything the existing inventory gives them (rack, U,
name, BMC, MAC, addresses). The nodes an expansion bought (``new`` in the
blueprint) go first into free units of the existing racks within each rack's
power, dealt round-robin over the racks as the first layout dealt its kinds,
then into new racks. Names continue each rack's count per role and addresses
continue after the highest one in use on each network, so no name or address of
a node, present or gone, is handed out again.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cloudplan.blueprint import Blueprint, NodeGroup, NodeRole, RackGroup
from cloudplan.errors import Infeasible, SpecError, UsageError
from cloudplan.inventory import BMCDriver, Inventory, Node, RackDevice, RackInfo
from cloudplan.layout import ROLE_CODE, Site, _node, rack_power_w
from cloudplan.sizing.milp import SWITCH_U_PER_RACK

_NAME = re.compile(r"^(?P<rack>.+)-(?P<code>[a-z]+)-(?P<n>\d+)$")


@dataclass
class _Space:
    """One rack's free units and power headroom."""

    name: str
    usable_u: int                     # units below the switches
    budget_w: float
    used_w: float = 0.0
    taken: set[int] = field(default_factory=set)

    def slot(self, g: NodeGroup) -> int | None:
        """The lowest U where a node of ``g`` fits, within units and power."""
        if self.used_w + rack_power_w(g) > self.budget_w + 1e-6:
            return None
        for u in range(1, self.usable_u - g.height_u + 2):
            if not any(x in self.taken for x in range(u, u + g.height_u)):
                return u
        return None

    def put(self, g: NodeGroup, u: int) -> None:
        self.taken.update(range(u, u + g.height_u))
        self.used_w += rack_power_w(g)


class _Continuing:
    """Addresses per network after the highest already in use (none reused, the gateway skipped)."""

    def __init__(self, site: Site, used: dict[str, list[ipaddress._BaseAddress]]):
        self._next = {}
        for name, net in site.networks.items():
            start = max(used.get(name, []), default=None)
            first = net.network.network_address + site.first_host
            self._next[name] = (start + 1) if start is not None and start >= first else first
        self._site = site

    def next(self, network: str, node: str) -> str:
        net = self._site.networks[network]
        a = self._next[network]
        if net.gateway and a == ipaddress.ip_address(net.gateway):
            a += 1
        if a not in net.network or a == net.network.broadcast_address:
            raise SpecError(f"network {network} has no address left for {node} after those in use",
                            field=f"networks.{network}.cidr")
        self._next[network] = a + 1
        return str(a)


def _bmc_ip(n: Node) -> str:
    if n.bmc.driver is BMCDriver.redfish:
        return urlsplit(n.bmc.url).hostname or ""
    return n.bmc.address


def _used_addresses(inv: Inventory) -> dict[str, list]:
    used: dict[str, list] = {}
    for n in inv.nodes:
        for net, text in n.addresses.items():
            used.setdefault(net, []).append(ipaddress.ip_interface(text).ip)
        try:
            used.setdefault("bmc", []).append(ipaddress.ip_address(_bmc_ip(n)))
        except ValueError:
            continue      # a BMC by hostname takes no address of the plan
    return used


def _peak_by_chassis(bp: Blueprint) -> dict[str, float]:
    return {g.chassis: rack_power_w(g) for g in bp.nodes if not g.new}


def _spaces(bp: Blueprint, inv: Inventory) -> list[_Space]:
    """The existing racks (inventory order), with what their nodes take."""
    models = {r.model: r for r in bp.racks}
    info = {r.name: r for r in inv.racks}
    names = list(dict.fromkeys([r.name for r in inv.racks] + [n.rack for n in inv.nodes]))
    peak = _peak_by_chassis(bp)
    out = []
    for name in names:
        ri = info.get(name)
        rg = models.get(ri.model) if ri and ri.model else (bp.racks[0] if bp.racks else None)
        height = ri.height_u if ri else (rg.height_u if rg else 42)
        budget = (rg.usable_power_w or rg.power_budget_w) if rg else (ri.power_budget_w if ri else float("inf"))
        s = _Space(name, height - SWITCH_U_PER_RACK, budget)
        for d in (ri.devices if ri else []):
            s.taken.update(range(d.u, d.u + d.height_u))
            s.used_w += d.power_w
        for n in inv.nodes:
            if n.rack == name:
                if n.u is not None:
                    s.taken.update(range(n.u, n.u + n.height_u))
                s.used_w += peak.get(n.chassis or "", n.power_w or 0.0)
        out.append(s)
    return out


def _new_racks(bp: Blueprint, spaces: list[_Space], prefix: str) -> tuple[list[_Space], list[RackInfo]]:
    """Racks the expansion bought, named after the highest existing number, with their switches."""
    more = bp.racks_count - len(spaces)
    if more <= 0:
        return [], []
    rg: RackGroup = bp.racks[-1]
    numbers = [int(m.group(1)) for s in spaces if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", s.name))]
    first = max(numbers, default=len(spaces)) + 1
    per = {s.role: s for s in bp.switches if s.role in ("leaf", "management")}
    # Two leaves and the management switch at the top of every rack draw from its budget.
    sw_w = 2 * (per["leaf"].power_w if "leaf" in per else 0) + (per["management"].power_w if "management" in per else 0)
    new, infos = [], []
    for i in range(more):
        name = f"{prefix}{first + i}"
        new.append(_Space(name, rg.height_u - SWITCH_U_PER_RACK, rg.usable_power_w or rg.power_budget_w,
                          used_w=sw_w))
        top, devs = rg.height_u, []
        if "leaf" in per:
            devs += [RackDevice(name=f"{name}-leaf-{s}", role="leaf", model=per["leaf"].model, u=top - k,
                                power_w=per["leaf"].power_w) for k, s in enumerate("ab")]
        if "management" in per:
            devs.append(RackDevice(name=f"{name}-mgmt", role="management", model=per["management"].model,
                                   u=top - 2, power_w=per["management"].power_w))
        infos.append(RackInfo(name=name, model=rg.model, height_u=rg.height_u, power_budget_w=rg.power_budget_w,
                              devices=devs))
    return new, infos


def _counters(inv: Inventory) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for n in inv.nodes:
        m = _NAME.match(n.name)
        if m:
            key = (m.group("rack"), m.group("code"))
            out[key] = max(out.get(key, 0), int(m.group("n")))
    return out


def expand_layout(bp: Blueprint, existing: Inventory, site: Site) -> Inventory:
    """``existing`` with the nodes ``bp`` bought placed, named and addressed; every old node as it was."""
    if bp.expansion is None:
        raise UsageError("layout --existing needs the blueprint of an expansion (`cloudplan size --installed`)")
    new_groups = [g for g in bp.nodes if g.new]
    rank = {NodeRole.control: 0, NodeRole.storage: 1, NodeRole.hyperconverged: 2, NodeRole.compute: 3}
    new_groups.sort(key=lambda g: (rank[g.role], g.key))
    spaces = _spaces(bp, existing)
    added, infos = _new_racks(bp, spaces, site.rack_prefix)
    racks = spaces + added
    counters = _counters(existing)
    addrs = _Continuing(site, _used_addresses(existing))
    has_ctl = {n.rack for n in existing.nodes if n.role.value == "control"}
    nodes, start = [], 0
    for g in new_groups:
        for _ in range(g.count):
            order = racks[start:] + racks[:start]
            if g.role == NodeRole.control:
                # a new controller goes where there is none yet, when it can
                order = sorted(order, key=lambda r: r.name in has_ctl)
            for rack in order:
                u = rack.slot(g)
                if u is not None:
                    break
            else:
                raise Infeasible(f"no existing or new rack has room for another {g.role.value} node "
                                 f"({g.height_u}U, {rack_power_w(g):.0f} W at peak)", requirement="racks")
            rack.put(g, u)
            start = (racks.index(rack) + 1) % len(racks)
            code = ROLE_CODE[g.role]
            counters[(rack.name, code)] = counters.get((rack.name, code), 0) + 1
            if g.role == NodeRole.control:
                has_ctl.add(rack.name)
            nodes.append(_node(g, f"{rack.name}-{code}-{counters[(rack.name, code)]:02d}", rack.name, u, site, addrs, []))
    inv = existing.model_copy(deep=True)
    inv.nodes = list(existing.nodes) + nodes
    inv.racks = list(existing.racks) + infos
    # The inventory's own checks (unique names, BMCs, MACs, addresses) judge the result.
    return Inventory.model_validate(inv.model_dump())
