"""`cloudplan layout --existing`: an expansion placed around the nodes already standing.

The installed cloud is laid out by `cloudplan layout` itself; the grown blueprint comes from a
real expansion sizing (HiGHS). The inventory's own validator (unique names, BMCs, addresses)
and the U map of every rack judge the result.
"""

from __future__ import annotations

import ipaddress

import pytest

from cloudplan.catalog import load_catalog
from cloudplan.day2.expand_layout import expand_layout
from cloudplan.errors import UsageError
from cloudplan.io import load_model, validate, write_model
from cloudplan.inventory import Inventory
from cloudplan.layout import Site, layout
from cloudplan.sizing.expansion import expand_cloud
from cloudplan.sizing.plan import size_cloud
from tests.test_cli import run
from tests.test_sizing import SPINE, workload, write_catalog

SITE = {"name": "t", "networks": {"provisioning": {"cidr": "10.10.0.0/24"},
                                  "api": {"cidr": "10.20.0.0/24", "gateway": "10.20.0.1"},
                                  "bmc": {"cidr": "10.30.0.0/24"}}}


def vms(count: int):
    return workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": count}])


def small_racks(d, height_u: int):
    """test_sizing's catalog with racks of ``height_u`` units, and spines to join several."""
    write_catalog(d, spines=[SPINE])
    (d / "racks.yaml").write_text(f"racks: [{{name: rack, height_u: {height_u}, power_budget_w: 100000, "
                                  f"price_usd: 500}}]\n")
    return load_catalog(d)


def used_units(inv: Inventory, rack: str) -> list[int]:
    units = [u for n in inv.nodes if n.rack == rack for u in range(n.u, n.u + n.height_u)]
    units += [u for r in inv.racks if r.name == rack for d in r.devices for u in range(d.u, d.u + d.height_u)]
    return units


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """8 nodes (3 controllers, 5 compute, 1U each) in one rack of 14U (2 reserved, 3 for the switches
    at the top: 9 for nodes); growing from 10 to 25 VMs buys 5 compute hosts: one fills the last
    free unit, the others go to a second rack."""
    cat = small_racks(tmp_path_factory.mktemp("cat"), 14)
    site = validate(Site, SITE)
    base = size_cloud(vms(10), cat)
    assert base.racks_count == 1
    inv = layout(base, site)
    bp = expand_cloud(vms(25), cat, base)
    return inv, bp, site


def test_every_old_node_keeps_rack_u_name_and_addresses(grown):
    inv, bp, site = grown
    out = expand_layout(bp, inv, site)
    before = {n.name: n for n in inv.nodes}
    for n in out.nodes:
        if n.name in before:
            assert n == before[n.name]
    assert len(out.nodes) == len(inv.nodes) + bp.expansion.added_nodes
    assert [r.name for r in out.racks[:len(inv.racks)]] == [r.name for r in inv.racks]


def test_new_nodes_take_free_units_first_then_new_racks(grown):
    inv, bp, site = grown
    out = expand_layout(bp, inv, site)
    old = {n.name for n in inv.nodes}
    new = [n for n in out.nodes if n.name not in old]
    assert bp.racks_count == 2 and bp.expansion.added_racks == 1
    # r1 had units 1-8 taken: the first new node takes U9, the rest go to the new rack r2 from U1.
    assert [(n.rack, n.u) for n in new if n.rack == "r1"] == [("r1", 9)]
    assert sorted(n.u for n in new if n.rack == "r2") == list(range(1, len(new)))
    for rack in ("r1", "r2"):
        units = used_units(out, rack)
        assert len(units) == len(set(units)), f"{rack}: two things in one unit"
        assert max(units) <= 12                 # 14U less the 2 reserved
    assert {r.name for r in out.racks} == {"r1", "r2"}
    # names continue each rack's count; addresses continue after the highest in use
    assert [n.name for n in new if n.rack == "r1"] == ["r1-cmp-06"]
    for net in ("provisioning", "api"):
        top = max(ipaddress.ip_address(n.addresses[net]) for n in inv.nodes)
        assert all(ipaddress.ip_address(n.addresses[net]) > top for n in new)
    top_bmc = max(ipaddress.ip_address(n.bmc.address) for n in inv.nodes)
    assert all(ipaddress.ip_address(n.bmc.address) > top_bmc for n in new)


def test_addresses_freed_by_a_removed_node_are_not_reused(grown):
    """A node taken out of the inventory leaves a gap; the new nodes continue after the highest address."""
    inv, bp, site = grown
    gone = inv.model_copy(deep=True)
    removed = gone.nodes.pop(3)
    out = expand_layout(bp, gone, site)
    taken = {a for n in out.nodes for a in n.addresses.values()}
    assert removed.addresses["api"] not in taken


def test_a_blueprint_sized_from_nothing_is_refused(grown, tmp_path):
    inv, _, site = grown
    with pytest.raises(UsageError, match="size --installed"):
        expand_layout(size_cloud(vms(10), load_catalog(write_catalog(tmp_path / "cat"))), inv, site)


def test_cli_layout_existing(grown, tmp_path, capsys):
    inv, bp, site = grown
    for name, model in (("inv.yaml", inv), ("bp.yaml", bp), ("site.yaml", site)):
        write_model(model, tmp_path / name)
    code, out, err = run(capsys, "layout", tmp_path / "bp.yaml", "--site", tmp_path / "site.yaml", "--existing",
                         tmp_path / "inv.yaml", "-o", tmp_path / "grown.yaml")
    assert code == 0, err
    assert "new: r1-cmp-06 (r1 U9)" in out
    assert "kolla-ansible deploy -i deploy/multinode --limit r1-cmp-06,r2-cmp-01" in out
    grown_inv = load_model(Inventory, tmp_path / "grown.yaml")
    assert len(grown_inv.nodes) == len(inv.nodes) + bp.expansion.added_nodes
