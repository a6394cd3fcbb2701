"""HDD OSDs with their BlueStore block.db (and WAL) on flash: DB sizing by hand, the options'
cost and IOPS, and a sized plan through layout to cephadm specs that Ceph's own classes
(python3-ceph-common) parse and select drives with. Real HiGHS solves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import load_catalog
from cloudplan.io import load_model, validate
from cloudplan.layout import Site, layout
from cloudplan.manifests import render_all
from cloudplan.sizing.bluestore import db_layout
from cloudplan.sizing.options import storage_options
from cloudplan.sizing.plan import size_cloud
from cloudplan.sizing.tiers import osd_client_iops
from cloudplan.spec import BLOCK_DB_SHARE, Tier, Workload
from tests.test_manifests import _ceph

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cat():
    return load_catalog(None)


def _drive(cat, name):
    return next(d for d in cat.drives if d.name == name)


def _chassis(cat, name):
    return next(c for c in cat.chassis if c.name == name)


def _wl(**policy) -> Workload:
    return validate(Workload, {
        "name": "hdd-db", "horizon_years": 3,
        "flavors": [{"name": "m1.large", "vcpus": 4, "ram_gib": 16, "count": 200}],
        "storage": [{"tier": "ssd", "usable_tib": 20},
                    {"tier": "hdd", "usable_tib": 600, "iops": 20000, "read_fraction": 0.5}],
        "policy": policy})


def test_db_sizing_by_hand(cat):
    """12 x 24 TB HDDs, the 12-bay chassis' two NVMe bays: six OSDs per DB device, each block.db
    4 % of 24 TB = 0.96 TB, so a device needs 5.76 TB: the 3.84 TB NVMe is too small, the 7.68 TB
    one (cheapest of those that fit) is chosen. Six HDDs: three per device, 2.88 TB: 3.84 TB.
    At 1 %: 6 x 0.24 = 1.44 TB, 3.84 TB again. No flash bay, or SSD data drives: no layout."""
    assert BLOCK_DB_SHARE == 0.04
    lff12, hdd = _chassis(cat, "2u-1s-12dimm-12lff"), _drive(cat, "hdd-24t")
    full = db_layout(lff12, hdd, 12, cat.drives, BLOCK_DB_SHARE)
    assert (full.drive.name, full.count, full.osds_per_device) == ("nvme-7.68t", 2, 6)
    assert full.db_tb_per_osd == pytest.approx(0.96) and full.used_tb_per_device == pytest.approx(5.76)
    half = db_layout(lff12, hdd, 6, cat.drives, BLOCK_DB_SHARE)
    assert (half.drive.name, half.count, half.osds_per_device) == ("nvme-3.84t", 2, 3)
    assert db_layout(lff12, hdd, 12, cat.drives, 0.01).drive.name == "nvme-3.84t"
    # 36 HDDs over 4 NVMe bays: 9 per device x 4 % of 16 TB = 5.76 TB.
    lff36 = _chassis(cat, "4u-1s-12dimm-36lff")
    dense = db_layout(lff36, _drive(cat, "hdd-16t"), 36, cat.drives, BLOCK_DB_SHARE)
    assert (dense.drive.name, dense.count, dense.osds_per_device) == ("nvme-7.68t", 4, 9)
    assert db_layout(_chassis(cat, "2u-2s-24dimm-24sata"), hdd, 12, cat.drives, BLOCK_DB_SHARE) is None
    assert db_layout(lff12, _drive(cat, "ssd-3.84t"), 12, cat.drives, BLOCK_DB_SHARE) is None
    # Nothing in the catalog holds 12 OSDs' DB on one device at 50 %.
    assert db_layout(lff12, hdd, 12, cat.drives, 0.5) is None


def test_db_on_flash_costs_its_drives_and_doubles_hdd_writes(cat):
    """hdd-24t: 170 read and 170 write IOPS. At 3x and 70 % reads a colocated OSD writes each
    backend write twice (WAL and data on the spindle): 1 / (0.7/170 + 0.3*3/85) = 68.0 client IOPS;
    with block.db on flash, 1 / (0.7/170 + 0.3*3/170) = 106.25."""
    wl = validate(Workload, {"name": "t", "flavors": [{"name": "a", "vcpus": 1, "ram_gib": 1, "count": 1}],
                             "storage": [{"tier": "hdd", "usable_tib": 100}]})
    hdd = _drive(cat, "hdd-24t")
    assert osd_client_iops(wl, hdd) == pytest.approx(68.0)
    assert osd_client_iops(wl, hdd, db_on_flash=True) == pytest.approx(106.25)
    opts = [o for o in storage_options(wl, cat, {Tier.hdd})
            if o.chassis.name == "2u-1s-12dimm-12lff" and o.drive.name == "hdd-24t" and o.drive_count == 12]
    colo, flash = sorted(opts, key=lambda o: o.db is not None)
    assert colo.db is None and flash.db.drive.name == "nvme-7.68t"
    nvme = _drive(cat, "nvme-7.68t")
    assert flash.capex_usd - colo.capex_usd == pytest.approx(2 * nvme.price_usd * cat.price_book.drive_price_factor)
    assert flash.peak_power_w - colo.peak_power_w == pytest.approx(2 * nvme.peak_draw_w)
    assert flash.raw_tib == colo.raw_tib                 # DB devices hold no data of any tier
    assert flash.iops[Tier.hdd] == pytest.approx(12 * 106.25) and colo.iops[Tier.hdd] == pytest.approx(12 * 68.0)
    only = {o.db is not None for o in storage_options(validate(Workload, {**wl.model_dump(mode="json"),
                                                       "policy": {"hdd_db_on_flash": False}}), cat, {Tier.hdd})}
    assert only == {False}


PARSE_AND_SELECT = """
import json, sys, yaml
from ceph.deployment.drive_group import DriveGroupSpec
from ceph.deployment.drive_selection.selector import DriveSelection
from ceph.deployment.inventory import Device
out = {}
for doc in yaml.safe_load_all(open(sys.argv[1])):
    spec = DriveGroupSpec.from_json(doc)
    spec.validate()
    if not spec.service_id.startswith("hdd-"):
        continue
    def dev(path, rot, size):
        return Device(path, sys_api={"rotational": str(rot), "size": size, "vendor": "x", "model": "m"}, available=True)
    boot = Device("/dev/sda", sys_api={"rotational": "0", "size": 4e11}, available=False,
                  rejected_reasons=["has partitions"])
    disks = [boot] + [dev(f"/dev/nvme{i}n1", 0, 7.68e12) for i in range(int(sys.argv[2]))] + \\
        [dev(f"/dev/sd{chr(98 + i)}", 1, 1.6e13) for i in range(int(sys.argv[3]))]
    sel = DriveSelection(spec, disks)
    out[spec.service_id] = {"data": [d.path for d in sel.data_devices()], "db": [d.path for d in sel.db_devices()]}
print(json.dumps(out))
"""


def test_a_sized_plan_puts_block_db_on_flash_through_to_cephadm(cat, tmp_path):
    """An HDD tier with an IOPS demand that colocated HDDs would need many more spindles for:
    the plan's HDD hosts carry NVMe DB devices, the layout hands them to the inventory, and the
    OSD spec's db_devices is what Ceph's own DriveGroupSpec validates and selects the NVMe drives by."""
    bp = size_cloud(_wl(), cat)
    (hdd,) = [g for g in bp.nodes_by_role(NodeRole.storage) if g.drives[0].tier == Tier.hdd]
    (db,) = hdd.db_drives
    want = db_layout(_chassis(cat, hdd.chassis), _drive(cat, hdd.drives[0].model), hdd.drives[0].count,
                       cat.drives, BLOCK_DB_SHARE)
    assert (db.model, db.count, hdd.osds_per_db_drive) == (want.drive.name, want.count, want.osds_per_device)
    assert any("block.db" in n and f"{hdd.osds_per_db_drive} OSDs" in n for n in bp.notes)
    inv = layout(bp, load_model(Site, ROOT / "examples" / "site.yaml"))
    node = next(n for n in inv.nodes if n.drives.get(Tier.hdd))
    assert node.db_devices == db.count and node.expect.disks == hdd.drives[0].count + db.count
    files = render_all(inv, blueprint=bp.model_dump(mode="json"))
    specs = tmp_path / "osd-specs.yaml"
    specs.write_text(files["ceph/osd-specs.yaml"])
    got = json.loads(_ceph(PARSE_AND_SELECT, str(specs), str(db.count), str(hdd.drives[0].count)))
    sel = got[f"hdd-{node.name}"]
    assert sel["db"] == [f"/dev/nvme{i}n1" for i in range(db.count)]
    assert len(sel["data"]) == hdd.drives[0].count and all(p.startswith("/dev/sd") for p in sel["data"])
    spec = next(s for s in yaml.safe_load_all(files["ceph/osd-specs.yaml"]) if s["service_id"] == f"hdd-{node.name}")
    assert spec["spec"]["db_devices"] == {"rotational": False, "limit": db.count}


def test_policy_can_forbid_or_force_db_on_flash(cat):
    never = size_cloud(_wl(hdd_db_on_flash=False), cat)
    assert all(not g.db_drives for g in never.nodes)
    always = validate(Workload, {**_wl().model_dump(mode="json", exclude={"storage"}),
                                 "storage": [{"tier": "hdd", "usable_tib": 600}],
                                 "policy": {"hdd_db_on_flash": True}})
    bp = size_cloud(always, cat)
    assert all(g.db_drives for g in bp.nodes if g.drives and g.drives[0].tier == Tier.hdd)
