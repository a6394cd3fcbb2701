"""IOPS from per-OSD figures: reads and writes apart, the write penalty on writes only, and the
IOPS left with the failure domain lost (hand-checked)."""

from __future__ import annotations

import pytest

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import load_catalog
from cloudplan.sizing.plan import size_cloud
from cloudplan.sizing.tiers import osd_client_iops
from tests.test_sizing import workload, write_catalog
from tests.test_sizing_crush import SSD4

# SSD4: 90k read IOPS, writes by default 0.33 x 90k = 29.7k; OSD figures 54k reads, 30k backend writes.
PER_OSD_3X = 1 / (0.7 / 54000 + 0.3 * 3 / 29700)


def _wl(iops: float | None, protection=None):
    storage = {"tier": "ssd", "usable_tib": 0.85, "iops": iops}
    if protection:
        storage["protection"] = protection
    return workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 1}], storage=[storage],
                    policy={"controller_min_cores": 16, "controller_min_ram_gib": 256, "hyperconverged": "never"})


def test_one_osd_serves_reads_and_penalised_writes(tmp_path):
    """70 % reads at min(90k drive, 54k OSD); 30 % writes x 3 at min(29.7k drive, 30k OSD)."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    (drive,) = cat.drives
    assert osd_client_iops(_wl(1000), drive) == pytest.approx(PER_OSD_3X)          # 23,112
    ec = osd_client_iops(_wl(1000, {"ec_k": 4, "ec_m": 2}), drive)
    assert ec == pytest.approx(1 / (0.7 / 54000 + 0.3 * 6 / 29700))
    reads_only = _wl(1000)
    reads_only.storage[0].read_fraction = 1.0
    assert osd_client_iops(reads_only, drive) == pytest.approx(54000)                # the penalty is on writes only


def test_iops_size_the_tier_with_a_host_lost(tmp_path):
    """150k client IOPS, per OSD 23,112: capacity alone needs 4 hosts of one drive. With a host lost,
    4 x 2 drives keep 6 OSDs (138.7k, too few); 4 x 4 keep 12 (277.4k, $24,000); 5 x 2 keep 8 (184.9k,
    $27,000); 8 x 1 keep 7 (161.8k, $40,800). The plan is 4 x 4 and reports 277.4k with a host lost."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    plain = size_cloud(_wl(None), cat)
    assert [(g.count, g.drives[0].count) for g in plain.nodes_by_role(NodeRole.storage)] == [(4, 1)]
    bp = size_cloud(_wl(150000), cat)
    assert [(g.count, g.drives[0].count) for g in bp.nodes_by_role(NodeRole.storage)] == [(4, 4)]
    (tier,) = bp.capacity.tiers
    assert tier.offered_iops == pytest.approx(16 * PER_OSD_3X)
    assert tier.offered_iops_degraded == pytest.approx(12 * PER_OSD_3X)
