"""The sizing report's plots as inline SVG strings (see :mod:`cloudplan.svg`).

A notebook shows the same strings with ``IPython.display.SVG``.
"""

from __future__ import annotations

from cloudplan import svg
from cloudplan.blueprint import Blueprint
from cloudplan.inventory import Inventory
from cloudplan.report_data import capacity_table, cost_breakdown, rack_items, tco_by_year

# One colour per TCO category in every chart: capex in blues/green, opex in warm colours.
CATEGORY_COLORS = {"servers": "#0072B2", "network": "#56B4E9", "racks": "#009E73", "energy": "#D55E00",
                   "support": "#E69F00", "rack_space": "#CC79A7"}
RACK_ROLES = ("control", "compute", "hyperconverged", "storage", "leaf", "management")
# Charts fill the report's column (1100 px less padding); they scale down on narrower screens.
CHART_WIDTH = 900


def usd(x: float) -> str:
    """``$1,234,567`` for amounts, ``$12.34`` below a hundred dollars (unit prices per month)."""
    if abs(x) < 0.005:
        return "$0"
    return f"${x:,.0f}" if abs(x) >= 100 else f"${x:,.2f}"


def money_scale(largest: float) -> tuple[float, str]:
    """Divisor and unit that keep axis labels short: thousands, or millions past five million."""
    return (1e6, "million USD") if largest >= 5e6 else (1e3, "thousand USD")


def _color(category: str, i: int) -> str:
    return CATEGORY_COLORS.get(category, svg.PALETTE[i % len(svg.PALETTE)])


def cost_breakdown_chart(bp: Blueprint) -> str:
    df = cost_breakdown(bp)
    years = bp.cost.horizon_months / 12.0
    labels = [f"{r.label} ({r.kind})" for r in df.itertuples()]
    texts = [f"{usd(r.usd)} ({r.share:.0%})" for r in df.itertuples()]
    return svg.hbar_chart(labels, list(df["usd"]), value_labels=texts,
                          colors=[_color(c, i) for i, c in enumerate(df["category"])],
                          title=f"Where the {usd(bp.cost.tco_usd)} of TCO over {years:g} years goes",
                          x_label="USD over the horizon", label_width=190, width=CHART_WIDTH)


def tco_chart(bp: Blueprint) -> str:
    """Cumulative spend per year, stacked by category: capex lands at year 0, opex grows each year."""
    df = tco_by_year(bp)
    cats = [c for c in df.columns if c not in ("year", "total")]
    div, unit = money_scale(float(df["total"].max()))
    series = {cat.replace("_", " "): [v / div for v in df[cat]] for cat in cats}
    return svg.stacked_bar_chart([f"year {y}" if y else "day 0" for y in df["year"]], series,
                                 colors=[_color(c, i) for i, c in enumerate(cats)],
                                 title=f"Cumulative spend over the horizon (TCO {usd(bp.cost.tco_usd)})",
                                 x_label="end of year", y_label="cumulative spend", y_unit=unit,
                                 width=CHART_WIDTH, height=360)


def capacity_chart(bp: Blueprint) -> str:
    df = capacity_table(bp)
    rows = [{"label": r.resource, "unit": r.unit, "target": r.demanded, "value": r.offered,
             "degraded": r.offered_domain_lost} for r in df.itertuples()]
    domain = bp.workload.policy.failure_domain.value
    return svg.target_chart(rows, title=f"Capacity against demand at the end of the horizon (N+1 by {domain})",
                            width=CHART_WIDTH)


def rack_drawings(inv: Inventory) -> list[tuple[str, str]]:
    """(rack name, SVG) for every rack, in rack order."""
    items = rack_items(inv)
    return [(r.name, svg.rack_elevation(r.name, r.height_u, items[r.name], model=r.model or "",
                                        power_budget_w=r.power_budget_w)) for r in inv.racks]


def rack_legend(inv: Inventory) -> str:
    present = {i["role"] for its in rack_items(inv).values() for i in its}
    roles = [r for r in RACK_ROLES if r in present] + sorted(present - set(RACK_ROLES))
    return svg.legend(roles, [svg.ROLE_COLORS.get(r, "#999999") for r in roles], title="Rack roles")


def charts(bp: Blueprint, inv: Inventory) -> dict[str, object]:
    """Every plot of the report, keyed as the template uses them."""
    return {"breakdown": cost_breakdown_chart(bp), "tco": tco_chart(bp), "capacity": capacity_chart(bp),
            "racks": rack_drawings(inv), "rack_legend": rack_legend(inv)}
