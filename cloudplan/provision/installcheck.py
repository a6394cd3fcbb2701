"""What SSH verification checks on an installed node, against the inventory.

An image deploy is done when the OS on the disk, after its own boot, shows:

- ``/`` on a block device of the chosen root disk (not a ramdisk, tmpfs or
  overlay), and that disk the one the hints name (serial), never a planned data
  disk; with a mirror, ``/`` on an md RAID1 whose members, both in sync, are
  partitions of the two disks the hints name;
- a kernel booted from disk: ``root=`` on its command line and none of the
  deploy ramdisk's ``cloudplan.`` arguments;
- every inventory network with its address on its interface, of the kind the
  inventory says (bond, VLAN, NIC), with the declared MTU, and the network's
  gateway answering through it (a VLAN the switch does not carry shows here,
  named);
- the data disks empty: no partition table, no filesystem, no partitions.

Commands are plain ones of the image (``findmnt``, ``lsblk``, ``ip -j``,
``python3``); the checks are functions of their output, so they are tested on
real output from a real boot.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import Inventory, Node
from cloudplan.provision.deploy.netconfig import network_config

STEP = "verify"
CMD_ROOT = "findmnt -n -o SOURCE /"
CMD_CMDLINE = "cat /proc/cmdline"
CMD_BLOCK = "lsblk -J -b -o NAME,TYPE,SERIAL,FSTYPE,PTTYPE,MOUNTPOINT"
CMD_ADDR = "ip -j -d addr show"
# An md array's level, whether degraded, and each member's state (sysfs: no root needed).
CMD_MD = ("cat /sys/block/{md}/md/level /sys/block/{md}/md/degraded; "
          "for d in /sys/block/{md}/md/dev-*; do echo \"${{d##*/dev-}} $(cat $d/state)\"; done")
# TCP to the gateway's discard port: refused or accepted means the gateway answered (ARP and IP worked);
# "no route"/"unreachable"/a timeout means it did not. Needs no ping binary and no root.
PROBE = ("python3 -c 'import socket,sys;s=socket.socket();s.settimeout(4);"
         "print(s.connect_ex((sys.argv[1],9)))' {gw}")
REACHED_ERRNOS = frozenset({0, 111})   # connected, ECONNREFUSED
NOT_ROOT_SOURCES = ("rootfs", "tmpfs", "overlay", "none", "ramfs")


@dataclass(frozen=True)
class NetworkExpect:
    network: str
    interface: str
    kind: str                 # ethernet, bond, vlan
    address: str              # ADDR/PREFIX
    mtu: int | None
    gateway: str | None


@dataclass
class InstalledExpect:
    root_serial: str | None
    data_serials: list[str]
    mirror_serial: str | None = None   # the second root disk of a RAID1 root (its serial hint)
    mirrored: bool = False             # root_disk_mirror given: / must be on md RAID1
    networks: list[NetworkExpect] = field(default_factory=list)


def expected(inv: Inventory, node: Node) -> InstalledExpect:
    devices = {d.name: d for kind in network_config(inv, node).values() for d in kind}
    nets = []
    for name, net in inv.networks.items():
        if name not in node.addresses or not net.interface:
            continue
        dev = devices[net.interface]
        ip = ipaddress.ip_address(node.addresses[name])
        nets.append(NetworkExpect(name, net.interface, dev.kind, f"{ip}/{net.network.prefixlen}", dev.mtu,
                                  net.gateway))
    mirror = node.root_disk_mirror
    return InstalledExpect(root_serial=node.root_disk.serial if node.root_disk else None,
                           data_serials=list(node.data_disk_serials), networks=nets,
                           mirror_serial=mirror.serial if mirror else None, mirrored=mirror is not None)


def _fail(message: str, node: str) -> ProvisioningFailed:
    return ProvisioningFailed(message, node=node, step=STEP)


def _holds(dev: dict, mountpoint: str) -> bool:
    mounts = {dev.get("mountpoint")} | set(dev.get("mountpoints") or [])
    return mountpoint in mounts or any(_holds(c, mountpoint) for c in dev.get("children") or [])


def _disks_of(devices: list[dict], mountpoint: str) -> list[dict]:
    """The top-level disks whose trees hold ``mountpoint`` (two for a root on RAID1)."""
    return [d for d in devices if d.get("type") == "disk" and _holds(d, mountpoint)]



def check_root(root_source: str, cmdline: str, lsblk_json: str, exp: InstalledExpect, node: str) -> dict:
    """``/`` on a disk (the hinted one), a kernel booted from disk; returns the root disk's lsblk entry."""
    source = root_source.strip()
    if not source.startswith("/dev/") or source.split("/")[-1] in NOT_ROOT_SOURCES:
        raise _fail(f"/ is on {source or 'nothing'!r}, not a disk (still a ramdisk?)", node)
    args = cmdline.split()
    if any(a.startswith("cloudplan.") for a in args) or not any(a.startswith("root=") for a in args):
        raise _fail("the kernel did not boot from disk (its command line has the deploy ramdisk's "
                    "arguments or no root=)", node)
    # Both disks of a mirror hold /: the one the root hint names is the root disk.
    holders = _disks_of(json.loads(lsblk_json).get("blockdevices", []), "/")
    disk = next((d for d in holders if (d.get("serial") or "").strip() == exp.root_serial), None)
    disk = disk or next(iter(holders), None)
    if disk is None:
        raise _fail(f"no disk holds / ({source})", node)
    serial = (disk.get("serial") or "").strip() or None
    if exp.root_serial is not None and serial != exp.root_serial:
        raise _fail(f"/ is on {disk['name']} (serial {serial or '-'}), the root disk hint says serial "
                    f"{exp.root_serial}", node)
    if serial is not None and serial in exp.data_serials:
        raise _fail(f"/ is on {disk['name']}, a planned data disk (serial {serial})", node)
    return disk


def check_mirror(root_source: str, md_facts: str, lsblk_json: str, exp: InstalledExpect, node: str) -> dict:
    """``/`` on md RAID1, not degraded, both members in sync, on the two hinted disks; what was found."""
    md = root_source.strip().split("/")[-1]
    lines = md_facts.split("\n")
    level, degraded, members = lines[0].strip(), lines[1].strip() if len(lines) > 1 else "", {}
    for line in lines[2:]:
        name, _, state = line.strip().partition(" ")
        if name:
            members[name] = state
    if level != "raid1":
        raise _fail(f"/ is on {root_source.strip()} ({level or 'not an md array'}), the inventory mirrors it "
                    "(software RAID1)", node)
    stale = {m: s for m, s in members.items() if "in_sync" not in s.split(",")}
    if degraded != "0" or len(members) != 2 or stale:
        states = ", ".join(f"{m} {s}" for m, s in sorted(members.items())) or "no members"
        raise _fail(f"the root mirror {md} is not whole: {states} (degraded {degraded or '?'})", node)
    disks = _disks_of(json.loads(lsblk_json).get("blockdevices", []), "/")
    serials = sorted((d.get("serial") or "").strip() for d in disks)
    want = sorted(s for s in (exp.root_serial, exp.mirror_serial) if s)
    if len(disks) != 2 or (len(want) == 2 and serials != want):
        raise _fail(f"the root mirror {md} is on disks {', '.join(d['name'] for d in disks)} (serials "
                    f"{', '.join(serials) or '-'}), the hints say serials {', '.join(want)}", node)
    return {"md": md, "members": sorted(members), "disks": [d["name"] for d in disks], "serials": serials}


def check_data_disks(lsblk_json: str, root: dict, exp: InstalledExpect, node: str,
                     root_disks: tuple[str, ...] = ()) -> list[str]:
    """The data disks (planned serials, else every other disk) are empty; returns their names."""
    out = []
    skip = {root.get("name"), *root_disks}
    for d in json.loads(lsblk_json).get("blockdevices", []):
        if d.get("type") != "disk" or d.get("name") in skip or d.get("name", "").startswith("zram"):
            continue
        serial = (d.get("serial") or "").strip()
        if exp.data_serials and serial not in exp.data_serials:
            continue
        used = [what for what, v in (("partitions", d.get("children")), ("a partition table", d.get("pttype")),
                                     ("a filesystem", d.get("fstype"))) if v]
        if used:
            raise _fail(f"data disk {d['name']} (serial {serial or '-'}) is not empty: it has {', '.join(used)}",
                        node)
        out.append(d["name"])
    missing = set(exp.data_serials) - {(d.get("serial") or "").strip()
                                       for d in json.loads(lsblk_json).get("blockdevices", [])}
    if missing:
        raise _fail(f"planned data disks not found: serial {', '.join(sorted(missing))}", node)
    return out


def check_networks(ip_json: str, exp: InstalledExpect, node: str) -> None:
    links = {link["ifname"]: link for link in json.loads(ip_json)}
    for net in exp.networks:
        where = f"network {net.network} ({net.interface})"
        link = links.get(net.interface)
        if link is None:
            raise _fail(f"{where}: no such interface", node)
        kind = (link.get("linkinfo") or {}).get("info_kind")
        want = {"bond": "bond", "vlan": "vlan"}.get(net.kind)
        if want is not None and kind != want:
            raise _fail(f"{where}: is a {kind or 'plain NIC'}, the inventory says {net.kind}", node)
        have = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
        if net.address not in have:
            raise _fail(f"{where}: address {net.address} missing (has {', '.join(sorted(have)) or 'none'})", node)
        if net.mtu is not None and link.get("mtu") != net.mtu:
            raise _fail(f"{where}: MTU {link.get('mtu')}, the inventory says {net.mtu}", node)
        if "UP" not in link.get("flags", []):
            raise _fail(f"{where}: interface is down", node)


def check_gateways(run: Callable[[str], str], exp: InstalledExpect, node: str) -> None:
    for net in exp.networks:
        if not net.gateway:
            continue
        got = run(PROBE.format(gw=net.gateway)).strip()
        if not got.lstrip("-").isdigit() or int(got) not in REACHED_ERRNOS:
            raise _fail(f"network {net.network} ({net.interface}): gateway {net.gateway} does not answer "
                        f"(errno {got}): is the VLAN carried, the cable in?", node)


def verify_installed(run: Callable[[str], str], inv: Inventory, node: Node) -> dict:
    """Every check above through ``run(cmd) -> stdout``; returns what it found, for the state file."""
    exp = expected(inv, node)
    lsblk = run(CMD_BLOCK)
    source = run(CMD_ROOT)
    mirror = None
    if exp.mirrored:
        md = source.strip().split("/")[-1]
        mirror = check_mirror(source, run(CMD_MD.format(md=md)) if md.startswith("md") else "", lsblk, exp,
                              node.name)
    root = check_root(source, run(CMD_CMDLINE), lsblk, exp, node.name)
    data = check_data_disks(lsblk, root, exp, node.name, tuple(mirror["disks"]) if mirror else ())
    check_networks(run(CMD_ADDR), exp, node.name)
    check_gateways(run, exp, node.name)
    found = {"root_disk": root["name"], "root_serial": (root.get("serial") or "").strip() or None,
             "empty_data_disks": data, "networks": [n.network for n in exp.networks]}
    if mirror:
        found["mirror"] = mirror
    return found
