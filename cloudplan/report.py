"""The sizing report: one self-contained HTML file (tables and inline SVG plots) or Markdown.

    from cloudplan.report import write_report
    write_report(blueprint, "report.html")          # or "report.md", or fmt="md"

It shows the summary, the bill of materials, the cost breakdown and the TCO
over the horizon, capacity against demand with headroom, and a drawing of
every rack (from :func:`cloudplan.layout.elevation`). Templates live in
``templates/report/`` and render with StrictUndefined: a missing figure is an
error, never a blank in front of the people who sign the purchase order.
"""

from __future__ import annotations

import datetime as dt
import logging
from enum import Enum
from pathlib import Path
from typing import Any

import jinja2

from cloudplan.blueprint import Blueprint
from cloudplan.cost import bom_table
from cloudplan.errors import CloudplanError, UsageError
from cloudplan.inventory import Inventory
from cloudplan.io import write_text_atomic
from cloudplan.layout import elevation
from cloudplan.report_charts import charts, usd
from cloudplan.report_data import (capacity_table, cost_breakdown, power_w, rack_items, rack_table, tco_by_year,
                                   unit_costs, vm_count)
from cloudplan.templating import templates_dir

log = logging.getLogger(__name__)


class ReportFormat(str, Enum):
    html = "html"
    md = "md"


TEMPLATES = {ReportFormat.html: "report/report.html.j2", ReportFormat.md: "report/report.md.j2"}


def _environment(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
                             autoescape=html, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["usd"] = usd
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    # Markdown table cells: a pipe or newline would break the row.
    env.filters["md"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def _num(x: float, digits: int = 1) -> str:
    """Thousands separators; no decimals on integers or on figures in the thousands (IOPS, GiB)."""
    if abs(x - round(x)) < 1e-9 or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def _pct(x: float, signed: bool = False) -> str:
    """``42 %``, ``+8 %``; a share too small to round to 1 % reads ``<1 %``, not ``0 %``."""
    if x != x:  # NaN: nothing demanded, so no headroom to speak of
        return "–"
    if not signed and 0 < x < 0.5:
        return "<1 %"
    return f"{x:+.0f} %" if signed else f"{x:.0f} %"


def _figures(bp: Blueprint) -> list[dict[str, str]]:
    """The handful of numbers finance asks for first."""
    c = bp.cost
    years = c.horizon_months / 12.0
    return [
        {"label": f"TCO over {years:g} years", "value": usd(c.tco_usd), "sub": "capex + opex"},
        {"label": "capex", "value": usd(c.capex_usd), "sub": "hardware bought up front"},
        {"label": "opex per month", "value": usd(c.opex_usd_per_month), "sub": "power × PUE, support, rack space"},
        {"label": "per VM-month", "value": usd(c.usd_per_vm_month), "sub": "average VM, storage included"},
        {"label": "servers", "value": f"{bp.node_count}", "sub": f"in {bp.racks_count} rack(s)"},
        {"label": "power draw", "value": f"{power_w(bp) / 1000:,.1f} kW", "sub": "typical, before PUE"},
    ]


def _assumptions(bp: Blueprint) -> list[tuple[str, str]]:
    wl, pol = bp.workload, bp.workload.policy
    return [
        ("horizon", f"{wl.horizon_years:g} years"),
        ("growth", f"{wl.growth_per_year:.0%} a year, compound: {vm_count(bp)} VMs today, "
                   f"{vm_count(bp, grown=True)} at the end of the horizon (the plan is sized for those)"),
        ("failure domain", f"capacity survives losing one {pol.failure_domain.value} (N+1)"),
        ("CPU allocation ratio", f"{pol.cpu_allocation_ratio:g} vCPUs per hardware thread"),
        ("RAM allocation ratio", f"{pol.ram_allocation_ratio:g}"),
        ("storage protection", f"{pol.protection.describe()}, filled to at most {pol.nearfull_ratio:.0%} "
                               f"(Ceph nearfull ratio)"),
        ("prices", f"price book of {bp.catalog_date}"),
        ("plan", f"{bp.status}" + (f", gap {bp.mip_gap:.2%}" if bp.mip_gap else "") +
                 f", {bp.solver} in {bp.solve_seconds:.1f} s"),
    ]


def _bom(bp: Blueprint) -> dict[str, Any]:
    df = bom_table(bp.nodes, bp.switches, bp.racks, bp.cables)
    return {"rows": df.to_dict("records"), "total_usd": float(df["line_usd"].sum())}


def _racks(inv: Inventory) -> list[dict[str, Any]]:
    """Per rack: its table row and its devices from the top unit down (for Markdown)."""
    items = rack_items(inv)
    out = []
    for row in rack_table(inv).to_dict("records"):
        devices = sorted(items[row["rack"]], key=lambda i: -i["u"])
        for d in devices:
            h = d["height_u"]
            d["units"] = f"U{d['u']}" + (f"-U{d['u'] + h - 1}" if h > 1 else "")
        out.append({**row, "devices": devices})
    return out


def context(bp: Blueprint, *, with_charts: bool = True, inventory: Inventory | None = None) -> dict[str, Any]:
    """Everything a template needs. ``inventory`` defaults to the blueprint's own rack layout."""
    inv = inventory if inventory is not None else elevation(bp)
    wl = bp.workload
    return {
        "bp": bp, "wl": wl, "cost": bp.cost, "years": bp.cost.horizon_months / 12.0,
        "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "figures": _figures(bp), "assumptions": _assumptions(bp),
        "vms_now": vm_count(bp), "vms_end": vm_count(bp, grown=True),
        "bom": _bom(bp),
        "breakdown": cost_breakdown(bp).to_dict("records"),
        "capex_usd": bp.cost.capex_usd, "opex_total_usd": bp.cost.tco_usd - bp.cost.capex_usd,
        "tco_years": tco_by_year(bp).to_dict("records"),
        "unit_costs": unit_costs(bp).to_dict("records"),
        "capacity": capacity_table(bp).to_dict("records"),
        "placement": bp.placement,
        "racks": _racks(inv),
        "charts": charts(bp, inv) if with_charts else {},
    }


def render(bp: Blueprint, fmt: ReportFormat | str = ReportFormat.html, *, inventory: Inventory | None = None) -> str:
    """The report as a string, HTML (with its plots) or Markdown (tables only)."""
    fmt = ReportFormat(fmt)
    name = TEMPLATES[fmt]
    ctx = context(bp, with_charts=fmt == ReportFormat.html, inventory=inventory)
    try:
        return _environment(html=fmt == ReportFormat.html).get_template(name).render(**ctx)
    except jinja2.TemplateNotFound:
        raise CloudplanError(f"template {name} not found in {templates_dir()}") from None
    except jinja2.TemplateError as err:
        raise CloudplanError(f"template {name}: {err}") from None


def render_html(bp: Blueprint, *, inventory: Inventory | None = None) -> str:
    return render(bp, ReportFormat.html, inventory=inventory)


def render_markdown(bp: Blueprint, *, inventory: Inventory | None = None) -> str:
    return render(bp, ReportFormat.md, inventory=inventory)


def format_for(path: str | Path, fmt: ReportFormat | str | None = None) -> ReportFormat:
    """The format asked for, else the one the file name says (``.md``/``.markdown``), else HTML."""
    if fmt is not None:
        try:
            return ReportFormat(fmt)
        except ValueError:
            raise UsageError(f"unknown report format {fmt!r}: use html or md") from None
    return ReportFormat.md if Path(path).suffix.lower() in (".md", ".markdown") else ReportFormat.html


def write_report(bp: Blueprint, path: str | Path, fmt: ReportFormat | str | None = None, *,
                 inventory: Inventory | None = None) -> Path:
    """Render and write atomically; returns the path written."""
    fmt = format_for(path, fmt)
    log.info("writing the %s sizing report of %s to %s", fmt.value, bp.name, path)
    return write_text_atomic(Path(path), render(bp, fmt, inventory=inventory))
