"""The deployable image boots from its own disk under UEFI, and its cloud-init applies cloudplan's seed.

A real QEMU machine (TCG; user-mode networking, so nothing outside loopback)
boots a copy-on-write overlay of the image built by ``cloudplan image build``,
with the node's NoCloud seed on a second disk and an empty data disk. The
installed OS's own cloud-init (Debian 12's) applies the network-config v2
(static provisioning address, an active-backup bond of two NICs matched by MAC,
a VLAN with its own MTU), creates the sudo user, grows the root filesystem and
phones its new SSH host key home to an HTTP server on loopback; cloudplan's SSH
verification then connects with that key pinned and reads the facts.

Legacy BIOS booting the same image from disk is proven where a deploy wrote it:
the first boot of ``test_deploy_mirror.py`` and the IPMI node of
``test_lab_deploy.py`` (a third boot here would add minutes and prove nothing more).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import paramiko
import pytest
from qemu_fixture import (
    HOST_FROM_GUEST,
    boot_http,  # noqa: F401 - fixtures
    console_on_failure,
    os_image,  # noqa: F401
    qemu_argv,
    ssh_key,
    ssh_run,
    start,
    user_nic,
    wait_phone_home,
)

from cloudplan.inventory import Inventory
from cloudplan.io import validate
from cloudplan.provision.deploy import build_seed_image, render_seed
from cloudplan.provision.sshverify import (
    PinnedHostKeyPolicy,
    parse_host_key,
    verify_node,
)
from provision_fixtures import free_tcp_port

BOOT_DEADLINE_S = 1200  # TCG on a busy 2-core machine: the first boot with cloud-init takes minutes
# Names no NIC has at boot (the kernel calls these ens3-ens5): renaming onto a name another NIC
# still holds fails in udev, so a site names NICs as its OS does, or with names of its own like these.
MACS = {"prov0": "52:54:00:ab:00:01", "fab0": "52:54:00:ab:00:02", "fab1": "52:54:00:ab:00:03"}
USER = "cloudplan"

pytestmark = pytest.mark.root


def _inventory() -> Inventory:
    return validate(Inventory, {
        "name": "boot-test",
        # QEMU's user-mode network: the guest at .15, the host's loopback reached at .2, its DNS at .3.
        "networks": {"provisioning": {"cidr": "10.0.2.0/24", "interface": "prov0", "gateway": HOST_FROM_GUEST},
                     "api": {"cidr": "10.20.0.0/24", "interface": "bond0.20", "vlan": 20, "mtu": 1400}},
        "default_route_network": "provisioning",
        "bonds": {"bond0": {"members": ["fab0", "fab1"], "mode": "active-backup", "mtu": 1500}},
        "dns_servers": ["10.0.2.3"],
        "nodes": [{"name": "node01", "role": "compute", "rack": "r1", "mac": MACS["prov0"],
                   "nics": {"fab0": MACS["fab0"], "fab1": MACS["fab1"]},
                   "bmc": {"address": "127.0.0.1", "username": "admin", "password_env": "UNUSED"},
                   "addresses": {"provisioning": "10.0.2.15", "api": "10.20.0.11"}}]})


def _qemu(image_path: Path, seed: Path, tmp: Path, ssh_port: int, uefi: bool):
    overlay, data = tmp / "root.qcow2", tmp / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image_path), "-F", "raw", str(overlay),
                    "6G"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "1G"], check=True)
    nics = []
    for i, name in enumerate(MACS):
        nics += user_nic(MACS[name], index=i, ssh_port=ssh_port if i == 0 else None, restrict=i > 0)
    argv = qemu_argv(tmp, "console", uefi=uefi, nics=nics) + [
        # bootindex: with several disks, SeaBIOS tries only the first it enumerates.
        "-drive", f"file={overlay},if=none,id=root,format=qcow2", "-device", "virtio-blk-pci,drive=root,bootindex=0",
        "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
        "-drive", f"file={data},if=none,id=data,format=qcow2", "-device", "virtio-blk-pci,drive=data,serial=DATA1"]
    return start(argv, tmp, "console")


def test_image_boots_from_disk_under_uefi_and_applies_the_seed(os_image, boot_http, tmp_path):
    inv = _inventory()
    node = inv.nodes[0]
    key_file, pub = ssh_key(tmp_path)
    seed = render_seed(inv, node, instance_id=f"node01-{tmp_path.name}", ssh_user=USER, ssh_public_keys=[pub],
                       phone_home_url=boot_http.guest_url("/phone-home/node01/test-token"))
    seed_img = build_seed_image(seed, tmp_path / "seed.img", node=node.name)
    ssh_port = free_tcp_port()
    proc = _qemu(os_image.path, seed_img, tmp_path, ssh_port, uefi=True)
    with console_on_failure(proc, tmp_path / "console.log"):
        report = wait_phone_home(boot_http, proc, tmp_path / "console.log", BOOT_DEADLINE_S)
        assert report["path"] == "/phone-home/node01/test-token" and report["hostname"] == "node01"
        host_key = report["pub_key_ed25519"].strip()
        facts = verify_node("127.0.0.1", port=ssh_port, username=USER, key_filename=str(key_file),
                            host_key=host_key, expect=None, hostname="node01", timeout_s=60)
        assert facts.hostname == "node01" and facts.cores == 1
        key_type, blob = parse_host_key(host_key, node="node01")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedHostKeyPolicy(key_type, blob))
        client.connect("127.0.0.1", port=ssh_port, username=USER, key_filename=str(key_file), timeout=60,
                       allow_agent=False, look_for_keys=False)
        try:
            _check_installed(client)
        finally:
            client.close()


def _check_installed(client: paramiko.SSHClient) -> None:
    # Root is the image's third partition on the first disk, grown by cloud-init past the image's 2 GiB.
    assert ssh_run(client, "findmnt -no SOURCE /").strip() == "/dev/vda3"
    size = int(ssh_run(client, "lsblk -bno SIZE /dev/vda3").strip())
    assert size > 4 << 30
    assert "root=UUID=" in ssh_run(client, "cat /proc/cmdline")
    assert ssh_run(client, "test -d /sys/firmware/efi && echo uefi || echo bios").strip() == "uefi"
    assert ssh_run(client, "sudo -n id -u").strip() == "0"
    # The data disk is left alone: no partition, no filesystem signature.
    disks = json.loads(ssh_run(client, "lsblk -J -o NAME,SERIAL,FSTYPE,TYPE"))["blockdevices"]
    data = [d for d in disks if d.get("serial") == "DATA1"]
    assert len(data) == 1 and not data[0].get("children") and not data[0].get("fstype")
    addrs = {i["ifname"]: i for i in json.loads(ssh_run(client, "ip -j addr show"))}
    assert {"prov0", "fab0", "fab1", "bond0", "bond0.20"} <= set(addrs), sorted(addrs)
    assert any(a["local"] == "10.0.2.15" and a["prefixlen"] == 24 for a in addrs["prov0"]["addr_info"])
    assert any(a["local"] == "10.20.0.11" and a["prefixlen"] == 24 for a in addrs["bond0.20"]["addr_info"])
    assert addrs["bond0.20"]["mtu"] == 1400 and addrs["bond0"]["mtu"] == 1500
    assert addrs["fab0"].get("master") == "bond0" and addrs["fab1"].get("master") == "bond0"
    bond = json.loads(ssh_run(client, "ip -j -d link show bond0"))[0]["linkinfo"]
    assert bond["info_kind"] == "bond" and bond["info_data"]["mode"] == "active-backup"
    vlan = json.loads(ssh_run(client, "ip -j -d link show bond0.20"))[0]["linkinfo"]
    assert vlan["info_kind"] == "vlan" and vlan["info_data"]["id"] == 20
    routes = json.loads(ssh_run(client, "ip -j route show default"))
    assert routes and routes[0]["gateway"] == "10.0.2.2"
    status = ssh_run(client, "cloud-init status --long || true")
    assert "status: done" in status, status
