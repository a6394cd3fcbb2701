"""The sizing report (tables, SVG, HTML in headless Chromium, Markdown, CLI) and the what-if sweeps.

Blueprints come from the real optimizer: the small example (a fraction of a
second) for most checks, the medium one (two racks, storage, hyperconverged
and compute nodes) once for the rendered page.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import chromium_helper
from cloudplan import svg, whatif
from cloudplan.blueprint import Blueprint
from cloudplan.catalog import load_catalog
from cloudplan.cli import main
from cloudplan.cost import bom_table, tco_timeline
from cloudplan.errors import SpecError
from cloudplan.io import load_model, write_model
from cloudplan.layout import elevation
from cloudplan.report import render_html, render_markdown, write_report
from cloudplan.report_data import capacity_table, cost_breakdown, rack_items, rack_table, tco_by_year
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Protection, Workload

ROOT = Path(__file__).resolve().parent.parent
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def small_workload() -> Workload:
    return load_model(Workload, ROOT / "examples" / "small.yaml")


@pytest.fixture(scope="module")
def small(small_workload, catalog) -> Blueprint:
    return size_cloud(small_workload, catalog)


@pytest.fixture(scope="module")
def medium(catalog) -> Blueprint:
    return size_cloud(load_model(Workload, ROOT / "examples" / "medium.yaml"), catalog)


def _marks(root: ET.Element, *classes: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") in classes]


# --- tables -----------------------------------------------------------------------------------

def test_cost_tables_add_up_to_the_blueprints_tco(small):
    c = small.cost
    breakdown = cost_breakdown(small)
    assert breakdown["usd"].sum() == pytest.approx(c.tco_usd)
    assert breakdown["share"].sum() == pytest.approx(1.0)
    capex = breakdown[breakdown["kind"] == "capex"]["usd"].sum()
    assert capex == pytest.approx(c.capex_usd) == pytest.approx(bom_table(small.nodes, small.switches, small.racks,
                                                                         small.cables)["line_usd"].sum())
    years = tco_by_year(small)
    # Same cumulative curve as the price model's own timeline, ending at the TCO.
    assert list(years["total"]) == pytest.approx(list(tco_timeline(c)["cumulative_usd"]))
    assert years["total"].iloc[0] == pytest.approx(c.capex_usd)
    assert years["total"].iloc[-1] == pytest.approx(c.tco_usd)


def test_capacity_table_headroom(small):
    cap = capacity_table(small)
    vcpu = cap[cap["resource"] == "vCPU"].iloc[0]
    assert vcpu["demanded"] == small.capacity.demanded_vcpus
    assert vcpu["headroom_pct"] == pytest.approx((small.capacity.offered_vcpus / small.capacity.demanded_vcpus - 1) * 100)
    # The plan carries the grown workload with a host lost: no negative headroom anywhere.
    assert (cap["headroom_domain_lost_pct"] >= 0).all()
    assert "ssd usable" in set(cap["resource"])


def test_rack_table_counts_every_node_switch_unit_and_watt(small):
    inv = elevation(small)
    table = rack_table(inv)
    assert list(table["rack"]) == [r.name for r in inv.racks]
    assert table["nodes"].sum() == small.node_count
    node_w = sum(n.power_w for n in inv.nodes)
    dev_w = sum(d.power_w for r in inv.racks for d in r.devices)
    assert table["power_w"].sum() == pytest.approx(node_w + dev_w)
    assert table["u_used"].sum() == sum(n.height_u for n in inv.nodes) + sum(len(r.devices) for r in inv.racks)
    # Compute nodes that carry OSD drives are drawn as hyperconverged (the small plan is all HCI).
    roles = {i["role"] for its in rack_items(inv).values() for i in its}
    assert {"control", "hyperconverged", "leaf", "management"} <= roles


# --- SVG helpers ------------------------------------------------------------------------------

def test_new_svg_charts_are_well_formed_with_a_title_on_every_mark():
    charts = [
        svg.hbar_chart(["servers", "energy <&>"], [9e5, 2e5], title="TCO", value_labels=["$900,000", "$200,000"]),
        svg.target_chart([{"label": "vCPU", "target": 90, "value": 120, "degraded": 100, "unit": "vCPU"},
                          {"label": "RAM", "target": 100, "value": 2000, "degraded": 1500, "unit": "GiB"}],
                         title="Capacity"),
        svg.rack_elevation("r1", 10, [{"name": "r1-cmp-01", "role": "compute", "u": 1, "height_u": 2, "power_w": 500},
                                      {"name": "r1-leaf-a", "role": "leaf", "u": 10, "power_w": 300}],
                           model="10u", power_budget_w=1000),
        svg.legend(["compute", "leaf"], ["#0072B2", "#444444"]),
    ]
    for text in charts:
        root = ET.fromstring(text)
        assert root.tag == f"{SVG_NS}svg" and root.find(f"{SVG_NS}title") is not None
    for text in charts[:3]:
        marks = _marks(ET.fromstring(text), "bar", "bar degraded", "rack-item")
        assert marks and all(m.find(f"{SVG_NS}title") is not None for m in marks)
    assert "energy &lt;&amp;&gt;" in charts[0]
    # 2000 % of the target is cut at the axis end (400 %), and says so.
    assert 'class="cut"' in charts[1] and "2,000 / 100 GiB (+1900 %)" in charts[1]


def test_rack_elevation_puts_units_where_they_are_and_colours_power_by_budget():
    u_px, height = 15, 10
    drawing = svg.rack_elevation("r1", height, [
        {"name": "bottom", "role": "compute", "u": 1, "height_u": 2, "power_w": 600},
        {"name": "top", "role": "leaf", "u": 10, "power_w": 500}], power_budget_w=1000, u_px=u_px)
    root = ET.fromstring(drawing)
    items = {g.find(f"{SVG_NS}title").text.split(" ")[0]: g.find(f"{SVG_NS}rect") for g in _marks(root, "rack-item")}
    top_y = float(items["top"].get("y"))
    bottom_y = float(items["bottom"].get("y"))
    assert bottom_y - top_y == pytest.approx((height - 2) * u_px)      # U10 at the top, U1-U2 at the bottom
    assert float(items["bottom"].get("height")) == pytest.approx(2 * u_px - 2)
    assert "power 1.1 of 1.0 kW (110%)" in drawing and "#D55E00" in drawing   # over budget: red


# --- HTML and Markdown ------------------------------------------------------------------------

def test_markdown_report_has_every_section_and_rack(small):
    md = render_markdown(small)
    for heading in ("# Sizing report: lab-small", "## Summary", "## Cost", "### TCO over the horizon",
                    "## Bill of materials", "## Capacity against demand", "## Racks", "### Rack r1 (42u-12kw)",
                    "## Assumptions"):
        assert f"\n{heading}" in "\n" + md, heading
    assert f"| **TCO** | | **${small.cost.tco_usd:,.0f}** | 100 % |" in md
    assert f"| **capex** | | | | | | | **${small.cost.capex_usd:,.0f}** |" in md
    for node in elevation(small).nodes:
        assert f"| {node.name} |" in md
    assert "<svg" not in md
    # the exact placement's fill per host kind, and what a totals-only answer would have bought
    for f in small.placement.fills:
        assert (f"| {f.kind.replace('|', ' / ')} | {f.hosts} | {f.vcpu_fill * 100:.0f} % | "
                f"{f.ram_fill * 100:.0f} % |") in md
    assert f"would have bought {small.placement.aggregate_only_hosts} VM hosts" in md


def test_html_report_is_self_contained(small):
    html = render_html(small)
    lowered = html.lower()
    for forbidden in ("<script", "<link", "@import", "url(", "<img", "https://"):
        assert forbidden not in lowered, forbidden
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert html.count('class="chart rack-elevation"') == small.racks_count


def test_cli_writes_html_markdown_or_stdout_and_names_a_bad_file(small, tmp_path, capsys):
    bp_path = write_model(small, tmp_path / "bp.yaml")
    assert main(["report", str(bp_path), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(bp_path), "-o", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text().startswith("# Sizing report: lab-small")
    assert main(["report", str(bp_path), "--format", "md", "-o", str(tmp_path / "forced.html")]) == 0
    assert (tmp_path / "forced.html").read_text().startswith("# Sizing report")
    capsys.readouterr()
    assert main(["report", str(bp_path), "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("# Sizing report: lab-small")
    assert main(["report", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "x.html")]) == 1
    assert "missing.yaml" in capsys.readouterr().err and not (tmp_path / "x.html").exists()


def test_html_report_renders_in_headless_chromium_with_plots_and_racks(medium, tmp_path):
    exe = chromium_helper.chromium()
    inv = elevation(medium)
    page = write_report(medium, tmp_path / "report.html")
    dom = chromium_helper.dump_dom(exe, tmp_path, page)
    for chart in ("chart-breakdown", "chart-tco", "chart-capacity", "rack-legend"):
        start = dom.index(f'id="{chart}"')
        assert "<svg" in dom[start:start + 400], f"{chart} has no SVG in the rendered DOM"
    assert dom.count('class="chart rack-elevation"') == len(inv.racks) >= 2
    for rack in inv.racks:
        assert f'id="rack-{rack.name}"' in dom
    devices = sum(len(r.devices) for r in inv.racks)
    assert dom.count('class="rack-item"') == len(inv.nodes) + devices
    assert dom.count('class="power-bar"') == len(inv.racks)
    years = 1 + math.ceil(medium.workload.horizon_years)
    assert dom.count('class="bar segment"') == len(medium.cost.breakdown_usd) * years

    # Tall enough for the whole page, racks at the bottom included.
    pixels = chromium_helper.screenshot(exe, tmp_path, page, tmp_path / "report.png", size="1280,6000")
    assert int((pixels.sum(axis=2) < 720).sum()) > 100_000, "the screenshot is (nearly) blank"

    def painted(rgb: str, rows: slice = slice(None)) -> int:
        target = [int(rgb[i:i + 2], 16) for i in (1, 3, 5)]
        return int((np.abs(pixels[rows] - target).sum(axis=2) < 30).sum())

    # Servers/compute blue, energy orange, storage yellow-orange, hyperconverged green are painted, not just
    # in the DOM; the lower part of the page (the racks) has the rack colours.
    assert painted("#0072B2") > 20_000 and painted("#D55E00") > 2_000
    racks_part = slice(pixels.shape[0] // 2, None)
    for colour in ("#009E73", "#E69F00", "#CC79A7"):
        assert painted(colour, racks_part) > 2_000, colour


# --- what-if sweeps ---------------------------------------------------------------------------

def test_dram_price_sweep_re_sizes_and_prices_the_dimms(small_workload, catalog, small):
    df = whatif.sweep(small_workload, catalog, "dimm_price_factor", [1.0, 2.0])
    assert list(df["label"]) == ["1x", "2x"] and set(df["status"]) == {"optimal"}
    assert df["tco_usd"].iloc[0] == pytest.approx(small.cost.tco_usd)
    # The small plan keeps its servers when DRAM doubles: capex grows by exactly the DIMMs' price.
    assert df["vm_host_config"].iloc[0] == df["vm_host_config"].iloc[1]
    price = {d.name: d.price_usd for d in catalog.dimms}
    dimm_usd = sum(n.count * n.dimm_count * price[n.dimm] for n in small.nodes)
    assert df["capex_usd"].iloc[1] - df["capex_usd"].iloc[0] == pytest.approx(dimm_usd)


def test_protection_and_dimm_size_change_the_plan(small_workload, catalog):
    df = whatif.sweep(small_workload, catalog, "protection", ["3x", "ec4+2"])
    assert list(df["label"]) == ["3x replication", "EC 4+2"]
    # EC 4+2 needs k+m+1 = 7 hosts holding the tier; 3 copies need 4.
    assert df["vm_hosts"].iloc[1] >= 7 > df["vm_hosts"].iloc[0] >= 4
    sized = whatif.sweep(small_workload, catalog, "dimm_size_gib", [64])
    assert "ddr5-64g" in sized["vm_host_config"].iloc[0]


def test_what_if_inputs_are_checked_and_infeasible_points_kept(small_workload, catalog):
    assert whatif.parse_protection("ec4+2") == Protection(ec_k=4, ec_m=2)
    assert whatif.parse_protection("2x").replicas == 2
    for bad in ({"protection": "raid5"}, {"dimm_size_gib": 48}, {"cpu_allocation_ratio": 0}, {"nonsense": 1}):
        with pytest.raises(SpecError, match="what-if"):
            whatif.apply(small_workload, catalog, **bad)
    # The inputs are never modified in place.
    assert small_workload.policy.cpu_allocation_ratio == 4.0 and len(catalog.dimms) > 1
    greedy = Workload.model_validate({**small_workload.model_dump(),
                                      "policy": {**small_workload.policy.model_dump(),
                                                 "controller_min_ram_gib": 100_000}})
    row = whatif.sweep(greedy, catalog, "growth_per_year", [0.1]).iloc[0]
    assert row["status"] == "infeasible" and "controller" in row["error"] and math.isnan(row["tco_usd"])
