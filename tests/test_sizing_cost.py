"""Unit costs by component: CPUs and DIMMs at their prices, OSD reservations charged to storage."""

from __future__ import annotations

import pytest

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import load_catalog
from cloudplan.cost import _node_split
from cloudplan.sizing.plan import size_cloud
from tests.test_sizing import workload, write_catalog
from tests.test_sizing_crush import SSD4


def test_split_follows_component_prices_and_osd_reservations(tmp_path):
    """Compute host: $3,000 barebone, $1,000 CPU, 8 x $100 DIMMs: CPU side 1,000 + 3,000 x 1,000 / 1,800,
    RAM side 800 + 3,000 x 800 / 1,800. A hyperconverged host with 4 SSD OSDs (4 of 8 cores, 32 of
    256 GiB) gives half its CPU side and an eighth of its RAM side to storage, with its drives."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    bp = size_cloud(workload(storage=[{"tier": "ssd", "usable_tib": 8}], policy={
        "controller_min_cores": 16, "controller_min_ram_gib": 256, "hyperconverged": "always"}), cat)
    ctrl = bp.nodes_by_role(NodeRole.control)[0]
    assert (ctrl.cpu_price_usd, ctrl.dimm_price_usd) == (1000, 8 * 400)
    hci = next(g for g in bp.nodes if g.role == NodeRole.hyperconverged)
    cpu, ram, storage = _node_split(hci)
    rest = hci.unit_price_usd - sum(d.count * d.unit_price_usd for d in hci.drives)
    c_side = rest * hci.cpu_price_usd / (hci.cpu_price_usd + hci.dimm_price_usd)
    r_side = rest - c_side
    osd_c, osd_r = hci.osd_cores_reserved / 8, hci.osd_ram_gib_reserved / hci.ram_gib
    assert cpu == pytest.approx(c_side * (1 - osd_c)) and ram == pytest.approx(r_side * (1 - osd_r))
    assert cpu + ram + storage == pytest.approx(hci.unit_price_usd)
    compute = hci.model_copy(update={"drives": [], "osd_cores_reserved": 0, "osd_ram_gib_reserved": 0,
                                     "unit_price_usd": 4800.0, "cpu_price_usd": 1000.0, "dimm_price_usd": 800.0})
    assert _node_split(compute) == pytest.approx((1000 + 3000 * 1000 / 1800, 800 + 3000 * 800 / 1800, 0))
