"""The deploy ramdisk, booted for real: image streamed to disk, checked, seed added, data disks wiped, reboot from disk.

QEMU (TCG, user-mode networking: the guest reaches the host's loopback at
10.0.2.2) boots cloudplan's deploy ramdisk by direct kernel boot, standing in
for iPXE. A loopback HTTP server serves the compressed OS image and the seed
and records the ramdisk's reports. After the ramdisk powers off, the same root
disk boots on its own; the installed OS's cloud-init finds the seed in the
disk's own ``cidata`` partition and phones its host key home, and cloudplan's
SSH verification connects with that key pinned. A wrong sha256 must end in a
failure report and a root disk with no partition table or boot sector left.
"""

from __future__ import annotations

import json
import lzma
import secrets
import subprocess
import time

import paramiko
import pytest
from qemu_fixture import (
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    blank_disk,
    boot_http,  # noqa: F401 - fixtures
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
from cloudplan.provision.sshverify import PinnedHostKeyPolicy, parse_host_key, verify_node
from provision_fixtures import free_tcp_port

MAC = "52:54:00:d1:00:01"
USER = "cloudplan"
# TCG on a shared 2-core machine: writing and reading back a 3 GiB image, then a first boot with cloud-init.
DEPLOY_DEADLINE_S = 1200
BOOT_DEADLINE_S = 1200
MISMATCH_DEADLINE_S = 300

pytestmark = pytest.mark.root


# -- a checksum mismatch --------------------------------------------------------


def test_wrong_sha256_is_reported_and_leaves_nothing_bootable(deploy_ramdisk, boot_http, tmp_path):
    handler, www = boot_http, boot_http.files
    payload = small_image(tmp_path / "small.raw")
    (www / "small.raw.xz").write_bytes(lzma.compress((tmp_path / "small.raw").read_bytes(), preset=1))
    token = secrets.token_urlsafe(16)
    args = DeployArgs(image_url=boot_http.guest_url("small.raw.xz"), image_sha256="0" * 64,
                      report_url=boot_http.guest_url("report"), token=token,
                      ip=f"{GUEST_ADDRESS}/24", gateway=HOST_FROM_GUEST, mac=MAC,
                      # The spare disk is smaller: without the hints it would be chosen.
                      root_hints=RootDiskHints(serial="ROOT1", by_path="pci-0000:00:06.0"))
    root, spare = blank_disk(tmp_path / "root.raw", 128), blank_disk(tmp_path / "spare.raw", 32)
    spare.write_bytes(b"spare disk, untouched" * 1000)
    drives = ["-drive", f"file={root},if=none,id=root,format=raw",
              "-device", "virtio-blk-pci,drive=root,serial=ROOT1,addr=0x6",
              "-drive", f"file={spare},if=none,id=spare,format=raw",
              "-device", "virtio-blk-pci,drive=spare,serial=SPARE1"]
    proc = start_node(tmp_path, "mismatch", MAC, drives, ramdisk=deploy_ramdisk, cmdline=kernel_cmdline(args))
    try:
        wait_exit(proc, MISMATCH_DEADLINE_S, tmp_path / "mismatch.log")
    finally:
        stop(proc)
    console = (tmp_path / "mismatch.log").read_text(errors="replace")
    steps = [r.step for r in handler.reports]
    assert steps == ["started", "root-disk", "image-written", "failed"], (steps, tail(tmp_path / "mismatch.log"))
    failed = handler.reports[-1]
    assert failed.sha256_ok is False and failed.root_serial == "ROOT1"
    # The digest it read back is the image's own: the disk holds what was sent, just not what was promised.
    assert f"sha256 of the {64 << 20} bytes written is {sha256_file(tmp_path / 'small.raw')}" in failed.error
    assert all(r.token == token for r in handler.reports)
    assert token not in console
    # The image was written (its payload is on the disk), then its partition table and boot sector wiped.
    data = root.read_bytes()
    assert payload in data
    assert signatures(root) == ""
    assert data[: 1 << 20].count(0) == 1 << 20 and data[-(1 << 20):].count(0) == 1 << 20
    # The failure stopped the deploy before the data disks: the spare disk keeps its bytes.
    assert spare.read_bytes().startswith(b"spare disk, untouched")


# -- a deploy, then a boot from disk -----------------------------------------------


def test_deploy_writes_image_and_seed_then_the_node_boots_from_its_disk(deploy_ramdisk, os_image, boot_http, tmp_path):
    handler, www = boot_http, boot_http.files
    image = os_image
    zstd = need("zstd", "zstd")
    subprocess.run([zstd, "-q", "-T0", "-3", str(image.path), "-o", str(www / "os.raw.zst")], check=True)
    inv = guest_inventory("deploy-test", MAC, root_disk={"serial": "ROOT1"}, data_disk_serials=["DATA1"])
    node = inv.nodes[0]
    key_file, pub = ssh_key(tmp_path)
    seed = render_seed(inv, node, instance_id=f"node01-{tmp_path.name}", ssh_user=USER, ssh_public_keys=[pub],
                       phone_home_url=boot_http.guest_url("phone-home/node01"))
    build_seed_image(seed, www / "seed.img", node=node.name)
    token = secrets.token_urlsafe(16)
    args = DeployArgs(image_url=boot_http.guest_url("os.raw.zst"), image_sha256=image.sha256,
                      seed_url=boot_http.guest_url("seed.img"),
                      seed_sha256=sha256_file(www / "seed.img"),
                      report_url=boot_http.guest_url("report"), token=token,
                      ip=f"{GUEST_ADDRESS}/24", gateway=HOST_FROM_GUEST, mac=MAC, data_serials=("DATA1",))
    root, data = tmp_path / "root.qcow2", blank_disk(tmp_path / "data.raw", 256)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "6G"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(data)], check=True)  # an old filesystem, as a reused disk has
    assert "ext4" in signatures(data)
    # The data disk is the smaller one: only its planned role keeps the ramdisk off it.
    drives = ["-drive", f"file={root},if=none,id=root,format=qcow2,detect-zeroes=on",
              "-device", "virtio-blk-pci,drive=root,serial=ROOT1,bootindex=1",
              "-drive", f"file={data},if=none,id=data,format=raw", "-device", "virtio-blk-pci,drive=data,serial=DATA1"]
    started = time.monotonic()
    proc = start_node(tmp_path, "deploy", MAC, drives, ramdisk=deploy_ramdisk, cmdline=kernel_cmdline(args))
    try:
        wait_exit(proc, DEPLOY_DEADLINE_S, tmp_path / "deploy.log")
    finally:
        stop(proc)
    deployed = time.monotonic()
    steps = [r.step for r in handler.reports]
    assert steps == ["started", "root-disk", "image-written", "image-verified", "seed-written", "data-wiped",
                     "done"], (steps, [r.error for r in handler.reports], tail(tmp_path / "deploy.log"))
    done = handler.reports[-1]
    assert done.sha256_ok is True and done.root_serial == "ROOT1" and done.root_size_bytes == 6 << 30
    assert all(r.token == token for r in handler.reports)
    assert token not in (tmp_path / "deploy.log").read_text(errors="replace")
    assert signatures(data) == ""  # wiped, and left unpartitioned

    ssh_port = free_tcp_port()
    proc = start_node(tmp_path, "boot", MAC, drives, ssh_port=ssh_port)  # no ramdisk given: the disk boots itself
    try:
        report = wait_phone_home(handler, proc, tmp_path / "boot.log", BOOT_DEADLINE_S)
        booted = time.monotonic()
        assert report["path"] == "/phone-home/node01" and report["hostname"] == "node01"
        host_key = report["pub_key_ed25519"].strip()
        facts = verify_node("127.0.0.1", port=ssh_port, username=USER, key_filename=str(key_file),
                            host_key=host_key, expect=None, hostname="node01", timeout_s=60)
        assert facts.hostname == "node01"
        key_type, blob = parse_host_key(host_key, node="node01")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedHostKeyPolicy(key_type, blob))
        client.connect("127.0.0.1", port=ssh_port, username=USER, key_filename=str(key_file), timeout=60,
                       allow_agent=False, look_for_keys=False)
        try:
            _check_installed(client)
            # cloudplan's own installed-OS checks, on this real installed OS: all hold, and a wrong
            # expectation is named
            found = verify_installed(lambda cmd: ssh_run(client, cmd), inv, node)
            assert found == {"root_disk": "vda", "root_serial": "ROOT1", "empty_data_disks": ["vdb"],
                             "networks": ["provisioning"]}, found
            wrong = node.model_copy(update={"root_disk": node.root_disk.model_copy(update={"serial": "ROOT2"})})
            with pytest.raises(ProvisioningFailed, match="the root disk hint says serial ROOT2"):
                verify_installed(lambda cmd: ssh_run(client, cmd), inv, wrong)
        finally:
            client.close()
    except BaseException:
        print(tail(tmp_path / "boot.log", 120))
        raise
    finally:
        stop(proc)
    print(f"deploy ramdisk run {deployed - started:.0f} s, "
          f"first boot from disk to phone-home {booted - deployed:.0f} s")


def _check_installed(client: paramiko.SSHClient) -> None:
    # / is the image's root partition on the disk with serial ROOT1, grown past the image's 3 GiB.
    source = ssh_run(client, "findmnt -no SOURCE /").strip()
    disk = ssh_run(client, f"lsblk -no PKNAME {source}").strip()
    assert ssh_run(client, f"lsblk -dno SERIAL /dev/{disk}").strip() == "ROOT1"
    assert int(ssh_run(client, f"lsblk -bno SIZE {source}").strip()) > 4 << 30
    cmdline = ssh_run(client, "cat /proc/cmdline")
    assert "root=UUID=" in cmdline and "cloudplan." not in cmdline
    # The seed came from the root disk's own cidata partition: there is no other disk with a filesystem.
    parts = json.loads(ssh_run(client, "lsblk -J -o NAME,SERIAL,FSTYPE,LABEL,PARTLABEL,TYPE"))["blockdevices"]
    root = next(d for d in parts if d.get("serial") == "ROOT1")
    seed = [p for p in root["children"] if p.get("label") == "CIDATA"]
    assert len(seed) == 1 and seed[0]["partlabel"] == "cidata" and seed[0]["fstype"] == "vfat"
    data = [d for d in parts if d.get("serial") == "DATA1"]
    assert len(data) == 1 and not data[0].get("children") and not data[0].get("fstype")
    assert "status: done" in ssh_run(client, "cloud-init status --long || true")
    addrs = {i["ifname"]: i for i in json.loads(ssh_run(client, "ip -j addr show"))}
    assert any(a["local"] == "10.0.2.15" and a["prefixlen"] == 24 for a in addrs["prov0"]["addr_info"])
