"""Exact placement of the VMs onto the hosts the MILP bought.

The MILP reasons in totals (vCPU, RAM); fragments left on each host can make a
total that looks sufficient unplaceable when VMs are large against hosts. The
packing engine proves a placement exists with all hosts up and with the failure
domain lost; when it does not, hosts are added to the group that carries the
most VMs until it does, and the blueprint reports both counts.
"""

from __future__ import annotations

import logging
import math

from cloudplan.blueprint import Placement, PlacementFill
from cloudplan.sizing.options import NodeOption
from cloudplan.sizing.packing import pack, place
from cloudplan.sizing.packing_types import BinType, ItemType, PackingResult
from cloudplan.spec import FailureDomain, Workload

log = logging.getLogger(__name__)

PLACE_TIME_LIMIT_S = 1.5
# A scenario check that the greedy cannot settle gets this long before the packing repair takes over.
CHECK_TIME_LIMIT_S = 0.5


def flavor_items(wl: Workload) -> list[ItemType]:
    """Flavors at the end of the horizon as packing items: (vCPU, RAM MiB)."""
    return [ItemType(f.name, (f.vcpus, int(math.ceil(f.ram_gib * 1024))), wl.grown_count(f))
            for f in wl.flavors if wl.grown_count(f) > 0]


def host_bin(o: NodeOption, count: int) -> BinType:
    # Nova compares floats; whole vCPUs and MiB lose nothing for integer flavor sizes.
    return BinType(o.key, (int(math.floor(o.vcpus + 1e-9)), int(math.floor(o.vm_ram_gib * 1024 + 1e-6))),
                   cost=1.0, max_count=count)


def _scenarios(chosen: list[tuple[NodeOption, int]], racks: int, domain: FailureDomain) -> list[dict[str, int]]:
    """Host counts per option: all up, then each way of losing the failure domain."""
    up = {o.key: n for o, n in chosen}
    if domain == FailureDomain.rack:
        return [up, {o.key: n - math.ceil(n / racks) for o, n in chosen}]
    return [up] + [{**up, o.key: n - 1} for o, n in chosen]


def _place(items, chosen, counts: dict[str, int]) -> PackingResult:
    bins = [host_bin(o, counts[o.key]) for o, _ in chosen if counts[o.key] > 0]
    if not bins:
        return PackingResult([], {}, 0, 0, False, 0.0, "infeasible", message="no host left")
    return place(items, bins, time_limit_s=CHECK_TIME_LIMIT_S)


def _covered(counts: dict[str, int], proof: PackingResult | None) -> bool:
    """A known packing that needs no more hosts of any kind than ``counts`` proves a placement."""
    return proof is not None and all(counts.get(k, 0) >= n for k, n in proof.bins_by_type.items())


def check(wl: Workload, vm_hosts: list[tuple[NodeOption, int]], racks: int,
          aggregate_hosts: int | None = None, proof: PackingResult | None = None) -> Placement:
    """Exact placement of the grown workload on ``vm_hosts``, all up and with the failure domain lost.

    ``proof`` is a packing found earlier (see :func:`required_hosts`); a scenario whose
    host counts cover it needs no new search.
    """
    items = flavor_items(wl)
    chosen = [(o, n) for o, n in vm_hosts if n > 0]
    scen = _scenarios(chosen, racks, wl.policy.failure_domain)
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

    The packing engine finds the cheapest exact packing over these configurations
    (counts c). Adding one host of every kind covers the loss of any one host; with
    racks, n - ceil(n / R) >= c covers the loss of the fullest rack.
    """
    items = flavor_items(wl)
    bins = [BinType(o.key, host_bin(o, 1).capacity, cost=cost_usd[o.key]) for o, _ in vm_hosts]
    res = pack(items, bins, time_limit_s=PLACE_TIME_LIMIT_S)
    need = {}
    for o, _ in vm_hosts:
        c = res.bins_by_type.get(o.key, 0)
        if c == 0:
            continue
        if wl.policy.failure_domain == FailureDomain.rack:
            n = c
            while n - math.ceil(n / racks) < c:
                n += 1
            need[o.key] = n
        else:
            need[o.key] = c + 1
    return need, res
