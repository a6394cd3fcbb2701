"""CRUSH capacity: the bound itself, hand-checked sizings on mixed tiers, and the property that
every blueprint lays out and survives its failure domain by the bound, checked from the layout
(independently of the MILP). Real HiGHS solves throughout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from cloudplan.blueprint import Blueprint, NodeRole
from cloudplan.catalog import TIB_PER_TB, load_catalog
from cloudplan.inventory import Role
from cloudplan.io import validate
from cloudplan.layout import elevation
from cloudplan.sizing.crush import holds, max_per_copy, without_largest
from cloudplan.sizing.options import storage_options
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import FailureDomain, Tier, Workload
from tests.test_sizing import small_workloads, workload, write_catalog

ROOT = Path(__file__).resolve().parents[1]
SSD4 = {"name": "ssd4", "tier": "ssd", "bay": "sata", "capacity_tb": 4, "iops": 90000, "throughput_mbps": 500,
        "price_usd": 300, "power_w": 0}
DRIVE_TIB = 4 * TIB_PER_TB   # 3.638 TiB


def test_bound_on_the_issue_tier():
    """Three 140 TiB hosts and one 6.98 TiB host, 3 copies: all up min(426.98/3, 286.98/2, 146.98/1) = 142.3;
    with a 140 TiB host lost the third copy must go on the small host: S = 6.98 TiB, not (426.98-140)/3."""
    caps = [140.0, 140.0, 140.0, 6.98]
    assert max_per_copy(caps, 3) == pytest.approx(426.98 / 3)
    assert max_per_copy(without_largest(caps), 3) == pytest.approx(6.98)
    assert holds(without_largest(caps), 3, 6.98) and not holds(without_largest(caps), 3, 7.0)
    assert max_per_copy([5.0, 5.0], 3) == 0.0            # fewer domains than copies hold nothing
    assert max_per_copy([4.0] * 12, 11) == pytest.approx(48 / 11)   # EC 8+3 on twelve equal hosts


def _mixed_tier_workload(max_configs: int) -> Workload:
    # S = 4.25 / 0.85 = 5 TiB per copy, 3 copies.
    return workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 1}],
                    storage=[{"tier": "ssd", "usable_tib": 4.25}],
                    policy={"controller_min_cores": 16, "controller_min_ram_gib": 256, "hyperconverged": "never",
                            "max_configs_per_role": max_configs})


def test_mixed_tier_is_sized_by_the_crush_bound(tmp_path):
    """Storage nodes hold 1, 2 or 4 drives of 3.638 TiB ($4,800 + $300 per drive); 5 TiB per copy, 3 copies.

    "Raw minus the largest host" accepts 3 x 2 drives + 1 x 1 drive (25.47 - 7.28 = 18.19 >= 15 raw,
    $20,100). CRUSH does not: each host holds at most one copy, min(7.28, 5) = 5, so with a 2-drive host
    lost 5 + 5 + 3.64 < 15. Four hosts are needed and, with any one lost, the three left must each hold
    a full 5 TiB copy: every host has >= 2 drives. The optimum is 4 x 2 drives ($20,400)."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    bp = size_cloud(_mixed_tier_workload(max_configs=2), cat)
    storage = bp.nodes_by_role(NodeRole.storage)
    assert [(g.count, g.drives[0].count) for g in storage] == [(4, 2)]
    (tier,) = bp.capacity.tiers
    assert tier.offered_usable_tib_degraded == pytest.approx(min(2 * DRIVE_TIB, 3 * 2 * DRIVE_TIB / 3) * 0.85)
    assert tier.offered_usable_tib_degraded >= 4.25


def test_ec_tier_needs_k_plus_m_plus_one_hosts(tmp_path):
    """EC 2+1 on this tier only (3 chunks of 1/2): 4.25 TiB usable -> 5 / 2 = 2.5 TiB per chunk on 3
    distinct hosts, 4 hosts for N+1, each >= 2.5 TiB: 4 hosts of one 3.638 TiB drive. Its replicated-only
    pools (1 %) live on the tier itself: + 0.0425 x 3 / 0.85 / 3 = 0.05 TiB per chunk, still one drive."""
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4]))
    wl = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "count": 1}],
                  storage=[{"tier": "ssd", "usable_tib": 4.25, "protection": {"ec_k": 2, "ec_m": 1}}],
                  policy={"controller_min_cores": 16, "controller_min_ram_gib": 256, "hyperconverged": "never"})
    bp = size_cloud(wl, cat)
    assert [(g.count, g.drives[0].count) for g in bp.nodes_by_role(NodeRole.storage)] == [(4, 1)]
    (tier,) = bp.capacity.tiers
    assert tier.protection == "EC 2+1"
    assert tier.demanded_usable_tib == pytest.approx(4.25 * 1.01)
    assert tier.offered_usable_tib_degraded == pytest.approx(DRIVE_TIB * 4.25 * 1.01 / (2.5 + 0.05))
    assert any("live 3x replicated on the ssd tier" in n for n in bp.notes)


def test_no_storage_build_below_the_minimum_fill():
    """The bundled catalog has no storage build with one drive in twelve (or fourteen) bays any more."""
    wl = validate(Workload, yaml.safe_load((ROOT / "examples" / "medium.yaml").read_text()))
    opts = storage_options(wl, load_catalog(), {Tier.nvme, Tier.ssd, Tier.hdd})
    assert opts
    for o in opts:
        assert o.drive_count >= 0.25 * sum(o.chassis.bays.values()), o.key
    assert not any(o.chassis.name == "2u-1s-12dimm-12lff" and o.drive.tier == Tier.nvme for o in opts)


def domain_capacities_from_layout(bp: Blueprint, tier: Tier) -> list[float]:
    """Raw TiB per failure domain, read from the layout's inventory (not from the sizing)."""
    inv = elevation(bp)
    kinds = {}
    for g in bp.nodes:
        role = Role.storage if g.role == NodeRole.storage else Role.control if g.role == NodeRole.control \
            else Role.compute
        key = (role, g.chassis, tuple(sorted((d.tier.value, d.count) for d in g.drives)))
        tib = sum(d.count * d.capacity_tb * TIB_PER_TB for d in g.drives if d.tier == tier)
        assert kinds.setdefault(key, tib) == pytest.approx(tib), "two groups look alike in the inventory"
    per_node = [(n.rack, kinds[(n.role, n.chassis, tuple(sorted((t.value, c) for t, c in n.drives.items() if c)))])
                for n in inv.nodes]
    if bp.workload.policy.failure_domain == FailureDomain.host:
        return [c for _, c in per_node if c > 0]
    racks: dict[str, float] = {}
    for rack, c in per_node:
        racks[rack] = racks.get(rack, 0.0) + c
    return list(racks.values())


def assert_survives_by_crush(bp: Blueprint) -> None:
    wl = bp.workload
    for s in wl.storage:
        g = wl.grown_storage(s)
        if g.usable_tib <= 0:
            continue
        per_copy = g.usable_tib / wl.policy.nearfull_ratio / g.protection.data_chunks
        caps = domain_capacities_from_layout(bp, s.tier)
        assert holds(without_largest(caps), g.protection.min_hosts, per_copy), (s.tier, caps, per_copy)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_workloads())
def test_every_blueprint_lays_out_and_survives_its_failure_domain_by_crush(wl):
    bp = size_cloud(wl, load_catalog(), time_limit_s=20)  # generous: the machine may be loaded
    assert_survives_by_crush(bp)      # lays out (elevation raises otherwise) and heals after the worst loss


def test_medium_example_nvme_tier_heals():
    """The issue's case: the medium example's NVMe tier survives its largest host by the CRUSH bound,
    and the capacity table shows that bound."""
    wl = validate(Workload, yaml.safe_load((ROOT / "examples" / "medium.yaml").read_text()))
    bp = size_cloud(wl, load_catalog())
    assert_survives_by_crush(bp)
    nvme = next(t for t in bp.capacity.tiers if t.tier == Tier.nvme)
    caps = domain_capacities_from_layout(bp, Tier.nvme)
    assert nvme.offered_usable_tib_degraded == pytest.approx(max_per_copy(without_largest(caps), 3) * 0.85)
    assert nvme.offered_usable_tib_degraded >= nvme.demanded_usable_tib


def test_replicas_one_is_refused_with_the_reason(tmp_path):
    from cloudplan.errors import SpecError
    from cloudplan.io import load_model
    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump({"name": "w", "flavors": [{"name": "a", "vcpus": 1, "ram_gib": 1, "count": 1}],
                                 "storage": [{"tier": "ssd", "usable_tib": 1, "protection": {"replicas": 1}}]}))
    with pytest.raises(SpecError) as e:
        load_model(Workload, p)
    assert e.value.field == "storage[0].protection.replicas"
    assert str(p) in str(e.value) and "no plan can be N+1" in str(e.value)


def test_replicated_only_pools_of_an_ec_tier_live_on_the_fastest_replicated_tier():
    """hdd EC 4+2 with 100 TiB, nvme 3x with 10 TiB: nvme also holds 1 % of 100 TiB (1 TiB) of metadata,
    3x replicated: per copy (10 + 1) / 0.85; hdd per chunk 100 / 0.85 / 4 on 6 hosts."""
    from cloudplan.sizing.tiers import metadata_home, tier_demands
    wl = workload(storage=[{"tier": "hdd", "usable_tib": 100, "protection": {"ec_k": 4, "ec_m": 2}},
                           {"tier": "nvme", "usable_tib": 10}])
    assert metadata_home(wl) == Tier.nvme
    hdd, nvme = tier_demands(wl)
    assert (hdd.copies, hdd.per_copy_tib, hdd.metadata_usable_tib) == (6, pytest.approx(100 / 0.85 / 4), 0)
    assert (nvme.copies, nvme.per_copy_tib, nvme.usable_tib) == (3, pytest.approx(11 / 0.85), pytest.approx(11))
    everything_ec = workload(storage=[{"tier": "hdd", "usable_tib": 100}],
                             policy={"protection": {"ec_k": 4, "ec_m": 2}})
    assert metadata_home(everything_ec) == Tier.hdd
    (only,) = tier_demands(everything_ec)
    assert only.raw_tib == pytest.approx(100 / 0.85 * 6 / 4 + 1 * 3 / 0.85)   # same raw as both pools apart


def test_rack_failure_domain_survives_a_rack_by_crush(tmp_path):
    """By rack, 3 copies need 4 racks at least, and the racks the layout fills hold the tier with the
    fullest rack lost (checked on the layout's racks, not the MILP's)."""
    from tests.test_sizing import SPINE
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=[SSD4], spines=[SPINE]))
    wl = workload(flavors=[{"name": "s", "vcpus": 2, "ram_gib": 8, "count": 20}],
                  storage=[{"tier": "ssd", "usable_tib": 8}],
                  policy={"controller_min_cores": 16, "controller_min_ram_gib": 256, "failure_domain": "rack"})
    bp = size_cloud(wl, cat)
    assert bp.racks_count >= 4
    assert_survives_by_crush(bp)
    (tier,) = bp.capacity.tiers
    assert tier.failure_domains == bp.racks_count and tier.offered_usable_tib_degraded >= 8
    assert bp.catalog_gap is None and "rack counts tried" in bp.optimal_over
