"""The rehearsal report: SVG helpers, Markdown, and the HTML as headless Chromium renders it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from pathlib import Path

import numpy as np
import yaml

import chromium_helper

from cloudplan import svg
from cloudplan.inventory import Inventory
from cloudplan.upgrade import load_cloud, rehearse, render_markdown, write_reports

GIB = 1024
FLAVORS = [{"Name": "m.16", "VCPUs": 4, "RAM": 16 * GIB, "Disk": 20},
           {"Name": "m.20", "VCPUs": 4, "RAM": 20 * GIB, "Disk": 20},
           {"Name": "r.48", "VCPUs": 8, "RAM": 48 * GIB, "Disk": 40}]
SVG_NS = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parent.parent


def _rehearsal(tmp_path, layout, src="2025.2", dst="2026.1"):
    # The example site (3 controllers, 2 network, 5 compute over 3 racks), with compute sizes
    # set: 8 threads and 64.5 GiB schedule 32 vCPUs and exactly 64 GiB at Nova's defaults.
    data = yaml.safe_load((ROOT / "examples" / "inventory.yaml").read_text())
    for node in data["nodes"]:
        if node["role"] == "compute":
            node["expect"] = {"cores": 8, "ram_gib": 64.5}
    inv = Inventory.model_validate(data)
    rows = [{"ID": f"id{i}", "Name": f"vm{i}", "Status": "ACTIVE", "Flavor": f, "Host": h}
            for i, (h, f) in enumerate((h, f) for h, fl in layout.items() for f in fl)]
    (tmp_path / "servers.json").write_text(json.dumps(rows))
    (tmp_path / "flavors.json").write_text(json.dumps(FLAVORS))
    cloud = load_cloud(inv, placement=tmp_path / "servers.json", flavors=tmp_path / "flavors.json")
    return rehearse(inv, src, dst, cloud)


# cmp01's 48 GiB VM fits nowhere (at most 44 GiB free elsewhere); every other host drains.
NO_GO = {"cmp01": ["r.48"], "cmp02": ["m.20", "m.20"], "cmp03": ["m.20"], "cmp04": ["m.20", "m.20"],
         "cmp05": ["m.20", "m.20"]}


# --- svg helpers ----------------------------------------------------------------------------

def test_svg_charts_are_well_formed_with_a_title_on_every_mark():
    charts = [
        svg.bar_chart(["a", "b<&>"], [3, 5.5], title="Bars", x_label="x", y_label="y", y_unit="GiB"),
        svg.stacked_bar_chart(["h1", "h2"], {"used": [4, 2], "free": [1, 3]}, title="Stacked", y_unit="GiB"),
        svg.line_chart(["0", "1", "2"], {"free": [10, 8, 9], "cpu": [1, 2, 3]}, title="Lines", x_label="batch"),
        svg.gantt_chart([{"label": "backup", "start": 0, "end": 1800, "group": "pre"},
                         {"label": "batch 1", "start": 1800, "end": 5400, "group": "compute"}], title="Timeline"),
    ]
    for text in charts:
        root = ET.fromstring(text)
        assert root.tag == f"{SVG_NS}svg" and root.find(f"{SVG_NS}title") is not None
        marks = [e for e in root.iter() if e.get("class") in ("bar", "bar segment", "point", "task", "line")]
        assert marks and all(m.find(f"{SVG_NS}title") is not None for m in marks)
    assert "b&lt;&amp;&gt;: 5.5 GiB" in charts[0]
    assert svg.nice_ticks(0, 87) == [0, 20, 40, 60, 80, 100]


# --- Markdown and configuration diff --------------------------------------------------------

def test_markdown_report_has_verdict_reasons_tables_and_config_diff(tmp_path):
    r = _rehearsal(tmp_path, NO_GO)
    md = render_markdown(r)
    assert "## Verdict: **NO-GO**" in md
    assert "- host cmp01 cannot be drained: 1 x r.48 need 48 GiB (48 GiB each), the largest free space " \
           "elsewhere is 44 GiB" in md
    assert "| cmp01 | r1 | 1 | 8 | 48.0 GiB | 16.0 GiB | no | – |" in md
    assert "Upgrade cloud from '2025.2' (flamingo) to '2026.1' (gazpacho)" in md
    # Both releases are rendered by the manifests module: a real diff of the Kolla-Ansible files.
    assert r.config is not None and r.config.available, r.config
    assert "```diff" in md and "+++ 2026.1/" in md
    # passwords.yml is compared by its keys (the values are secrets), from each release's own file
    keys = {rel: set(yaml.safe_load((ROOT / "cloudplan" / "data" / "kolla" / rel / "passwords.yaml").read_text()))
            for rel in ("2025.2", "2026.1")}
    assert r.config.new_password_keys == sorted(keys["2026.1"] - keys["2025.2"])
    assert r.config.removed_password_keys == sorted(keys["2025.2"] - keys["2026.1"]) != []
    assert "keys gone: " + ", ".join(r.config.removed_password_keys) in md
    # the Ceph tiers of the example's storage hosts, and the plays each --tags step runs
    for p in r.ceph:
        assert f"| {p.tier} | 3x replication | 2 | {p.failure_domain} | {p.domains} | {p.max_domains_down} |" in md
    assert "(plays: Apply role openvswitch)" in md


def test_a_release_the_manifests_do_not_render_is_reported_not_fatal(tmp_path):
    r = _rehearsal(tmp_path, {"cmp01": ["m.16"]}, src="2025.1", dst="2025.2")
    assert r.verdict == "go" and not r.config.available
    assert "does not support 2025.1" in r.config.note and r.config.note in r.warnings


# --- HTML in headless Chromium --------------------------------------------------------------

def test_html_report_renders_in_headless_chromium_with_its_plots(tmp_path):
    exe = chromium_helper.chromium()
    r = _rehearsal(tmp_path, NO_GO)
    html_path, md_path = write_reports(r, html=tmp_path / "report.html", markdown=tmp_path / "report.md")
    html = html_path.read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert md_path.read_text().startswith("# Upgrade rehearsal: example-cloud, 2025.2 → 2026.1")

    dom = chromium_helper.dump_dom(exe, tmp_path, html_path)
    for chart in ("chart-capacity", "chart-headroom", "chart-timeline"):
        start = dom.index(f'id="{chart}"')
        assert "<svg" in dom[start:start + 400], f"{chart} has no SVG in the rendered DOM"
    assert dom.count('class="bar segment"') == 15      # 5 hosts x (used ok, used stuck, free)
    assert dom.count('class="task"') >= 10 and dom.count('class="point"') == 2 * (1 + len(r.drain.batches))
    assert 'class="verdict no-go"' in dom and "cannot be drained" in dom
    assert 'id="ceph"' in dom and "plays: Apply role logs, Apply role kolla_toolbox" in dom

    shot = tmp_path / "report.png"
    pixels = chromium_helper.screenshot(exe, tmp_path, html_path, shot, size="1000,1800")
    non_white = int((pixels.sum(axis=2) < 720).sum())
    assert non_white > 20000, f"the screenshot is (nearly) blank: {non_white} non-white pixels"
    # The charts' blue (#0072B2) and the no-go orange (#D55E00) are painted, not just present in the DOM.
    blue = int((np.abs(pixels - [0x00, 0x72, 0xB2]).sum(axis=2) < 30).sum())
    orange = int((np.abs(pixels - [0xD5, 0x5E, 0x00]).sum(axis=2) < 30).sum())
    assert blue > 2000 and orange > 2000, (blue, orange)


def test_example_placement_matches_the_example_inventory():
    # examples/placement.json is `openstack server list --long -f json` output for examples/inventory.yaml.
    root = ROOT
    inv = Inventory.model_validate(yaml.safe_load((root / "examples" / "inventory.yaml").read_text()))
    cloud = load_cloud(inv, placement=root / "examples" / "placement.json", flavors=root / "examples" / "medium.yaml",
                       host_cores=128, host_ram_gib=1024)
    assert cloud.vm_count == 85 and len(cloud.hosts) == 5
    r = rehearse(inv, "2025.2", "2026.1", cloud)
    assert r.verdict == "go", r.reasons
