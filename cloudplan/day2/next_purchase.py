"""The next purchase: the expansion sizing run on the live cloud's use, grown to the next buy.

The capacity report gives today's use and each resource's growth; the workload
sized is the installed blueprint's (flavor shapes, tiers, policy) with today's
instance counts per flavor, today's usable TiB per Ceph tier, and the growth of
each over the years until the purchase after this one. The flavors grow at the
vCPU growth (one rate for every flavor is what a workload file holds); each
tier's usable TiB is scaled so that it reaches its own fitted growth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from cloudplan.blueprint import Blueprint
from cloudplan.catalog import Catalog
from cloudplan.cost import bom_table
from cloudplan.errors import UsageError
from cloudplan.sizing.expansion import expand_cloud
from cloudplan.spec import Workload

if TYPE_CHECKING:   # the report holds a NextPurchase: its module imports this one
    from cloudplan.day2.capacity import CapacityReport


class PurchaseLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="compute, storage, hyperconverged or control")
    chassis: str = Field(description="catalog chassis")
    cpu: str = Field(description="CPUs per node, e.g. 2x epyc-9455")
    ram_gib: int = Field(description="RAM per node, GiB")
    drives: str = Field(description="data drives per node")
    count: int = Field(description="nodes to buy")
    unit_price_usd: float = Field(description="price per node, USD")


class NextPurchase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    years: float = Field(description="years of growth the purchase carries, from the newest snapshot")
    growth_per_year: float = Field(description="growth of the instance counts (the vCPU growth)")
    vms_sized: int = Field(description="instances at the end of those years")
    usable_tib_sized: dict[str, float] = Field(description="usable TiB per tier at the end of those years")
    lines: list[PurchaseLine] = Field(description="what to buy")
    added_racks: int = Field(description="racks to add")
    added_switches: dict[str, int] = Field(description="switches to add, by role")
    capex_usd: float = Field(description="hardware bought, USD")
    tco_usd: float = Field(description="capex + opex of what is bought over those years, USD")
    notes: list[str] = Field(default_factory=list)


def purchase_workload(bp: Blueprint, report: CapacityReport, years: float) -> tuple[Workload, list[str]]:
    """The blueprint's workload with today's use and the report's growth over ``years``."""
    by = {r.resource: r for r in report.resources}
    g = max(0.0, by["vcpu"].growth_per_year) if "vcpu" in by else bp.workload.growth_per_year
    factor = (1 + g) ** years
    wl = bp.workload.model_copy(deep=True)
    wl.horizon_years, wl.growth_per_year = years, g
    notes = []
    known = {f.name for f in wl.flavors}
    for f in wl.flavors:
        f.count = report.vms_by_flavor.get(f.name, 0)
    unknown = sorted(set(report.vms_by_flavor) - known)
    if unknown:
        notes.append(f"flavors not in the blueprint's workload (their shapes are unknown), not sized: "
                     f"{', '.join(unknown)}")
    if not any(f.count for f in wl.flavors):
        raise UsageError("none of the live instances is of a flavor the blueprint's workload knows: "
                         "nothing to size the next purchase for")
    for s in wl.storage:
        r = by.get(f"ceph:{s.tier.value}")
        if r is None:
            notes.append(f"{s.tier.value}: no live figures; its demand stays the blueprint's")
            s.usable_tib = bp.workload.grown_storage(s).usable_tib / factor
            continue
        today = s.usable_tib
        s.usable_tib = r.used * (1 + max(0.0, r.growth_per_year)) ** years / factor
        if s.iops is not None and today > 0:
            s.iops *= r.used / today
    return Workload.model_validate(wl.model_dump()), notes


def next_purchase(bp: Blueprint, report: CapacityReport, cat: Catalog, *, years: float,
                  source: str = "blueprint") -> NextPurchase:
    """Size the cheapest addition to ``bp`` that carries the use grown over ``years``, N+1."""
    wl, notes = purchase_workload(bp, report, years)
    grown = expand_cloud(wl, cat, bp, source=source)
    lines = [PurchaseLine(role=r.role, chassis=r.item, cpu=r.cpu, ram_gib=r.ram_gib, drives=r.drives, count=r.count,
                          unit_price_usd=r.unit_usd)
             for r in bom_table([n for n in grown.nodes if n.new], [], []).itertuples()]
    e = grown.expansion
    return NextPurchase(years=years, growth_per_year=round(wl.growth_per_year, 4),
                        vms_sized=sum(wl.grown_count(f) for f in wl.flavors),
                        usable_tib_sized={s.tier.value: round(wl.grown_storage(s).usable_tib, 3) for s in wl.storage},
                        lines=lines, added_racks=e.added_racks, added_switches=e.added_switches,
                        capex_usd=round(e.capex_usd, 2), tco_usd=round(e.tco_usd, 2), notes=notes)
