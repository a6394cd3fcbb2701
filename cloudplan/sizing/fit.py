"""Exact placement of the VMs onto the hosts the MILP bought.

The MILP reasons in totals (vCPU, RAM); fragments left on each host can make a
total that looks sufficient unplaceable when VMs are large against hosts. The
packing engine proves a placement exists with all hosts up and with the failure
domain lost; when it does not, the hosts a placement needs become lower bounds of
the MILP, and the blueprint reports both counts.

One placement into the hosts that survive the worst loss of every kind at once
(n - 1 per kind by host, n - ceil(n / R) by rack) proves every scenario with a
single packing; it is tried first, then each scenario on its own.
"""

from __future__ import annotations

import logging
import math

from cloudplan.blueprint import Placement, PlacementFill
from cloudplan.sizing.options import NodeOption
from cloudplan.sizing.packing import fill, pack, place, verify
from cloudplan.sizing.packing.types import BinType, ItemType, PackingResult, Pattern
from cloudplan.spec import FailureDomain, Workload

log = logging.getLogger(__name__)

# Packing the VMs the surviving hosts cannot take onto new hosts: a few VMs, the greedy usually settles it.
PLACE_TIME_LIMIT_S = 1.5
# A scenario check that the greedy and the fill cannot settle gets this long before the repair
# takes over: the exact model settles small cases in milliseconds and large ones not in seconds.
CHECK_TIME_LIMIT_S = 0.25


def flavor_items(wl: Workload) -> list[ItemType]:
    """Flavors at the end of the horizon as packing items: (vCPU, RAM MiB with the per-VM overhead)."""
    return [ItemType(f.name, (f.vcpus, int(math.ceil(wl.vm_ram_gib(f) * 1024 - 1e-6))), wl.grown_count(f))
            for f in wl.flavors if wl.grown_count(f) > 0]


def host_bin(o: NodeOption, count: int | None) -> BinType:
    # Nova compares floats; whole vCPUs and MiB lose nothing for integer flavor sizes.
    return BinType(o.key, (int(math.floor(o.vcpus + 1e-9)), int(math.floor(o.vm_ram_gib * 1024 + 1e-6))),
                   cost=1.0, max_count=count)


def _scenarios(chosen: list[tuple[NodeOption, int]], racks: int, domain: FailureDomain) -> list[dict[str, int]]:
    """Host counts per option: all up, then each way of losing the failure domain."""
    up = {o.key: n for o, n in chosen}
    if domain == FailureDomain.rack:
        return [up, {o.key: n - math.ceil(n / racks) for o, n in chosen}]
    return [up] + [{**up, o.key: n - 1} for o, n in chosen]


def surviving(n: int, racks: int, domain: FailureDomain) -> int:
    """Hosts of one kind left after the worst loss: one host, or the fullest rack's share."""
    return n - math.ceil(n / racks) if domain == FailureDomain.rack else n - 1


def hosts_for(c: int, racks: int, domain: FailureDomain) -> int:
    """The fewest hosts of a kind of which at least ``c`` survive the worst loss."""
    n = c + 1
    while surviving(n, racks, domain) < c:
        n += 1
    return n


def _place(items, chosen, counts: dict[str, int]) -> PackingResult:
    bins = [host_bin(o, counts[o.key]) for o, _ in chosen if counts[o.key] > 0]
    if not bins:
        return PackingResult([], {}, 0, 0, False, 0.0, "infeasible", message="no host left")
    return place(items, bins, time_limit_s=CHECK_TIME_LIMIT_S)


def _covered(counts: dict[str, int], proof: PackingResult | None) -> bool:
    """A known packing that needs no more hosts of any kind than ``counts`` proves a placement."""
    return proof is not None and all(counts.get(k, 0) >= n for k, n in proof.bins_by_type.items())


def _fill_surviving(items: list[ItemType], chosen, racks: int, domain: FailureDomain):
    """Fill the hosts that survive the worst loss of every kind: (placement, VMs left over)."""
    bins = [host_bin(o, surviving(n, racks, domain)) for o, n in chosen]
    return fill(items, bins)


def check(wl: Workload, vm_hosts: list[tuple[NodeOption, int]], racks: int,
          aggregate_hosts: int | None = None, proof: PackingResult | None = None) -> Placement:
    """Exact placement of the grown workload on ``vm_hosts``, all up and with the failure domain lost.

    ``proof`` is a packing found earlier (see :func:`required_hosts`); a scenario whose
    host counts cover it needs no new search.
    """
    items = flavor_items(wl)
    chosen = [(o, n) for o, n in vm_hosts if n > 0]
    domain = wl.policy.failure_domain
    scen = _scenarios(chosen, racks, domain)
    if chosen and not all(_covered(s, proof) for s in scen):
        joint, rest = _fill_surviving(items, chosen, racks, domain)
        if not rest:
            proof = joint
    up = proof if _covered(scen[0], proof) else _place(items, chosen, scen[0])
    ok_up = up.status in ("feasible", "optimal")
    ok_deg = ok_up and all(_covered(s, proof) or _place(items, chosen, s).status == "feasible" for s in scen[1:])
    fills = []
    if ok_up:
        used = up.fill(items, [host_bin(o, n) for o, n in chosen])
        for o, n in chosen:
            b = host_bin(o, n)
            dims = used.get(o.key, [(0, 0), (0, 0)])
            fills.append(PlacementFill(kind=o.key, hosts=n, vcpu_fill=dims[0][0] / (n * b.capacity[0]),
                                       ram_fill=dims[1][0] / (n * b.capacity[1])))
    hosts = sum(n for _, n in chosen)
    patterns = [{"kind": p.bin_type, "multiplicity": p.multiplicity, "vms": p.items} for p in up.patterns]
    return Placement(feasible=ok_up, feasible_degraded=ok_deg, fills=fills,
                     aggregate_only_hosts=aggregate_hosts if aggregate_hosts is not None else hosts,
                     exact_hosts=hosts, patterns=patterns)


def required_hosts(wl: Workload, vm_hosts: list[tuple[NodeOption, int]], racks: int,
                   cost_usd: dict[str, float]) -> tuple[dict[str, int], PackingResult]:
    """Host counts per VM-carrying configuration that provably admit an exact placement
    with the failure domain lost.

    The hosts of the plan that survive the worst loss are filled first (they are
    bought already: see :func:`cloudplan.sizing.packing.fill`); the VMs left over
    go onto the cheapest new hosts of these configurations (``cost_usd`` each).
    With ``c`` hosts of a kind in that packing, ``n`` such that n - 1 >= c (or
    n - ceil(n / R) >= c by rack) covers any loss; the packing is the proof.
    """
    items = flavor_items(wl)
    domain = wl.policy.failure_domain
    chosen = [(o, n) for o, n in vm_hosts if n > 0]
    placed, rest = _fill_surviving(items, chosen, racks, domain)
    patterns = list(placed.patterns)
    if rest:
        bins = [BinType(o.key, host_bin(o, 1).capacity, cost=cost_usd[o.key]) for o, _ in chosen]
        patterns += pack(rest, bins, time_limit_s=PLACE_TIME_LIMIT_S).patterns
    proof = _as_proof(patterns)
    # the proof is what the plan's exactness rests on: check it independently of how it was found
    verify(proof, items, [host_bin(o, None) for o, _ in chosen])
    need = {k: hosts_for(c, racks, domain) for k, c in proof.bins_by_type.items() if c > 0}
    log.info("exact placement: %d VMs left for new hosts; the packing uses %s", sum(i.count for i in rest),
             proof.bins_by_type)
    return need, proof


def _as_proof(patterns: list[Pattern]) -> PackingResult:
    """One packing from the surviving hosts' fill and the new hosts' packing (cost: hosts)."""
    by_type: dict[str, int] = {}
    for p in patterns:
        by_type[p.bin_type] = by_type.get(p.bin_type, 0) + p.multiplicity
    hosts = sum(by_type.values())
    return PackingResult(patterns, by_type, float(hosts), 0.0, False, 0.0, "feasible", stats={"method": "fill"})
