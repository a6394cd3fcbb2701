"""Capex, opex, TCO and unit costs. Never solves anything: it prices a plan.

Unit costs are per month *sold*: VM-months over the horizon follow the growth
curve, so a cloud that grows 15 % a year is not priced as if it were full
from day one.
"""

from __future__ import annotations

import math

import pandas as pd

from cloudplan.blueprint import CableLine, Cost, FlavorCost, NodeGroup, NodeRole, RackGroup, SwitchGroup
from cloudplan.catalog import PriceBook
from cloudplan.sizing.options import HOURS_PER_MONTH
from cloudplan.spec import Workload


def average_growth(wl: Workload) -> float:
    """Mean of (1+g)^t over the horizon: today's demand times this is the average demand."""
    g, h = wl.growth_per_year, wl.horizon_years
    if g <= 0:
        return 1.0
    return ((1 + g) ** h - 1) / (h * math.log(1 + g))


def energy_usd_per_month(power_w: float, pb: PriceBook) -> float:
    return power_w / 1000.0 * pb.pue * HOURS_PER_MONTH * pb.usd_per_kwh


def _node_split(n: NodeGroup) -> tuple[float, float, float]:
    """Split a node's price into CPU-side, RAM-side and storage-side.

    CPUs and DIMMs at their own prices, the barebone in proportion to them; on a
    hyperconverged host the OSDs' reserved share of cores and RAM is storage's, not
    the VMs' (blueprints without component prices halve the rest between CPU and RAM).
    """
    drives = sum(d.count * d.unit_price_usd for d in n.drives + n.db_drives)
    rest = n.unit_price_usd - drives
    if n.cpu_price_usd is None or n.dimm_price_usd is None or n.cpu_price_usd + n.dimm_price_usd <= 0:
        return rest / 2.0, rest / 2.0, drives
    share = n.cpu_price_usd / (n.cpu_price_usd + n.dimm_price_usd)
    cpu, ram = rest * share, rest * (1 - share)
    osd_cpu = cpu * min(1.0, n.osd_cores_reserved / n.cores) if n.cores else 0.0
    osd_ram = ram * min(1.0, n.osd_ram_gib_reserved / n.ram_gib) if n.ram_gib else 0.0
    return cpu - osd_cpu, ram - osd_ram, drives + osd_cpu + osd_ram


def bom_table(nodes: list[NodeGroup], switches: list[SwitchGroup], racks: list[RackGroup],
              cables: list[CableLine] = ()) -> pd.DataFrame:
    """Bill of materials, one row per line item."""
    rows = []
    for n in nodes:
        drives = ", ".join([f"{d.count}x {d.model}" for d in n.drives + n.local_drives]
                           + [f"{d.count}x {d.model} (block.db)" for d in n.db_drives]) or "-"
        rows.append({"role": n.role.value, "item": n.chassis, "cpu": f"{n.sockets}x {n.cpu}",
                     "ram_gib": n.ram_gib, "drives": drives, "count": n.count,
                     "unit_usd": round(n.unit_price_usd, 2), "line_usd": round(n.unit_price_usd * n.count, 2)})
    for s in switches:
        rows.append({"role": f"switch:{s.role}", "item": s.model, "cpu": "-", "ram_gib": 0, "drives": "-",
                     "count": s.count, "unit_usd": s.unit_price_usd, "line_usd": s.unit_price_usd * s.count})
    for c in cables:
        rows.append({"role": "cable", "item": f"{c.kind} ({c.purpose})", "cpu": "-", "ram_gib": 0, "drives": "-",
                     "count": c.count, "unit_usd": c.unit_price_usd, "line_usd": round(c.unit_price_usd * c.count, 2)})
    for r in racks:
        rows.append({"role": "rack", "item": r.model, "cpu": "-", "ram_gib": 0, "drives": "-", "count": r.count,
                     "unit_usd": r.unit_price_usd, "line_usd": r.unit_price_usd * r.count})
    return pd.DataFrame(rows, columns=["role", "item", "cpu", "ram_gib", "drives", "count", "unit_usd", "line_usd"])


def price_plan(wl: Workload, pb: PriceBook, nodes: list[NodeGroup], switches: list[SwitchGroup],
               racks: list[RackGroup], usable_tib_by_tier: dict[str, float], cables: list[CableLine] = ()) -> Cost:
    """Price a plan: totals, breakdown, and unit costs per vCPU, GiB, TiB and flavor."""
    months = wl.horizon_months
    server_capex = sum(n.unit_price_usd * n.count for n in nodes)
    net_capex = sum(s.unit_price_usd * s.count for s in switches)
    rack_capex = sum(r.unit_price_usd * r.count for r in racks)
    cable_capex = sum(c.unit_price_usd * c.count for c in cables)
    capex = server_capex + net_capex + rack_capex + cable_capex
    power_w = sum(n.power_w * n.count for n in nodes) + sum(s.power_w * s.count for s in switches)
    energy = energy_usd_per_month(power_w, pb)
    support = capex * pb.support_pct_per_year / 100.0 / 12.0
    space = pb.rack_usd_per_month * sum(r.count for r in racks)
    opex = energy + support + space
    tco = capex + opex * months
    breakdown = {"servers": server_capex, "network": net_capex, "cabling": cable_capex, "racks": rack_capex,
                 "energy": energy * months, "support": support * months, "rack_space": space * months}

    # Allocate every dollar of TCO to CPU, RAM or storage by each node's own hardware split;
    # shared items (controllers, network, racks, space) follow the same proportions.
    cpu_usd = ram_usd = 0.0
    storage_usd: dict[str, float] = {}
    for n in nodes:
        if n.role in (NodeRole.control, NodeRole.network):
            continue
        c, r, d = _node_split(n)
        if n.role == NodeRole.storage:
            c, r, d = 0.0, 0.0, n.unit_price_usd
        cpu_usd += c * n.count
        ram_usd += r * n.count
        for dl in n.drives:
            share = d * (dl.count * dl.unit_price_usd) / max(1e-9, sum(x.count * x.unit_price_usd for x in n.drives))
            storage_usd[dl.tier.value] = storage_usd.get(dl.tier.value, 0.0) + share * n.count
    allocated = cpu_usd + ram_usd + sum(storage_usd.values())
    scale = tco / allocated if allocated else 0.0

    avg = average_growth(wl)
    vm_months = sum(f.count for f in wl.flavors) * avg * months
    vcpu_months = sum(f.count * f.vcpus for f in wl.flavors) * avg * months
    gib_months = sum(f.count * f.ram_gib for f in wl.flavors) * avg * months
    per_vcpu = cpu_usd * scale / vcpu_months if vcpu_months else 0.0
    per_gib = ram_usd * scale / gib_months if gib_months else 0.0
    per_tib = {t: storage_usd.get(t, 0.0) * scale / (usable_tib_by_tier[t] / wl.growth_factor * avg * months)
               for t in usable_tib_by_tier if usable_tib_by_tier[t] > 0}
    return Cost(capex_usd=capex, opex_usd_per_month=opex, tco_usd=tco, horizon_months=months,
                usd_per_vm_month=tco / vm_months if vm_months else 0.0,
                usd_per_vcpu_month=per_vcpu, usd_per_gib_month=per_gib, usd_per_usable_tib_month=per_tib,
                flavors=[FlavorCost(flavor=f.name, usd_per_vm_month=f.vcpus * per_vcpu + f.ram_gib * per_gib)
                         for f in wl.flavors],
                breakdown_usd=breakdown)


def tco_timeline(cost: Cost) -> pd.DataFrame:
    """Cumulative spend by year: capex at month 0, opex monthly after."""
    years = math.ceil(cost.horizon_months / 12.0)
    rows = [{"year": y, "cumulative_usd": cost.capex_usd + cost.opex_usd_per_month * min(12.0 * y, cost.horizon_months)}
            for y in range(0, years + 1)]
    return pd.DataFrame(rows)


def flavor_table(cost: Cost) -> pd.DataFrame:
    return pd.DataFrame([{"flavor": f.flavor, "usd_per_vm_month": round(f.usd_per_vm_month, 2)} for f in cost.flavors])
