"""What SSH verification checks on an installed node, against the inventory.

An image deploy is done when the OS on the disk, after its own boot, shows:

- ``/`` on a block device of the chosen root disk (not a ramdisk, tmpfs or
  overlay), and that disk the one the hints name (serial), never a planned data
  disk;
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
    return InstalledExpect(root_serial=node.root_disk.serial if node.root_disk else None,
                           data_serials=list(node.data_disk_serials), networks=nets)


def _fail(message: str, node: str) -> ProvisioningFailed:
    return ProvisioningFailed(message, node=node, step=STEP)


def _disk_of(devices: list[dict], mountpoint: str) -> dict | None:
    """The top-level disk whose tree holds ``mountpoint``."""
    def holds(dev: dict) -> bool:
        mounts = {dev.get("mountpoint")} | set(dev.get("mountpoints") or [])
        return mountpoint in mounts or any(holds(c) for c in dev.get("children") or [])
    return next((d for d in devices if d.get("type") == "disk" and holds(d)), None)


def check_root(root_source: str, cmdline: str, lsblk_json: str, exp: InstalledExpect, node: str) -> dict:
    """``/`` on a disk (the hinted one), a kernel booted from disk; returns the root disk's lsblk entry."""
    source = root_source.strip()
    if not source.startswith("/dev/") or source.split("/")[-1] in NOT_ROOT_SOURCES:
        raise _fail(f"/ is on {source or 'nothing'!r}, not a disk (still a ramdisk?)", node)
    args = cmdline.split()
    if any(a.startswith("cloudplan.") for a in args) or not any(a.startswith("root=") for a in args):
        raise _fail("the kernel did not boot from disk (its command line has the deploy ramdisk's "
                    "arguments or no root=)", node)
    devices = json.loads(lsblk_json).get("blockdevices", [])
    disk = _disk_of(devices, "/")
    if disk is None:
        raise _fail(f"no disk holds / ({source})", node)
    serial = (disk.get("serial") or "").strip() or None
    if exp.root_serial is not None and serial != exp.root_serial:
        raise _fail(f"/ is on {disk['name']} (serial {serial or '-'}), the root disk hint says serial "
                    f"{exp.root_serial}", node)
    if serial is not None and serial in exp.data_serials:
        raise _fail(f"/ is on {disk['name']}, a planned data disk (serial {serial})", node)
    return disk


def check_data_disks(lsblk_json: str, root: dict, exp: InstalledExpect, node: str) -> list[str]:
    """The data disks (planned serials, else every other disk) are empty; returns their names."""
    out = []
    for d in json.loads(lsblk_json).get("blockdevices", []):
        if d.get("type") != "disk" or d.get("name") == root.get("name") or d.get("name", "").startswith("zram"):
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
    root = check_root(run(CMD_ROOT), run(CMD_CMDLINE), lsblk, exp, node.name)
    data = check_data_disks(lsblk, root, exp, node.name)
    check_networks(run(CMD_ADDR), exp, node.name)
    check_gateways(run, exp, node.name)
    return {"root_disk": root["name"], "root_serial": (root.get("serial") or "").strip() or None,
            "empty_data_disks": data, "networks": [n.network for n in exp.networks]}
