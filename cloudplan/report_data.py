"""The figures of the sizing report as pandas tables: the report renders them, a notebook shows them.

Everything here reads a :class:`Blueprint` (and, for racks, the :class:`Inventory`
that :func:`cloudplan.layout.elevation` derives from it); nothing is re-solved.
"""

from __future__ import annotations

import math

import pandas as pd

from cloudplan.blueprint import Blueprint
from cloudplan.inventory import Inventory, Node, Role

# TCO categories the price model adds up, in the order finance reads them: bought once, then paid monthly.
CAPEX_CATEGORIES = ("servers", "network", "cabling", "racks")
OPEX_CATEGORIES = ("energy", "support", "rack_space")
CATEGORY_LABELS = {"servers": "servers", "network": "network", "cabling": "cables and optics", "racks": "racks",
                   "energy": "energy (power × PUE)",
                   "support": "hardware support", "rack_space": "rack space"}


def power_w(bp: Blueprint) -> float:
    """Typical draw of every node and switch, W (before PUE)."""
    return sum(n.power_w * n.count for n in bp.nodes) + sum(s.power_w * s.count for s in bp.switches)


def vm_count(bp: Blueprint, grown: bool = False) -> int:
    wl = bp.workload
    return sum(wl.grown_count(f) if grown else f.count for f in wl.flavors)


def cost_breakdown(bp: Blueprint) -> pd.DataFrame:
    """TCO by category over the horizon: category, kind (capex/opex), usd, share of TCO."""
    c = bp.cost
    known = [k for k in CAPEX_CATEGORIES + OPEX_CATEGORIES if k in c.breakdown_usd]
    # A newer price model may add categories: show them rather than drop dollars.
    extra = [k for k in c.breakdown_usd if k not in known]
    rows = [{"category": k, "label": CATEGORY_LABELS.get(k, k.replace("_", " ")),
             "kind": "capex" if k in CAPEX_CATEGORIES else "opex", "usd": c.breakdown_usd[k]} for k in known + extra]
    df = pd.DataFrame(rows, columns=["category", "label", "kind", "usd"])
    total = df["usd"].sum()
    df["share"] = df["usd"] / total if total else 0.0
    return df


def tco_by_year(bp: Blueprint) -> pd.DataFrame:
    """Cumulative spend at the end of each year by category: capex at year 0, opex accruing monthly.

    Its ``total`` column equals :func:`cloudplan.cost.tco_timeline`, and the last row the blueprint's TCO.
    """
    c = bp.cost
    months = c.horizon_months
    rows = []
    for year in range(0, math.ceil(months / 12.0 - 1e-9) + 1):
        elapsed = min(12.0 * year, months)
        row: dict[str, float] = {"year": year}
        for k, usd in c.breakdown_usd.items():
            row[k] = usd if k in CAPEX_CATEGORIES else usd * elapsed / months if months else 0.0
        row["total"] = sum(v for k, v in row.items() if k != "year")
        rows.append(row)
    return pd.DataFrame(rows)


def capacity_table(bp: Blueprint) -> pd.DataFrame:
    """Capacity against demand at the end of the horizon, all hosts up and with the failure domain lost."""
    cap = bp.capacity
    rows = [("vCPU", "vCPU", cap.demanded_vcpus, cap.offered_vcpus, cap.offered_vcpus_degraded),
            ("VM RAM", "GiB", cap.demanded_ram_gib, cap.offered_ram_gib, cap.offered_ram_gib_degraded)]
    for t in cap.tiers:
        rows.append((f"{t.tier.value} usable", "TiB", t.demanded_usable_tib, t.offered_usable_tib,
                     t.offered_usable_tib_degraded))
        if t.demanded_iops:
            deg = t.offered_iops_degraded if t.offered_iops_degraded is not None else t.offered_iops
            rows.append((f"{t.tier.value} client IOPS", "IOPS", t.demanded_iops, t.offered_iops, deg))
    df = pd.DataFrame(rows, columns=["resource", "unit", "demanded", "offered", "offered_domain_lost"])
    df["headroom_pct"] = [(o / d - 1) * 100 if d else math.nan for o, d in zip(df["offered"], df["demanded"])]
    df["headroom_domain_lost_pct"] = [(o / d - 1) * 100 if d else math.nan
                                      for o, d in zip(df["offered_domain_lost"], df["demanded"])]
    return df


def unit_costs(bp: Blueprint) -> pd.DataFrame:
    """What one unit sold costs per month over the horizon (all of TCO allocated)."""
    c = bp.cost
    rows = [("VM-month, average over all VMs (storage included)", c.usd_per_vm_month),
            ("vCPU-month", c.usd_per_vcpu_month), ("GiB-month of VM RAM", c.usd_per_gib_month)]
    rows += [(f"usable TiB-month, {tier}", v) for tier, v in c.usd_per_usable_tib_month.items()]
    rows += [(f"VM-month, flavor {f.flavor}", f.usd_per_vm_month) for f in c.flavors]
    return pd.DataFrame(rows, columns=["unit", "usd_per_month"])


def display_role(node: Node) -> str:
    """The role to draw: a compute node carrying OSD drives is hyperconverged."""
    if node.role == Role.compute and any(node.drives.values()):
        return "hyperconverged"
    return node.role.value


def rack_items(inv: Inventory) -> dict[str, list[dict]]:
    """Per rack, every node and switch with its U position, role and power (input of the drawings)."""
    items: dict[str, list[dict]] = {r.name: [] for r in inv.racks}
    for n in inv.nodes:
        drives = ", ".join(f"{count}x {tier.value}" for tier, count in n.drives.items() if count)
        detail = ", ".join(x for x in (n.chassis or "", drives and f"drives {drives}") if x)
        items.setdefault(n.rack, []).append({"name": n.name, "role": display_role(n), "u": n.u or 1,
                                             "height_u": n.height_u, "power_w": n.power_w or 0.0, "detail": detail})
    for r in inv.racks:
        for d in r.devices:
            items[r.name].append({"name": d.name, "role": d.role, "u": d.u, "height_u": d.height_u,
                                  "power_w": d.power_w, "detail": d.model})
    return items


def rack_table(inv: Inventory) -> pd.DataFrame:
    """One row per rack: devices, units and power used against what the rack offers."""
    items = rack_items(inv)
    rows = []
    for r in inv.racks:
        its = items[r.name]
        used_w = sum(i["power_w"] for i in its)
        roles: dict[str, int] = {}
        for i in its:
            roles[i["role"]] = roles.get(i["role"], 0) + 1
        rows.append({"rack": r.name, "model": r.model or "", "nodes": sum(1 for n in inv.nodes if n.rack == r.name),
                     "contents": ", ".join(f"{v} {k}" for k, v in roles.items()),
                     "u_used": sum(i["height_u"] for i in its), "u_total": r.height_u, "power_w": used_w,
                     "power_budget_w": r.power_budget_w,
                     "power_share": used_w / r.power_budget_w if r.power_budget_w else math.nan})
    return pd.DataFrame(rows, columns=["rack", "model", "nodes", "contents", "u_used", "u_total", "power_w",
                                       "power_budget_w", "power_share"])
