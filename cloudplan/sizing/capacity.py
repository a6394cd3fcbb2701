"""The capacity table of a plan: what it offers against demand, all up and with its failure domain lost.

Storage is measured the way CRUSH places data (:mod:`cloudplan.sizing.crush`) on
the failure domains of the blueprint itself: hosts, or the racks the layout deals
the nodes into. Nothing here comes from the MILP, so the table checks the model.
"""

from __future__ import annotations

import math

from cloudplan.blueprint import Blueprint, Capacity, NodeGroup, TierCapacity
from cloudplan.catalog import TIB_PER_TB
from cloudplan.errors import Infeasible
from cloudplan.sizing import crush
from cloudplan.sizing.options import NodeOption
from cloudplan.sizing.tiers import tier_demands
from cloudplan.spec import FailureDomain, Tier, Workload


def group_raw_tib(g: NodeGroup, tier: Tier) -> float:
    """Raw TiB of ``tier`` in one node of group ``g``."""
    return sum(d.count * d.capacity_tb * TIB_PER_TB for d in g.drives if d.tier == tier)


def domain_capacities(bp: Blueprint, tier: Tier) -> list[float]:
    """Raw TiB of ``tier`` per failure domain: per host, or per rack as the layout deals the nodes.

    A rack plan that does not lay out falls back to the even spread's emptiest rack
    (floor(n / R) nodes of each kind) for every rack.
    """
    if bp.workload.policy.failure_domain == FailureDomain.host:
        return [c for g in bp.nodes for c in [group_raw_tib(g, tier)] * g.count if c > 0]
    from cloudplan.layout import rack_plan  # layout reads blueprints; import late to keep sizing importable alone
    try:
        return [sum(group_raw_tib(g, tier) for g in groups) for _, groups in rack_plan(bp)]
    except Infeasible:
        R = max(1, bp.racks_count)
        low = sum(group_raw_tib(g, tier) * (g.count // R) for g in bp.nodes)
        return [low] * R


def storage_tiers(bp: Blueprint, chosen: list[tuple[NodeOption, int]]) -> list[TierCapacity]:
    wl = bp.workload
    out = []
    for td in tier_demands(wl):
        prot = td.protection
        caps = domain_capacities(bp, td.tier)
        # Offered usable in the tier's demand units: per-copy capacity over per-copy need.
        up, down = (crush.max_per_copy(c, td.copies) for c in (caps, crush.without_largest(caps)))
        scale = td.usable_tib / td.per_copy_tib if td.per_copy_tib else 0.0
        iops = sum(o.iops.get(td.tier, 0.0) * n for o, n in chosen)
        iops_lost = _loss(chosen, bp.racks_count, wl.policy.failure_domain, lambda o, t=td.tier: o.iops.get(t, 0.0))
        out.append(TierCapacity(tier=td.tier, demanded_usable_tib=td.usable_tib, offered_usable_tib=up * scale,
                                offered_usable_tib_degraded=down * scale, raw_tib=sum(caps),
                                protection=prot.describe(), metadata_usable_tib=td.metadata_usable_tib,
                                failure_domains=len(caps), largest_domain_raw_tib=max(caps, default=0.0),
                                demanded_iops=td.iops, offered_iops=iops, offered_iops_degraded=iops - iops_lost,
                                read_fraction=td.read_fraction))
    return out


def _loss(chosen: list[tuple[NodeOption, int]], racks: int, domain: FailureDomain, cap) -> float:
    """Capacity lost with the failure domain: the largest host, or the fullest rack (even spread)."""
    if domain == FailureDomain.rack:
        return sum(cap(o) * math.ceil(n / racks) for o, n in chosen)
    return max((cap(o) for o, n in chosen if n > 0), default=0.0)


def compute_capacity(wl: Workload, chosen: list[tuple[NodeOption, int]], racks: int, vcpu_demand: float,
                     ram_demand: float) -> Capacity:
    """vCPU and VM RAM offered against demand; storage tiers are added by :func:`storage_tiers`."""
    dom = wl.policy.failure_domain
    vcpus = sum(o.vcpus * n for o, n in chosen)
    ram = sum(o.vm_ram_gib * n for o, n in chosen)
    vm_hosts = [(o, n) for o, n in chosen if o.vcpus > 0]
    cores = sum(o.cores * n for o, n in vm_hosts)
    return Capacity(demanded_vcpus=vcpu_demand, offered_vcpus=vcpus,
                    offered_vcpus_degraded=vcpus - _loss(chosen, racks, dom, lambda o: o.vcpus),
                    demanded_ram_gib=ram_demand, offered_ram_gib=ram,
                    offered_ram_gib_degraded=ram - _loss(chosen, racks, dom, lambda o: o.vm_ram_gib),
                    tiers=[], ram_per_core_gib=sum(o.ram_gib * n for o, n in vm_hosts) / cores if cores else 0.0)
