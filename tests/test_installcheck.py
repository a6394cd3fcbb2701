"""The installed-OS checks on hand-checkable command output (the shapes findmnt, lsblk -J and
ip -j print); the same checks run on a real installed OS in test_deploy_mirror.py and
test_lab_deploy.py."""

from __future__ import annotations

import json

import pytest

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import Inventory
from cloudplan.io import validate
from cloudplan.provision import installcheck as ic

LSBLK = json.dumps({"blockdevices": [
    {"name": "vda", "type": "disk", "serial": "ROOT1", "fstype": None, "pttype": "gpt", "mountpoint": None,
     "children": [{"name": "vda1", "type": "part", "fstype": "ext4", "mountpoint": "/"},
                  {"name": "vda2", "type": "part", "fstype": "vfat", "mountpoint": None}]},
    {"name": "vdb", "type": "disk", "serial": "DATA1", "fstype": None, "pttype": None, "mountpoint": None}]})


def _inv(**node) -> Inventory:
    return validate(Inventory, {
        "networks": {"provisioning": {"cidr": "10.77.0.0/24", "interface": "prov0"},
                     "api": {"cidr": "10.20.0.0/24", "interface": "bond0.20", "vlan": 20, "gateway": "10.20.0.1",
                             "mtu": 1500}},
        "bonds": {"bond0": {"members": ["ens1", "ens2"], "mode": "active-backup"}},
        "nodes": [{"name": "n1", "role": "compute", "rack": "r1", "mac": "52:54:00:00:00:01",
                   "bmc": {"address": "10.0.0.1", "username": "a", "password_env": "X"},
                   "addresses": {"provisioning": "10.77.0.11", "api": "10.20.0.11"},
                   "nics": {"ens1": "52:54:00:00:01:01", "ens2": "52:54:00:00:01:02"}, **node}]})


def _ip(**over) -> str:
    links = [
        {"ifname": "prov0", "flags": ["UP"], "mtu": 1500, "addr_info": [{"local": "10.77.0.11", "prefixlen": 24}]},
        {"ifname": "bond0", "flags": ["UP"], "mtu": 1500, "linkinfo": {"info_kind": "bond"}, "addr_info": []},
        {"ifname": "bond0.20", "flags": ["UP"], "mtu": over.get("mtu", 1500),
         "linkinfo": {"info_kind": over.get("kind", "vlan")},
         "addr_info": [{"local": over.get("api", "10.20.0.11"), "prefixlen": 24}]},
    ]
    return json.dumps(links)


def test_expected_from_the_inventory():
    inv = _inv(root_disk={"serial": "ROOT1"}, data_disk_serials=["DATA1"])
    exp = ic.expected(inv, inv.nodes[0])
    assert exp.root_serial == "ROOT1" and exp.data_serials == ["DATA1"]
    assert [(n.network, n.interface, n.kind, n.address, n.gateway) for n in exp.networks] == [
        ("provisioning", "prov0", "ethernet", "10.77.0.11/24", None),
        ("api", "bond0.20", "vlan", "10.20.0.11/24", "10.20.0.1")]


def test_a_good_install_passes_and_says_what_it_found():
    inv = _inv(root_disk={"serial": "ROOT1"}, data_disk_serials=["DATA1"])
    out = {ic.CMD_BLOCK: LSBLK, ic.CMD_ROOT: "/dev/vda1\n", ic.CMD_CMDLINE: "BOOT_IMAGE=/vmlinuz root=UUID=ab ro\n",
           ic.CMD_ADDR: _ip(), ic.PROBE.format(gw="10.20.0.1"): "111\n"}
    assert ic.verify_installed(out.__getitem__, inv, inv.nodes[0]) == {
        "root_disk": "vda", "root_serial": "ROOT1", "empty_data_disks": ["vdb"], "networks": ["provisioning", "api"]}


@pytest.mark.parametrize("source,cmdline,why", [
    ("rootfs", "root=UUID=ab", "/ is on 'rootfs', not a disk"),
    ("/dev/vda1", "quiet cloudplan.token=x root=UUID=ab", "did not boot from disk"),
    ("/dev/vda1", "console=ttyS0", "did not boot from disk"),
])
def test_a_ramdisk_or_a_kernel_not_from_disk_fails(source, cmdline, why):
    exp = ic.InstalledExpect(root_serial=None, data_serials=[])
    with pytest.raises(ProvisioningFailed, match=why):
        ic.check_root(source, cmdline, LSBLK, exp, "n1")


def test_root_on_another_disk_than_the_hint_or_on_a_data_disk_fails():
    with pytest.raises(ProvisioningFailed, match="the root disk hint says serial ROOT9"):
        ic.check_root("/dev/vda1", "root=UUID=ab", LSBLK, ic.InstalledExpect("ROOT9", []), "n1")
    with pytest.raises(ProvisioningFailed, match="a planned data disk"):
        ic.check_root("/dev/vda1", "root=UUID=ab", LSBLK, ic.InstalledExpect(None, ["ROOT1"]), "n1")


def test_a_data_disk_with_a_filesystem_or_missing_fails():
    used = json.loads(LSBLK)
    used["blockdevices"][1]["fstype"] = "ext4"
    root = used["blockdevices"][0]
    with pytest.raises(ProvisioningFailed, match="data disk vdb .serial DATA1. is not empty: it has a filesystem"):
        ic.check_data_disks(json.dumps(used), root, ic.InstalledExpect(None, ["DATA1"]), "n1")
    with pytest.raises(ProvisioningFailed, match="planned data disks not found: serial DATA7"):
        ic.check_data_disks(LSBLK, root, ic.InstalledExpect(None, ["DATA1", "DATA7"]), "n1")


@pytest.mark.parametrize("over,why", [
    ({"api": "10.20.0.99"}, r"network api \(bond0.20\): address 10.20.0.11/24 missing"),
    ({"mtu": 9000}, r"network api \(bond0.20\): MTU 9000, the inventory says 1500"),
    ({"kind": "bond"}, r"network api \(bond0.20\): is a bond, the inventory says vlan"),
])
def test_a_network_not_as_declared_is_named(over, why):
    inv = _inv()
    with pytest.raises(ProvisioningFailed, match=why):
        ic.check_networks(_ip(**over), ic.expected(inv, inv.nodes[0]), "n1")


def test_a_gateway_that_does_not_answer_names_the_network():
    inv = _inv()
    exp = ic.expected(inv, inv.nodes[0])
    ic.check_gateways(lambda cmd: "0\n", exp, "n1")      # connected: answered
    with pytest.raises(ProvisioningFailed, match=r"network api \(bond0.20\): gateway 10.20.0.1 does not answer "
                                                 r"\(errno 113\)"):
        ic.check_gateways(lambda cmd: "113\n", exp, "n1")  # EHOSTUNREACH: ARP got no answer


# A root on RAID1 as lsblk -J prints it: the md device under the root partition of each disk.
def _md(mount: str | None = "/") -> dict:
    return {"name": "md127", "type": "raid1", "fstype": "ext4", "mountpoint": mount}


MIRRORED = json.dumps({"blockdevices": [
    {"name": "vda", "type": "disk", "serial": "ROOT1", "pttype": "gpt", "mountpoint": None,
     "children": [{"name": "vda2", "type": "part", "fstype": "vfat", "mountpoint": None},
                  {"name": "vda3", "type": "part", "fstype": "linux_raid_member", "mountpoint": None,
                   "children": [_md()]}]},
    {"name": "vdb", "type": "disk", "serial": "ROOT2", "pttype": "gpt", "mountpoint": None,
     "children": [{"name": "vdb3", "type": "part", "fstype": "linux_raid_member", "mountpoint": None,
                   "children": [_md()]}]},
    {"name": "vdc", "type": "disk", "serial": "DATA1", "fstype": None, "pttype": None, "mountpoint": None}]})
MD_WHOLE = "raid1\n0\nvda3 in_sync\nvdb3 in_sync\n"


def _mirrored_out(md_facts: str = MD_WHOLE, lsblk: str = MIRRORED) -> dict:
    return {ic.CMD_BLOCK: lsblk, ic.CMD_ROOT: "/dev/md127\n", ic.CMD_CMDLINE: "root=UUID=ab ro\n",
            ic.CMD_MD.format(md="md127"): md_facts, ic.CMD_ADDR: _ip(), ic.PROBE.format(gw="10.20.0.1"): "111\n"}


def test_a_whole_root_mirror_on_the_hinted_disks_passes():
    inv = _inv(root_disk={"serial": "ROOT1"}, root_disk_mirror={"serial": "ROOT2"}, data_disk_serials=["DATA1"])
    found = ic.verify_installed(_mirrored_out().__getitem__, inv, inv.nodes[0])
    assert found == {"root_disk": "vda", "root_serial": "ROOT1", "empty_data_disks": ["vdc"],
                     "networks": ["provisioning", "api"],
                     "mirror": {"md": "md127", "members": ["vda3", "vdb3"], "disks": ["vda", "vdb"],
                                "serials": ["ROOT1", "ROOT2"]}}
    # Without planned data disks, the mirror's disk is not taken for one (it has partitions).
    inv = _inv(root_disk={"serial": "ROOT1"}, root_disk_mirror={"serial": "ROOT2"})
    assert ic.verify_installed(_mirrored_out().__getitem__, inv, inv.nodes[0])["empty_data_disks"] == ["vdc"]


@pytest.mark.parametrize(("md_facts", "why"), [
    ("raid1\n1\nvda3 in_sync\n", r"the root mirror md127 is not whole: vda3 in_sync \(degraded 1\)"),
    ("raid1\n0\nvda3 in_sync\nvdb3 spare\n", "not whole: vda3 in_sync, vdb3 spare"),
    ("raid0\n0\nvda3 in_sync\nvdb3 in_sync\n", r"/ is on /dev/md127 \(raid0\), the inventory mirrors it"),
])
def test_a_root_mirror_not_whole_or_not_raid1_is_named(md_facts, why):
    inv = _inv(root_disk={"serial": "ROOT1"}, root_disk_mirror={"serial": "ROOT2"}, data_disk_serials=["DATA1"])
    with pytest.raises(ProvisioningFailed, match=why):
        ic.verify_installed(_mirrored_out(md_facts).__getitem__, inv, inv.nodes[0])


def test_a_root_not_mirrored_or_mirrored_on_other_disks_fails():
    inv = _inv(root_disk={"serial": "ROOT1"}, root_disk_mirror={"serial": "ROOT3"}, data_disk_serials=["DATA1"])
    with pytest.raises(ProvisioningFailed, match=r"the root mirror md127 is on disks vda, vdb \(serials ROOT1, "
                                                 r"ROOT2\), the hints say serials ROOT1, ROOT3"):
        ic.verify_installed(_mirrored_out().__getitem__, inv, inv.nodes[0])
    plain = {**_mirrored_out(), ic.CMD_BLOCK: LSBLK, ic.CMD_ROOT: "/dev/vda1\n"}
    with pytest.raises(ProvisioningFailed, match=r"/ is on /dev/vda1 \(not an md array\), the inventory mirrors it"):
        ic.verify_installed(plain.__getitem__, inv, inv.nodes[0])
