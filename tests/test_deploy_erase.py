"""Secure erase of the data disks by the deploy ramdisk, on QEMU's own disk controllers.

QEMU (TCG, user-mode networking, as in ``test_deploy_ramdisk.py``) boots the
deploy ramdisk with ``cloudplan.data_erase=secure``. Its emulated NVMe
controller implements Format NVM: the ramdisk's ``nvme format --ses=1`` makes
the controller zero the namespace itself, which the backing file shows: every
byte of the old pattern gone and, since the drive discards (``discard=unmap``),
the file's blocks deallocated, which writes of zeros from the guest would not
do. QEMU records the Format NVM admin command in its trace. What QEMU does not
check is the Secure Erase Settings field: it zeroes on any format, so these
tests prove the command reached the device and erased it, not that the SES bit
was 1 (the ramdisk's console line and report say which it sent).

A virtio disk has no erase command, and QEMU's AHCI disks no ATA security
feature set: asked for a secure erase, the ramdisk fails before writing
anything, naming each disk and why.

No emulator here implements ATA security, so the ATA path is checked in part:
the ramdisk's own functions, run by busybox sh on this host, read the
Security section of ``hdparm -I`` (text in the layout hdparm prints for a
drive in each ATA security state) into the erase to issue or the reason to
refuse. The erase commands themselves (``--security-set-pass``,
``--security-erase[-enhanced]``) have not run against a drive.
"""

from __future__ import annotations

import lzma
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from qemu_fixture import (
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    blank_disk,
    boot_http,  # noqa: F401 - fixtures
    deploy_ramdisk,  # noqa: F401
    sha256_file,
    small_image,
    start_node,
    stop,
    tail,
    wait_exit,
)

from cloudplan.images.deploy_ramdisk import init_script
from cloudplan.inventory import DataDiskErase
from cloudplan.provision.deploy.cmdline import DeployArgs, kernel_cmdline

MAC = "52:54:00:d1:00:02"
# TCG on a shared 2-core machine: a ramdisk boot, a 64 MiB image written and read back.
DEADLINE_S = 300
PATTERN = b"an old tenant's data, still readable " * 28  # 1036 bytes: never aligned to a sector
DATA_MIB = 64


def _patterned(path: Path) -> Path:
    """A data disk full of old data (every block written, so allocated in its file)."""
    chunk = PATTERN * ((1 << 20) // len(PATTERN) + 1)
    with open(path, "wb") as fh:
        for i in range(DATA_MIB):
            fh.write(chunk[i % len(PATTERN):][: 1 << 20])
    return path


def _only_zeros(path: Path) -> bool:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            if block.count(0) != len(block):
                return False
    return True


def _allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _args(boot_http, www: Path, tmp: Path, **disks) -> DeployArgs:
    small_image(tmp / "small.raw")
    (www / "small.raw.xz").write_bytes(lzma.compress((tmp / "small.raw").read_bytes(), preset=1))
    return DeployArgs(image_url=boot_http.guest_url("small.raw.xz"), image_sha256=sha256_file(tmp / "small.raw"),
                      report_url=boot_http.guest_url("report"), token=secrets.token_urlsafe(16),
                      ip=f"{GUEST_ADDRESS}/24", gateway=HOST_FROM_GUEST, mac=MAC,
                      data_erase=DataDiskErase.secure, **disks)


def _run(deploy_ramdisk, tmp: Path, name: str, drives: list[str], args: DeployArgs, *extra: str) -> float:
    started = time.monotonic()
    proc = start_node(tmp, name, MAC, drives, ramdisk=deploy_ramdisk, cmdline=kernel_cmdline(args), extra=extra)
    try:
        wait_exit(proc, DEADLINE_S, tmp / f"{name}.log")
    finally:
        stop(proc)
    return time.monotonic() - started


@pytest.mark.root
def test_secure_erase_has_the_nvme_data_disk_format_itself(deploy_ramdisk, boot_http, tmp_path):
    args = _args(boot_http, boot_http.files, tmp_path, data_serials=("NVDATA1",))
    root, data = blank_disk(tmp_path / "root.raw", 128), _patterned(tmp_path / "data.raw")
    assert _allocated_bytes(data) >= DATA_MIB << 20
    drives = ["-drive", f"file={root},if=none,id=root,format=raw",
              "-device", "virtio-blk-pci,drive=root,serial=ROOT1",
              "-drive", f"file={data},if=none,id=data,format=raw,discard=unmap",
              "-device", "nvme,drive=data,serial=NVDATA1"]
    trace = tmp_path / "nvme.trace"
    took = _run(deploy_ramdisk, tmp_path, "erase", drives, args,
                "-trace", "enable=pci_nvme_admin_cmd", "-D", str(trace))
    log = tmp_path / "erase.log"
    reports = boot_http.reports
    assert [r.step for r in reports] == ["started", "root-disk", "image-written", "image-verified", "data-wiped",
                                         "done"], ([r.error for r in reports], tail(log))
    done = reports[-1]
    assert done.root_serial == "ROOT1" and done.sha256_ok is True
    # QEMU's controller offers Format NVM without cryptographic erase (FNA bit 2 clear): a user-data erase.
    assert done.data_disks == (("nvme0n1", "nvme-format-user-data-erase"),), done
    console = log.read_text(errors="replace")
    assert "data disk nvme0n1: nvme-format-user-data-erase (NVMe Format NVM)" in console
    # The controller was sent Format NVM, and it erased the namespace itself: not one byte of the old data
    # is left, and the backing file's blocks were given back (a guest writing zeros would have kept them).
    assert "FORMAT_NVM" in trace.read_text(), trace.read_text()[-2000:]
    assert PATTERN[:64] not in data.read_bytes()
    assert _only_zeros(data)
    assert _allocated_bytes(data) < 1 << 20, _allocated_bytes(data)
    print(f"secure-erase deploy (NVMe data disk, {DATA_MIB} MiB) {took:.0f} s")


@pytest.mark.root
def test_secure_erase_fails_naming_each_disk_that_offers_none(deploy_ramdisk, boot_http, tmp_path):
    args = _args(boot_http, boot_http.files, tmp_path, data_serials=("DATA1", "SATA1"))
    root = blank_disk(tmp_path / "root.raw", 128)
    virtio, sata = _patterned(tmp_path / "virtio.raw"), _patterned(tmp_path / "sata.raw")
    drives = ["-drive", f"file={root},if=none,id=root,format=raw",
              "-device", "virtio-blk-pci,drive=root,serial=ROOT1",
              "-drive", f"file={virtio},if=none,id=virtio,format=raw",
              "-device", "virtio-blk-pci,drive=virtio,serial=DATA1",
              "-device", "ahci,id=ahci",
              "-drive", f"file={sata},if=none,id=sata,format=raw",
              "-device", "ide-hd,drive=sata,bus=ahci.0,serial=SATA1"]
    took = _run(deploy_ramdisk, tmp_path, "refuse", drives, args)
    reports = boot_http.reports
    assert [r.step for r in reports] == ["started", "root-disk", "failed"], ([r.error for r in reports],
                                                                           tail(tmp_path / "refuse.log"))
    error = reports[-1].error
    assert error.startswith("data-disks: secure erase asked for, but not every data disk offers one: "), error
    assert "vdb (serial DATA1): a virtio disk has no secure erase command" in error, error
    assert "sda (serial SATA1): the drive " in error, error
    # Nothing was written: the root disk is still blank, the data disks keep their old bytes (no wipefs instead).
    assert _only_zeros(root)
    for disk in (virtio, sata):
        assert disk.read_bytes()[: len(PATTERN)] == PATTERN
    print(f"secure-erase refusal (virtio + AHCI data disks) {took:.0f} s; reason: {error}")


# -- the ATA states, read by the ramdisk's own functions ----------------------------

# hdparm -I's Security section: "\t%s\t%s" per state bit, "not" or nothing before each name.
def _security(supported=True, enabled=False, locked=False, frozen=False, enhanced=True) -> str:
    bits = [("supported", supported), ("enabled", enabled), ("locked", locked), ("frozen", frozen),
            ("expired: security count", False), ("supported: enhanced erase", enhanced)]
    lines = ["Security: ", "\tMaster password revision code = 65534"]
    lines += [f"\t{'' if on else 'not'}\t{name}" for name, on in bits]
    lines += ["\t2min for SECURITY ERASE UNIT. 8min for ENHANCED SECURITY ERASE UNIT.",
              "Logical Unit WWN Device Identifier: 5002538e40a1b2c3"]
    return "\n".join(["/dev/sda:", "", "ATA device, with non-removable media", "\tModel Number:       "
                      "SAMSUNG MZ7LH480HAHQ", *lines, "Checksum: correct", ""])


def _ata_method(tmp: Path, identify: str | None) -> str:
    """The init's ata_erase_method for a drive whose ``hdparm -I`` prints ``identify`` (None: hdparm fails)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is missing: apt-get install busybox")
    functions = init_script().decode().split("# -- main ---")[0]
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    (tmp / "hdparm-I.txt").write_text(identify or "")
    hdparm = bindir / "hdparm"
    hdparm.write_text('#!/bin/sh\n[ -s "$IDENTIFY" ] || { echo "/dev/sda: No such device" >&2; exit 2; }\n'
                      'cat "$IDENTIFY"\n')
    hdparm.chmod(0o755)
    # The init sets its own PATH: the stand-in hdparm goes before it (the host's own is never run).
    script = functions + '\nPATH=$BIN:$PATH S=$WORK\nata_erase_method sda\n'
    done = subprocess.run([busybox, "sh", "-c", script], capture_output=True, text=True, check=True,
                          env={"BIN": str(bindir), "WORK": str(tmp), "IDENTIFY": str(tmp / "hdparm-I.txt")})
    return done.stdout.strip()


@pytest.mark.parametrize(("state", "method"), [
    ({}, "ata-enhanced-security-erase"),
    ({"enhanced": False}, "ata-security-erase"),
    ({"frozen": True}, "!the drive's security is frozen (the firmware froze it at boot)"),
    ({"enabled": True, "locked": True}, "!the drive is locked by a security password"),
    ({"enabled": True}, "!the drive already has a security password set"),
    ({"supported": False, "enhanced": False}, "!the drive does not support ATA Security Erase"),
])
def test_the_ramdisk_reads_the_ata_security_state(tmp_path, state, method):
    assert _ata_method(tmp_path, _security(**state)) == method


def test_the_ramdisk_refuses_a_drive_without_security_or_that_hdparm_cannot_read(tmp_path):
    no_section = "\n".join(line for line in _security().splitlines() if not line.startswith(("Security", "\t")))
    assert _ata_method(tmp_path, no_section) == ("!the drive reports no ATA security feature set "
                                                 "(hdparm -I shows no Security section)")
    assert _ata_method(tmp_path, None) == "!hdparm -I failed: /dev/sda: No such device"
