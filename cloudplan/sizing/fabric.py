"""The leaf-spine fabric: how many spines, where they sit, and every cable and optic.

A two-tier Clos joins the racks' leaf pairs through spines. Every leaf cables all
its uplinks, the same number to each spine, so ECMP spreads traffic evenly: the
spine count divides the leaf's uplinks and is 2, 4 or 8. Spines of one model take
one port per uplink, so a spine layer holds at most ``spines * ports / uplinks``
leaves. Spines sit in the racks, spread evenly (:func:`spine_racks`), and the
cable between a leaf and a spine is chosen by its length (:func:`cable_for`).

Cable prices and reaches are named defaults (street prices, November 2026).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudplan.catalog import Catalog, Switch, SwitchRole

# Spine counts with an even ECMP spread; a count must also divide the leaf's uplinks.
ECMP_SPINE_COUNTS = (2, 4, 8)
# Each management switch uplinks once to each leaf of its rack's pair (when it has uplinks).
MGMT_UPLINKS_PER_SWITCH = 2
# Passive copper (DAC) reach: IEEE 802.3by 25GBASE-CR and 802.3bj 100GBASE-CR4 specify
# up to 5 m, vendors qualify 3 m at most for every port; active optical cables (AOC)
# are sold up to 30 m; beyond, a pair of SR4 transceivers over OM4 fibre (100 m).
DAC_MAX_M = 3.0
AOC_MAX_M = 30.0
# Racks stand in one row: 600 mm cabinets, and a run between racks climbs to the
# overhead tray and down again (1.5 m each way); inside a rack a cable is 1-2 m.
RACK_PITCH_M = 0.6
TRAY_DETOUR_M = 3.0
IN_RACK_M = 2.0
# Street prices per cable or optic, USD (FS.com / integrator quotes, 2026).
CABLE_PRICE_USD = {
    "dac-25g": 35.0,              # SFP28 passive DAC, 3 m
    "dac-100g": 90.0,             # QSFP28 passive DAC, 3 m
    "aoc-100g": 240.0,            # QSFP28 active optical cable, up to 30 m
    "optics-100g": 2 * 170.0 + 45.0,   # two QSFP28 SR4 transceivers and an MPO-12 OM4 trunk
    "cat6": 6.0,                  # RJ45 patch lead: BMCs and switch management ports
}


@dataclass(frozen=True)
class SpineChoice:
    model: Switch
    count: int

    def max_leaves(self, leaf: Switch) -> int:
        return self.count * self.model.ports // max(1, leaf.uplinks)


def spine_choices(cat: Catalog, leaf: Switch) -> list[SpineChoice]:
    """Every spine model and count with an even ECMP spread of ``leaf``'s uplinks."""
    models = sorted((s for s in cat.switches if s.role == SwitchRole.spine), key=lambda s: s.name)
    counts = [c for c in ECMP_SPINE_COUNTS if leaf.uplinks and leaf.uplinks % c == 0]
    return [SpineChoice(s, c) for s in models for c in counts]


def spine_racks(spines: int, racks: int) -> list[int]:
    """Rack index of each spine: spread evenly over the row, never more than ceil(spines / racks) in one."""
    if racks <= 0:
        return []
    return [(2 * j + 1) * racks // (2 * spines) for j in range(spines)]


def spines_in_fullest_rack(spines: int, racks: int) -> int:
    return math.ceil(spines / racks) if racks else 0


def distance_m(rack_a: int, rack_b: int) -> float:
    if rack_a == rack_b:
        return IN_RACK_M
    return abs(rack_a - rack_b) * RACK_PITCH_M + TRAY_DETOUR_M


def cable_for(length_m: float, speed_gbps: float) -> str:
    """The cable kind for a link of ``length_m`` at ``speed_gbps``: DAC, AOC or optics by reach."""
    fast = speed_gbps > 25
    if length_m <= DAC_MAX_M:
        return "dac-100g" if fast else "dac-25g"
    if length_m <= AOC_MAX_M:
        return "aoc-100g"
    return "optics-100g"


def cheapest_uplink_usd() -> float:
    """No leaf-spine link costs less than this (a lower bound for the MILP's objective)."""
    return min(CABLE_PRICE_USD[k] for k in ("dac-100g", "aoc-100g", "optics-100g"))


def node_cables_usd(nic_ports: int, leaf: Switch) -> float:
    """Cables of one node: a DAC per data port to its leaves, a patch lead for its BMC."""
    return nic_ports * CABLE_PRICE_USD[cable_for(IN_RACK_M, leaf.port_speed_gbps)] + CABLE_PRICE_USD["cat6"]


def mgmt_uplinks(mgmt: Switch) -> int:
    return min(mgmt.uplinks, MGMT_UPLINKS_PER_SWITCH)


def mgmt_uplink_cable(leaf: Switch, mgmt: Switch) -> str:
    return cable_for(IN_RACK_M, min(leaf.port_speed_gbps, mgmt.uplink_speed_gbps or leaf.port_speed_gbps))


@dataclass(frozen=True)
class Cable:
    kind: str
    purpose: str
    count: int

    @property
    def unit_price_usd(self) -> float:
        return CABLE_PRICE_USD[self.kind]


def cables(node_ports: list[tuple[int, int]], racks: int, leaves: int, mgmt_switches: int, spines: int,
           leaf: Switch, mgmt: Switch) -> list[Cable]:
    """Every cable of the plan. ``node_ports``: (data ports per node, nodes) for each group.

    Nodes, BMCs and management switches cable inside their rack; leaf-spine links take
    the cable their length asks for, leaf ``l`` sitting in rack ``l // 2`` and the
    spines where :func:`spine_racks` puts them.
    """
    data = sum(p * n for p, n in node_ports)
    nodes = sum(n for _, n in node_ports)
    out: dict[tuple[str, str], int] = {}

    def add(kind: str, purpose: str, count: int) -> None:
        if count > 0:
            out[kind, purpose] = out.get((kind, purpose), 0) + count

    add(cable_for(IN_RACK_M, leaf.port_speed_gbps), "node to leaf", data)
    add("cat6", "BMC to management switch", nodes)
    add(mgmt_uplink_cable(leaf, mgmt), "management switch to leaf", mgmt_uplinks(mgmt) * mgmt_switches)
    add("cat6", "switch management port", leaves + spines)
    if spines and racks > 1:
        where = spine_racks(spines, racks)
        per_spine = leaf.uplinks // spines
        for lf in range(leaves):
            for s in range(spines):
                kind = cable_for(distance_m(min(lf // 2, racks - 1), where[s]), leaf.uplink_speed_gbps)
                add(kind, "leaf to spine", per_spine)
    return [Cable(k, p, c) for (k, p), c in sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
