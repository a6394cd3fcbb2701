"""Layout writes Redfish BMCs for the catalog's 2026 chassis, unless the site says otherwise;
the inventory it writes validates and each node gets the driver its BMC speaks."""

from __future__ import annotations

from pathlib import Path

import yaml

from cloudplan.blueprint import Blueprint
from cloudplan.catalog import load_catalog
from cloudplan.cli import main
from cloudplan.inventory import BMCDriver, Inventory
from cloudplan.io import load_model

ROOT = Path(__file__).resolve().parents[1]


def _size_and_layout(tmp_path: Path, site: Path) -> tuple[Blueprint, Inventory]:
    bp, inv = tmp_path / "bp.yaml", tmp_path / "inv.yaml"
    assert main(["size", str(ROOT / "examples" / "small.yaml"), "-o", str(bp)]) == 0
    assert main(["layout", str(bp), "--site", str(site), "-o", str(inv)]) == 0
    return load_model(Blueprint, bp), load_model(Inventory, inv)


def test_2026_chassis_get_redfish_bmcs_by_default(tmp_path, capsys):
    assert {c.bmc for c in load_catalog(ROOT / "hardware_profiles").chassis} == {"redfish"}
    bp, inv = _size_and_layout(tmp_path, ROOT / "examples" / "site.yaml")
    assert {g.bmc for g in bp.nodes} == {"redfish"}
    assert {n.bmc.driver for n in inv.nodes} == {BMCDriver.redfish}
    assert all(n.bmc.address.startswith("https://10.30.") for n in inv.nodes)


def test_site_can_keep_ipmi(tmp_path, capsys):
    site = yaml.safe_load((ROOT / "examples" / "site.yaml").read_text())
    site["bmc"]["driver"] = "ipmi"
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    _, inv = _size_and_layout(tmp_path, path)
    assert {n.bmc.driver for n in inv.nodes} == {BMCDriver.ipmi}
    assert all(n.bmc.port == 623 and not n.bmc.address.startswith("https") for n in inv.nodes)
