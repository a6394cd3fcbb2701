"""A root on software RAID1 over two disks, built by the deploy ramdisk and booted from each disk.

QEMU (TCG, user-mode networking, as in ``test_deploy_ramdisk.py``) boots the
deploy ramdisk with root disk hints (ROOT1) and mirror hints (ROOT2). The
ramdisk writes and checks the image on ROOT1, grows its root partition, makes
it a RAID1 member with md's 1.0 superblock (at the partition's end, the
filesystem left at its start), gives ROOT2 the same partition table, boot code
and other partitions, and has md rebuild the root partition onto ROOT2.

The first test reads the result from the disk files: the same layout on both,
the image's bytes on both, both partitions members of one clean array. The
second deploys the real OS image, boots it with both disks (cloudplan's
installed-OS checks: / on md RAID1, both members active), then with ROOT1
gone: the firmware boots ROOT2 alone and / comes up on the degraded array.
"""

from __future__ import annotations

import json
import lzma
import secrets
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest
from qemu_fixture import (
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    blank_disk,
    boot_http,  # noqa: F401 - fixtures
    console_on_failure,
    deploy_ramdisk,  # noqa: F401
    guest_inventory,
    need,
    os_image,  # noqa: F401
    sha256_file,
    signatures,
    small_image,
    ssh_key,
    ssh_run,
    start_node,
    stop,
    tail,
    wait_exit,
    wait_phone_home,
)

from cloudplan.errors import ProvisioningFailed
from cloudplan.provision.deploy import build_seed_image, render_seed
from cloudplan.provision.deploy.cmdline import DeployArgs, kernel_cmdline
from cloudplan.provision.deploy.rootdisk import RootDiskHints
from cloudplan.provision.installcheck import verify_installed
from cloudplan.provision.sshverify import PinnedHostKeyPolicy, parse_host_key
from provision_fixtures import free_tcp_port

MAC = "52:54:00:d1:00:03"
USER = "cloudplan"
SMALL_DEADLINE_S = 300
# TCG on a shared 2-core machine: the 2 GiB image written and read back, then md's rebuild of the mirror.
DEPLOY_DEADLINE_S = 1500
BOOT_DEADLINE_S = 1200
STEPS = ["started", "root-disk", "image-written", "image-verified", "seed-written", "mirror-built", "data-wiped",
         "done"]

pytestmark = pytest.mark.root


def _args(boot_http, image: str, sha256: str) -> DeployArgs:
    """``image`` and seed.img from ``boot_http``; the root disk ROOT1, its mirror ROOT2, the data disk DATA1."""
    return DeployArgs(image_url=boot_http.guest_url(image), image_sha256=sha256,
                      seed_url=boot_http.guest_url("seed.img"), seed_sha256=sha256_file(boot_http.files / "seed.img"),
                      report_url=boot_http.guest_url("report"), token=secrets.token_urlsafe(16),
                      ip=f"{GUEST_ADDRESS}/24", gateway=HOST_FROM_GUEST, mac=MAC,
                      root_hints=RootDiskHints(serial="ROOT1"), mirror_hints=RootDiskHints(serial="ROOT2"),
                      data_serials=("DATA1",))


def _deploy(deploy_ramdisk, tmp: Path, drives: list[str], args: DeployArgs, deadline_s: float) -> float:
    began = time.monotonic()
    proc = start_node(tmp, "deploy", MAC, drives, ramdisk=deploy_ramdisk, cmdline=kernel_cmdline(args))
    try:
        wait_exit(proc, deadline_s, tmp / "deploy.log")
    finally:
        stop(proc)
    return time.monotonic() - began


def _table(disk: Path) -> dict:
    return json.loads(subprocess.run([need("sfdisk", "fdisk"), "--json", str(disk)], capture_output=True,
                                     text=True, check=True).stdout)["partitiontable"]


@contextmanager
def _partition(disk: Path, part: dict):
    """A read-only loop device over one partition of a disk file."""
    dev = subprocess.run([need("losetup", "mount"), "--find", "--show", "--read-only", "--offset",
                          str(part["start"] * 512), "--sizelimit", str(part["size"] * 512), str(disk)],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=True)


def _examine(disk: Path, part: dict) -> dict[str, str]:
    """``mdadm --examine`` of a partition: its md superblock's fields."""
    with _partition(disk, part) as dev:
        out = subprocess.run([need("mdadm", "mdadm"), "--examine", dev], capture_output=True, text=True,
                             check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(" : ") for line in out.splitlines()) if _}


def _read(disk: Path, offset: int, size: int) -> bytes:
    with open(disk, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def test_the_ramdisk_mirrors_the_root_disk_onto_the_second(deploy_ramdisk, boot_http, tmp_path):
    www = boot_http.files
    payload = small_image(tmp_path / "small.raw")
    (www / "small.raw.xz").write_bytes(lzma.compress((tmp_path / "small.raw").read_bytes(), preset=1))
    seed = secrets.token_bytes(1 << 20)  # the mirror copies the seed partition's bytes, whatever they are
    (www / "seed.img").write_bytes(seed)
    args = _args(boot_http, "small.raw.xz", sha256_file(tmp_path / "small.raw"))
    # The mirror is the larger disk: the layout is the root disk's, the rest of the mirror unused.
    root, mirror = blank_disk(tmp_path / "root.raw", 128), blank_disk(tmp_path / "mirror.raw", 160)
    data = blank_disk(tmp_path / "data.raw", 32)
    drives = ["-drive", f"file={root},if=none,id=root,format=raw", "-device", "virtio-blk-pci,drive=root,serial=ROOT1",
              "-drive", f"file={mirror},if=none,id=mirror,format=raw",
              "-device", "virtio-blk-pci,drive=mirror,serial=ROOT2",
              "-drive", f"file={data},if=none,id=data,format=raw", "-device", "virtio-blk-pci,drive=data,serial=DATA1"]
    took = _deploy(deploy_ramdisk, tmp_path, drives, args, SMALL_DEADLINE_S)
    reports = boot_http.reports
    assert [r.step for r in reports] == STEPS, ([r.error for r in reports], tail(tmp_path / "deploy.log"))
    done = reports[-1]
    assert (done.root_serial, done.mirror_disk, done.mirror_serial) == ("ROOT1", "vdb", "ROOT2")
    assert done.data_disks == (("vdc", "wipefs"),)

    a, b = _table(root), _table(mirror)
    # The same partitions at the same places (the root grown to the seed), each disk with its own GUIDs.
    shape = [(p["start"], p["size"], p["type"], p.get("name")) for p in a["partitions"]]
    assert shape == [(p["start"], p["size"], p["type"], p.get("name")) for p in b["partitions"]]
    assert [s[2:] for s in shape] == [("A19D880F-05FC-4D3B-A006-743F0F84911E", "root"),
                                      ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "cidata")]
    assert a["id"] != b["id"] and a["partitions"][0]["uuid"] != b["partitions"][0]["uuid"]
    rootpart, seedpart = a["partitions"]
    assert rootpart["start"] + rootpart["size"] == seedpart["start"]
    # The image's bytes where the image put them, on both disks: the filesystem at the partition's start.
    for disk in (root, mirror):
        assert _read(disk, 8 << 20, len(payload)) == payload
        assert _read(disk, seedpart["start"] * 512, len(seed)) == seed
    assert _read(root, 0, 440) == _read(mirror, 0, 440)
    # One array, clean, of the two root partitions: md 1.0 (superblock at the end), no data offset.
    ea, eb = _examine(root, a["partitions"][0]), _examine(mirror, b["partitions"][0])
    assert ea["Version"] == "1.0" and ea["Raid Level"] == "raid1" and ea["Raid Devices"] == "2"
    assert ea["Array UUID"] == eb["Array UUID"] and ea["Name"] == eb["Name"] == "any:root"
    assert ea["State"] == eb["State"] == "clean"
    assert ea["Array State"].split()[0] == eb["Array State"].split()[0] == "AA"
    assert ea.get("Data Offset", "0 sectors").startswith("0 ")
    assert ea["Events"] == eb["Events"]
    print(f"mirrored deploy (64 MiB image on 128 + 160 MiB disks) {took:.0f} s")


def _connect(port: int, key_file: Path, host_key: str, proc, log: Path, deadline_s: float) -> paramiko.SSHClient:
    """SSH to the node once its sshd answers, its host key pinned (a boot after the first phones nothing home)."""
    key_type, blob = parse_host_key(host_key, node="node01")
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedHostKeyPolicy(key_type, blob))
        try:
            client.connect("127.0.0.1", port=port, username=USER, key_filename=str(key_file), timeout=20,
                           banner_timeout=20, auth_timeout=20, allow_agent=False, look_for_keys=False)
            return client
        except (OSError, paramiko.SSHException):
            client.close()
            time.sleep(5)
    pytest.fail(f"no SSH within {deadline_s} s (QEMU exit {proc.poll()}); console tail:\n{tail(log)}")


def _booted_from_disk_with_its_seed(client: paramiko.SSHClient) -> None:
    """A kernel from the disk (no deploy arguments on its command line), the seed taken from the root
    disk's own cidata partition (the mirror disk has its copy), the static provisioning address up."""
    cmdline = ssh_run(client, "cat /proc/cmdline")
    assert "root=UUID=" in cmdline and "cloudplan." not in cmdline
    disks = json.loads(ssh_run(client, "lsblk -J -o NAME,SERIAL,FSTYPE,LABEL,PARTLABEL,TYPE"))["blockdevices"]
    for serial in ("ROOT1", "ROOT2"):
        disk = next(d for d in disks if d.get("serial") == serial)
        seed = [p for p in disk["children"] if p.get("label") == "CIDATA"]
        assert len(seed) == 1 and seed[0]["partlabel"] == "cidata" and seed[0]["fstype"] == "vfat", disk
    addrs = {i["ifname"]: i for i in json.loads(ssh_run(client, "ip -j addr show"))}
    assert any(a["local"] == GUEST_ADDRESS and a["prefixlen"] == 24 for a in addrs["prov0"]["addr_info"])


def _md_state(client: paramiko.SSHClient) -> tuple[str, str, dict[str, str]]:
    """(md device of /, degraded count, member -> state) as the installed OS sees them."""
    md = ssh_run(client, "findmnt -no SOURCE /").strip().split("/")[-1]
    degraded = ssh_run(client, f"cat /sys/block/{md}/md/degraded").strip()
    members = dict(line.split() for line in ssh_run(
        client, f'for d in /sys/block/{md}/md/dev-*; do echo "${{d##*/dev-}} $(cat $d/state)"; done').splitlines())
    return md, degraded, members


def _poweroff(client: paramiko.SSHClient, proc, log: Path) -> None:
    client.exec_command("sudo systemctl poweroff")
    client.close()
    wait_exit(proc, 300, log)


def test_the_mirrored_os_boots_from_both_disks_then_from_the_mirror_alone(deploy_ramdisk, os_image, boot_http,
                                                                          tmp_path):
    www, image = boot_http.files, os_image
    zstd = need("zstd", "zstd")
    subprocess.run([zstd, "-q", "-T0", "-3", str(image.path), "-o", str(www / "os.raw.zst")], check=True)
    inv = guest_inventory("mirror-test", MAC, root_disk={"serial": "ROOT1"}, root_disk_mirror={"serial": "ROOT2"},
                          data_disk_serials=["DATA1"])
    node = inv.nodes[0]
    key_file, pub = ssh_key(tmp_path)
    seed = render_seed(inv, node, instance_id=f"node01-{tmp_path.name}", ssh_user=USER, ssh_public_keys=[pub],
                       phone_home_url=boot_http.guest_url("phone-home/node01"))
    build_seed_image(seed, www / "seed.img", node=node.name)
    args = _args(boot_http, "os.raw.zst", image.sha256)
    disks = {}
    for name in ("root1", "root2"):
        disks[name] = tmp_path / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disks[name]), "5G"], check=True)
    data = blank_disk(tmp_path / "data.raw", 256)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(data)], check=True)  # an old filesystem, as a reused disk has
    assert "ext4" in signatures(data)
    root1 = ["-drive", f"file={disks['root1']},if=none,id=root1,format=qcow2,detect-zeroes=on",
             "-device", "virtio-blk-pci,drive=root1,serial=ROOT1,bootindex=1"]
    root2 = ["-drive", f"file={disks['root2']},if=none,id=root2,format=qcow2,detect-zeroes=on",
             "-device", "virtio-blk-pci,drive=root2,serial=ROOT2,bootindex=2"]
    datadev = ["-drive", f"file={data},if=none,id=data,format=raw", "-device", "virtio-blk-pci,drive=data,serial=DATA1"]
    took = _deploy(deploy_ramdisk, tmp_path, root1 + root2 + datadev, args, DEPLOY_DEADLINE_S)
    reports = boot_http.reports
    assert [r.step for r in reports] == STEPS, ([r.error for r in reports], tail(tmp_path / "deploy.log"))
    assert (reports[-1].root_serial, reports[-1].mirror_serial) == ("ROOT1", "ROOT2")
    assert reports[-1].sha256_ok is True and reports[-1].root_size_bytes == 5 << 30
    assert all(r.token == args.token for r in reports)
    assert args.token not in (tmp_path / "deploy.log").read_text(errors="replace")   # never on the console
    assert signatures(data) == ""  # the old filesystem wiped, the disk left unpartitioned

    # Both disks: / on the whole mirror, as cloudplan's installed-OS checks see it.
    ssh_port = free_tcp_port()
    began = time.monotonic()
    proc = start_node(tmp_path, "boot", MAC, root1 + root2 + datadev, ssh_port=ssh_port)
    with console_on_failure(proc, tmp_path / "boot.log"):
        report = wait_phone_home(boot_http, proc, tmp_path / "boot.log", BOOT_DEADLINE_S)
        host_key = report["pub_key_ed25519"].strip()
        client = _connect(ssh_port, key_file, host_key, proc, tmp_path / "boot.log", 120)
        found = verify_installed(lambda cmd: ssh_run(client, cmd), inv, node)
        md = found["mirror"]["md"]
        assert found["root_serial"] == "ROOT1" and found["empty_data_disks"] == ["vdc"], found
        assert found["mirror"]["serials"] == ["ROOT1", "ROOT2"] and found["mirror"]["members"] == ["vda3", "vdb3"]
        assert _md_state(client) == (md, "0", {"vda3": "in_sync", "vdb3": "in_sync"})
        # The members show as RAID members, not as the filesystem they start with: root=UUID= is the array.
        assert ssh_run(client, "lsblk -dno FSTYPE /dev/vda3 /dev/vdb3").split() == ["linux_raid_member"] * 2
        uuid = ssh_run(client, "findmnt -no UUID /").strip()
        assert ssh_run(client, f"readlink -f /dev/disk/by-uuid/{uuid}").strip() == f"/dev/{md}"
        # The filesystem grew with the array (md's size: the disk less the ESP, BIOS boot and seed partitions).
        assert int(ssh_run(client, "df -B1 --output=size / | tail -1").strip()) > 4 << 30
        assert "status: done" in ssh_run(client, "cloud-init status --long || true")
        _booted_from_disk_with_its_seed(client)
        # a wrong expectation is named
        wrong = node.model_copy(update={"root_disk": node.root_disk.model_copy(update={"serial": "ROOT9"})})
        with pytest.raises(ProvisioningFailed, match=r"the root mirror md\d+ is on disks vda, vdb \(serials ROOT1, "
                                                     r"ROOT2\), the hints say serials ROOT2, ROOT9"):
            verify_installed(lambda cmd: ssh_run(client, cmd), inv, wrong)
        both = time.monotonic() - began
        _poweroff(client, proc, tmp_path / "boot.log")

    # ROOT1 gone, and UEFI this time (OVMF): the firmware boots GRUB from ROOT2's own ESP, the initramfs
    # starts the array degraded.
    began = time.monotonic()
    proc = start_node(tmp_path, "alone", MAC, root2 + datadev, ssh_port=ssh_port, uefi=True)
    with console_on_failure(proc, tmp_path / "alone.log"):
        client = _connect(ssh_port, key_file, host_key, proc, tmp_path / "alone.log", BOOT_DEADLINE_S)
        alone = time.monotonic() - began
        assert ssh_run(client, "test -d /sys/firmware/efi && echo uefi || echo bios").strip() == "uefi"
        assert _md_state(client) == (md, "1", {"vda3": "in_sync"})
        disk = ssh_run(client, "lsblk -dno PKNAME /dev/vda3").strip()
        assert ssh_run(client, f"lsblk -dno SERIAL /dev/{disk}").strip() == "ROOT2"
        # cloudplan's checks say so: the mirror is not whole.
        with pytest.raises(ProvisioningFailed, match=rf"the root mirror {md} is not whole: vda3 in_sync \(degraded 1\)"):
            verify_installed(lambda cmd: ssh_run(client, cmd), inv, node)
        client.close()
    print(f"mirrored deploy {took:.0f} s, first boot (both disks) to checks {both:.0f} s, "
          f"UEFI boot from the mirror alone to SSH {alone:.0f} s")
