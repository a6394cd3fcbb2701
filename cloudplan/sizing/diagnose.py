"""Bad input, explained: which requirement of the workload no plan can meet, and warnings.

The MILP only says "infeasible". When it does, each requirement is tried alone in the
LP relaxation (quick, and infeasible alone means infeasible together); the first one
that fails is named by its field in the workload file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from cloudplan.errors import Infeasible
from cloudplan.sizing import milp
from cloudplan.sizing.options import NodeOption
from cloudplan.sizing.tiers import TIER_ORDER
from cloudplan.spec import Tier, Workload

log = logging.getLogger(__name__)


def field_of(wl: Workload, resource: str) -> str:
    """The workload field a demand resource comes from: flavors, storage[i].usable_tib or storage[i].iops."""
    if resource in ("vcpu", "ram"):
        return "flavors"
    kind, _, tier = resource.partition(":")
    i = next(i for i, s in enumerate(wl.storage) if s.tier == Tier(tier))
    return f"storage[{i}].{'usable_tib' if kind == 'raw' else 'iops'}"


def _alone(demand: milp.Demand, resource: str) -> milp.Demand:
    """The demand with only ``resource`` left (storage keeps its CRUSH copies)."""
    kind, _, tier = resource.partition(":")
    keep = Tier(tier) if tier else None
    return replace(demand, vcpu=demand.vcpu if resource == "vcpu" else 0.0,
                   ram_gib=demand.ram_gib if resource == "ram" else 0.0,
                   raw_tib={t: v for t, v in demand.raw_tib.items() if kind == "raw" and t == keep},
                   client_iops={t: v for t, v in demand.client_iops.items() if kind == "iops" and t == keep},
                   flavors=demand.flavors if resource in ("vcpu", "ram") else [],
                   copies={t: v for t, v in demand.copies.items() if kind == "raw" and t == keep},
                   per_copy_tib={t: v for t, v in demand.per_copy_tib.items() if kind == "raw" and t == keep},
                   min_tier_hosts=demand.min_tier_hosts if kind == "raw" else 0)


def explain(wl: Workload, demand: milp.Demand, options: list[NodeOption],
            build_for: Callable[[milp.Demand], Callable[[list[NodeOption]], milp.Model]]) -> Infeasible:
    """The error to raise for an infeasible model: the first requirement infeasible on its own."""
    limit = (f"within {wl.policy.max_racks} racks (policy.max_racks)" if wl.policy.max_racks
             else f"within {milp.RACK_COUNT_BOUND} racks (the model's bound on racks)")
    for res, value in demand.resources().items():
        try:
            milp.relax(build_for(_alone(demand, res))(options))
        except Infeasible:
            what = {"vcpu": f"{value:,.0f} vCPUs", "ram": f"{value:,.0f} GiB of VM RAM"}.get(res)
            if what is None:
                kind, _, tier = res.partition(":")
                what = (f"{value:,.4g} raw TiB on {tier}" if kind == "raw"
                        else f"{value:,.4g} client IOPS on {tier}")
            return Infeasible(f"no plan offers {what} at the end of the horizon {limit}",
                              requirement=field_of(wl, res))
    return Infeasible(f"no plan meets every requirement together {limit}, though each can be met alone",
                      requirement="policy.max_racks" if wl.policy.max_racks else None)


def root_disk_warning(wl: Workload) -> str | None:
    """Flavors' root disks (disk_gib x grown count) against the fastest tier, which holds Nova's pool."""
    disks_tib = sum(f.disk_gib * wl.grown_count(f) for f in wl.flavors) / 1024.0
    tiers = {wl.grown_storage(s).tier: wl.grown_storage(s).usable_tib for s in wl.storage}
    fastest = next((t for t in TIER_ORDER if t in tiers), None)
    if disks_tib <= 0 or fastest is None or disks_tib <= tiers[fastest]:
        return None
    i = next(i for i, s in enumerate(wl.storage) if s.tier == fastest)
    return (f"warning: the flavors' root disks come to {disks_tib:,.2f} TiB at the end of the horizon, more than "
            f"the {tiers[fastest]:,.1f} TiB usable of the {fastest.value} tier that holds the VM pool "
            f"(storage[{i}].usable_tib); count them in its usable_tib if they live there")
