"""Capacity and when to buy: the live cloud's use against what survives its failure domain.

For every resource the scheduler or CRUSH places (vCPU, VM RAM, each Ceph
device class) the forecast gives the use in the newest snapshot, what is
offered with every domain up and with the largest domain lost (the N+1 the
cloud was sized for), the growth rate, and the date the use reaches each of
the two, plus the date to order by, a lead time earlier.

Compute headroom is aggregate (the sum over hosts, the largest host or rack
taken away); whether the VMs also fit host by host is the drain check's
question (`cloudplan upgrade rehearse`). Ceph headroom follows CRUSH: ``n``
copies or chunks on ``n`` distinct domains with capacities ``c_i`` hold ``S``
per copy when ``n*S <= sum_i min(c_i, S)``, below the nearfull ratio.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from cloudplan.blueprint import Blueprint
from cloudplan.day2.next_purchase import NextPurchase
from cloudplan.day2.snapshot import Snapshot
from cloudplan.errors import SpecError, UsageError
from cloudplan.inventory import Inventory
from cloudplan.sizing.crush import max_per_copy, without_largest
from cloudplan.spec import FailureDomain, Protection, Tier

# Procurement, delivery and racking of servers: about a quarter is what a
# mid-size operator plans for (DRAM and NVMe lead times of 8-12 weeks through
# 2025-2026); override with --lead-time-days.
DEFAULT_LEAD_TIME_DAYS = 90
TIB = 1024 ** 4
DAYS_PER_YEAR = 365.25


class ResourceForecast(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: str = Field(description="vcpu, ram or ceph:<device class>")
    unit: str = Field(description="unit of the figures: vCPU, GiB or usable TiB")
    used: float = Field(description="use in the newest snapshot")
    offered: float = Field(description="offered with every failure domain up")
    offered_n1: float = Field(description="offered with the largest failure domain lost")
    history: list[float] = Field(description="use in each snapshot, oldest first")
    growth_per_year: float = Field(description="compound yearly growth used for the dates")
    growth_source: str = Field(description="where the growth rate came from")
    runs_out_n1: str | None = Field(description="date the use reaches offered_n1 (ISO), None if never at this growth")
    runs_out: str | None = Field(description="date the use reaches offered (ISO), None if never at this growth")
    order_by: str | None = Field(description="runs_out_n1 minus the lead time (ISO)")
    overdue: bool = Field(description="order_by is on or before the newest snapshot: order now")

    @property
    def headroom_n1(self) -> float:
        return self.offered_n1 - self.used


class CapacityReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cloud: str = Field(description="cloud name from the blueprint")
    snapshots: list[str] = Field(description="snapshot times (ISO), oldest first")
    failure_domain: FailureDomain = Field(description="the domain whose loss N+1 covers")
    lead_time_days: int = Field(description="days between ordering and the hardware carrying load")
    compute_source: str = Field(description="placement or hypervisor-list")
    vms: int = Field(description="instances in the newest snapshot")
    vms_by_flavor: dict[str, int] = Field(description="instances per flavor in the newest snapshot")
    down_hosts: list[str] = Field(description="hypervisors reported down in the newest snapshot (not counted)")
    resources: list[ResourceForecast]
    notes: list[str] = Field(default_factory=list)
    next_purchase: NextPurchase | None = Field(default=None, description="the expansion sizing for the use "
                                                 "grown to the purchase after the next (capacity --next-purchase)")


def _fit_growth(days: list[float], used: list[float]) -> float | None:
    """Compound yearly growth by least squares on log(use); None without two positive points a day apart."""
    pts = [(d, math.log(u)) for d, u in zip(days, used) if u > 0]
    if len(pts) < 2 or max(d for d, _ in pts) - min(d for d, _ in pts) < 1.0:
        return None
    mx = sum(d for d, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    slope = sum((d - mx) * (y - my) for d, y in pts) / sum((d - mx) ** 2 for d, _ in pts)
    return math.exp(slope * DAYS_PER_YEAR) - 1.0


def _runs_out(used: float, capacity: float, growth: float, when: datetime) -> str | None:
    if used >= capacity:
        return when.date().isoformat()
    if used <= 0 or growth <= 0:
        return None
    years = math.log(capacity / used) / math.log1p(growth)
    if years > 100:
        return None
    return (when + timedelta(days=years * DAYS_PER_YEAR)).date().isoformat()


def _protection(bp: Blueprint, tier: str) -> Protection:
    """The tier's own protection where the workload gives one, else the policy's."""
    for demand in bp.workload.storage:
        if demand.tier.value == tier and getattr(demand, "protection", None) is not None:
            return demand.protection
    return bp.workload.policy.protection


def _compute_domains(snap: Snapshot, domain: FailureDomain, racks: dict[str, str] | None,
                     attr: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for h in snap.hosts:
        if not h.up:
            continue
        key = h.name
        if domain == FailureDomain.rack:
            if racks is None or h.name not in racks:
                raise SpecError(f"hypervisor {h.name!r} has no rack: the rack failure domain needs "
                                "--inventory with every compute host", path=snap.path)
            key = racks[h.name]
        out[key] += getattr(h, attr)
    return dict(out)


def _ceph_domains(snap: Snapshot, cls: str, domain: FailureDomain) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for h in snap.ceph_hosts:
        cap = h.bytes_by_class.get(cls, 0)
        if not cap:
            continue
        if domain == FailureDomain.rack and h.rack is None:
            raise SpecError(f"OSD host {h.name!r} is in no CRUSH rack, but the failure domain is rack",
                            path=snap.path)
        out[h.rack if domain == FailureDomain.rack else h.name] += cap
    return dict(out)


class _Series:
    """One resource's figures across the snapshots, before growth and dates."""

    def __init__(self, resource: str, unit: str, history: list[float], offered: float, offered_n1: float):
        self.resource, self.unit, self.history = resource, unit, history
        self.offered, self.offered_n1 = offered, offered_n1


def _compute_series(snaps: list[Snapshot], domain: FailureDomain, racks: dict[str, str] | None) -> list[_Series]:
    last = snaps[-1]
    out = []
    for resource, unit, offered_attr, used_attr, scale in (
            ("vcpu", "vCPU", "vcpus_offered", "vcpus_used", 1.0),
            ("ram", "GiB", "ram_mib_offered", "ram_mib_used", 1 / 1024)):
        doms = _compute_domains(last, domain, racks, offered_attr)
        history = [sum(getattr(h, used_attr) for h in s.hosts) * scale for s in snaps]
        out.append(_Series(resource, unit, history, sum(doms.values()) * scale,
                           sum(without_largest(list(doms.values()))) * scale))
    return out


def _ceph_series(bp: Blueprint, snaps: list[Snapshot], domain: FailureDomain) -> list[_Series]:
    last = snaps[-1]
    classes = sorted({c for h in last.ceph_hosts for c in h.bytes_by_class} | set(last.ceph_raw_used_bytes))
    known = {t.value for t in Tier}
    nearfull = bp.workload.policy.nearfull_ratio
    out = []
    for cls in classes:
        if cls not in known:
            continue  # a device class cloudplan does not plan (e.g. a hand-made one); reported in notes
        prot = _protection(bp, cls)
        copies = prot.min_hosts
        # Usable bytes per byte a copy (or chunk) holds: 1 for replicas, k for EC k+m.
        per_copy = 1.0 if prot.replicas is not None else float(prot.ec_k)
        doms = _ceph_domains(last, cls, domain)
        scale = per_copy * nearfull / TIB
        history = [s.ceph_raw_used_bytes.get(cls, 0) * prot.efficiency / TIB for s in snaps]
        out.append(_Series(f"ceph:{cls}", "usable TiB", history,
                           max_per_copy(list(doms.values()), copies) * scale,
                           max_per_copy(without_largest(list(doms.values())), copies) * scale))
    return out


def forecast(bp: Blueprint, snapshots: list[Snapshot], *, growth_per_year: float | None = None,
             inventory: Inventory | None = None, lead_time_days: int = DEFAULT_LEAD_TIME_DAYS) -> CapacityReport:
    """The capacity report for ``snapshots`` (any order) of the cloud ``bp`` describes."""
    if not snapshots:
        raise UsageError("give at least one snapshot directory")
    if growth_per_year is not None and not (-1 < growth_per_year <= 10):
        raise UsageError(f"--growth-per-year must be in (-1, 10], got {growth_per_year}")
    snaps = sorted(snapshots, key=lambda s: s.taken_at)
    domain = bp.workload.policy.failure_domain
    racks = {n.name: n.rack for n in inventory.nodes} if inventory else None
    series = _compute_series(snaps, domain, racks) + _ceph_series(bp, snaps, domain)
    days, last = [s.day for s in snaps], snaps[-1]
    notes = []
    resources = []
    for s in series:
        fitted = _fit_growth(days, s.history)
        if growth_per_year is not None:
            g, source = growth_per_year, "given (--growth-per-year)"
        elif fitted is not None:
            g, source = fitted, f"fitted to {len(snaps)} snapshots"
        else:
            g, source = bp.workload.growth_per_year, "the blueprint's workload growth (one snapshot)"
        used = s.history[-1]
        out_n1 = _runs_out(used, s.offered_n1, g, last.taken_at)
        order_by = None
        if out_n1 is not None:
            order_by = (datetime.fromisoformat(out_n1) - timedelta(days=lead_time_days)).date().isoformat()
        resources.append(ResourceForecast(
            resource=s.resource, unit=s.unit, used=round(used, 3), offered=round(s.offered, 3),
            offered_n1=round(s.offered_n1, 3), history=[round(v, 3) for v in s.history],
            growth_per_year=round(g, 4), growth_source=source, runs_out_n1=out_n1,
            runs_out=_runs_out(used, s.offered, g, last.taken_at), order_by=order_by,
            overdue=order_by is not None and order_by <= last.taken_at.date().isoformat()))
        if used > s.offered_n1:
            notes.append(f"{s.resource}: the use ({used:,.1f} {s.unit}) is already above what survives the loss "
                         f"of the largest {domain.value} ({s.offered_n1:,.1f}): the cloud is not N+1 today")
    odd = sorted({c for h in last.ceph_hosts for c in h.bytes_by_class} - {t.value for t in Tier})
    if odd:
        notes.append(f"Ceph device classes not planned by cloudplan, left out: {', '.join(odd)}")
    down = sorted(h.name for h in last.hosts if not h.up)
    if down:
        notes.append(f"{len(down)} hypervisor(s) down in the newest snapshot, not counted as capacity")
    return CapacityReport(
        cloud=bp.name, snapshots=[s.taken_at.isoformat() for s in snaps], failure_domain=domain,
        lead_time_days=lead_time_days, compute_source=last.source, vms=last.vms,
        vms_by_flavor=last.vms_by_flavor, down_hosts=down, resources=resources, notes=notes)

