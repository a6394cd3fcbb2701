"""The deploy ramdisk, booted for real: a wrong image must leave nothing bootable.

QEMU (TCG, user-mode networking: the guest reaches the host's loopback at
10.0.2.2) boots cloudplan's deploy ramdisk by direct kernel boot, standing in
for iPXE. A loopback HTTP server serves the image and records the ramdisk's
reports. A wrong sha256 must end in a failure report and a root disk with no
partition table or boot sector left. The real OS image written, its seed beside
it, the data disk wiped and the installed OS booted from its disk, checked by
cloudplan's installed-OS checks, is ``tests/test_deploy_mirror.py``'s second test
(on a mirrored root, the deploy the suite affords once) and the lab's end to end.
"""

from __future__ import annotations

import lzma
import secrets

import pytest
from qemu_fixture import (
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    blank_disk,
    boot_http,  # noqa: F401 - fixtures
    deploy_ramdisk,  # noqa: F401
    sha256_file,
    signatures,
    small_image,
    start_node,
    stop,
    tail,
    wait_exit,
)

from cloudplan.provision.deploy.cmdline import DeployArgs, kernel_cmdline
from cloudplan.provision.deploy.rootdisk import RootDiskHints

MAC = "52:54:00:d1:00:01"
USER = "cloudplan"
# TCG on a shared 2-core machine: writing and reading back the 2 GiB image, then a first boot with cloud-init.
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
