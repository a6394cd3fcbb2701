"""Turn a root filesystem tarball into a disk that boots both legacy BIOS and UEFI.

The layout is the one distribution cloud images use: GPT with a 1 MiB BIOS
boot partition (where GRUB's core image lives for legacy boot), an EFI system
partition with GRUB at the removable-media path ``EFI/BOOT/BOOTX64.EFI`` (so no
NVRAM boot entry is needed), and an ext4 root that cloud-init grows to the
disk on first boot. Both GRUB images find the root filesystem by its UUID, so
the disk boots whatever it is called on the node.

Partitions are reached through loop devices with an offset (no partition
scanning, which containers often lack); only the root filesystem is mounted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloudplan.errors import ImageError
from cloudplan.images.tools import run

log = logging.getLogger(__name__)

SECTOR = 512
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_FS_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ESP_MIB = 127
ROOT_LABEL = "cloudroot"
# Modules built into the GRUB images: enough to find the root by UUID and boot Linux
# without reading further modules (the ESP holds no module directory).
GRUB_COMMON = ("part_gpt", "part_msdos", "ext2", "search", "search_fs_uuid", "normal", "configfile", "linux",
               "echo", "test", "gzio", "ls", "cat", "sleep", "serial", "terminal")
GRUB_BIOS = ("biosdisk",) + GRUB_COMMON
GRUB_EFI = ("fat", "efi_gop", "efi_uga", "all_video") + GRUB_COMMON
KERNEL_CMDLINE = "ro console=tty0 console=ttyS0,115200n8"


@dataclass(frozen=True)
class Partition:
    number: int
    start_sector: int
    sectors: int

    @property
    def offset(self) -> int:
        return self.start_sector * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR


def partition(disk: Path, size_bytes: int) -> dict[str, Partition]:
    """Create the sparse disk file and its GPT; returns the partitions by role."""
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as fh:
        fh.truncate(size_bytes)
    script = (f"label: gpt\n"
              f"start=2048, size=2048, type={BIOS_BOOT_TYPE}, name=bios\n"
              f"size={ESP_MIB}MiB, type={ESP_TYPE}, name=esp\n"
              f"type={LINUX_FS_TYPE}, name=root\n")
    run(["sfdisk", "--quiet", str(disk)], step="partition the disk", timeout=60, input_text=script)
    table = json.loads(run(["sfdisk", "--json", str(disk)], step="read the partition table", timeout=60))
    parts = table["partitiontable"]["partitions"]
    roles = ("bios", "esp", "root")
    return {role: Partition(i + 1, int(p["start"]), int(p["size"])) for i, (role, p) in enumerate(zip(roles, parts))}


@contextlib.contextmanager
def loop(disk: Path, part: Partition) -> Iterator[str]:
    """A loop device over one partition of ``disk``, detached afterwards."""
    dev = run(["losetup", "--find", "--show", "--offset", str(part.offset), "--sizelimit", str(part.size),
               str(disk)], step=f"attach partition {part.number}", timeout=60).strip()
    try:
        yield dev
    finally:
        run(["losetup", "--detach", dev], step=f"detach {dev}", timeout=60)


@contextlib.contextmanager
def mounted(dev: str, target: Path) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", dev, str(target)], step=f"mount {dev}", timeout=60)
    try:
        yield target
    finally:
        run(["umount", str(target)], step=f"unmount {target}", timeout=120)


def kernel_version(root: Path) -> str:
    kernels = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError("the root filesystem has no /boot/vmlinuz-*: linux-image-amd64 is not installed")
    if not (root / "boot" / f"initrd.img-{kernels[-1]}").is_file():
        raise ImageError(f"the root filesystem has no /boot/initrd.img-{kernels[-1]}")
    return kernels[-1]


def grub_config(root_uuid: str, version: str) -> str:
    # GRUB on the serial console too: a BMC's serial-over-LAN (and the tests) see the boot menu.
    return (f"# Written by cloudplan's image build.\nserial --unit=0 --speed=115200\n"
            f"terminal_input console serial\nterminal_output console serial\nset timeout=1\nset default=0\n"
            f"menuentry 'Debian GNU/Linux ({version})' {{\n"
            f"  search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"  linux /boot/vmlinuz-{version} root=UUID={root_uuid} {KERNEL_CMDLINE}\n"
            f"  initrd /boot/initrd.img-{version}\n}}\n")


def early_config(root_uuid: str) -> str:
    """Embedded in both GRUB images: find the root filesystem, then read its grub.cfg."""
    return (f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            "set prefix=($root)/boot/grub\nconfigfile ($root)/boot/grub/grub.cfg\n")


def install_bios(disk: Path, root_dev: str, root: Path, early: Path) -> None:
    """GRUB's boot sector in the MBR and its core image in the BIOS boot partition."""
    grub_dir = root / "boot" / "grub" / "i386-pc"
    grub_dir.mkdir(parents=True, exist_ok=True)
    run(["grub-mkimage", "-O", "i386-pc", "-o", str(grub_dir / "core.img"), "-c", str(early), "-p", "/boot/grub",
         *GRUB_BIOS], step="build GRUB's BIOS core image", timeout=120)
    (grub_dir / "boot.img").write_bytes(Path("/usr/lib/grub/i386-pc/boot.img").read_bytes())
    # grub-bios-setup maps the directory's device (the mounted root) and the target disk to GRUB drives.
    devmap = grub_dir / "device.map"
    devmap.write_text(f"(hd0) {disk}\n(hd1) {root_dev}\n", encoding="ascii")
    try:
        run(["grub-bios-setup", "-d", str(grub_dir), "-m", str(devmap), str(disk)],
            step="install GRUB for legacy BIOS", timeout=120)
    finally:
        devmap.unlink(missing_ok=True)


def install_efi(disk: Path, esp: Partition, workdir: Path, early: Path) -> None:
    """A FAT32 EFI system partition holding GRUB at the removable-media path, written without mounting."""
    efi = workdir / "BOOTX64.EFI"
    run(["grub-mkimage", "-O", "x86_64-efi", "-o", str(efi), "-c", str(early), "-p", "/boot/grub", *GRUB_EFI],
        step="build GRUB's EFI image", timeout=120)
    with loop(disk, esp) as dev:
        run(["mkfs.vfat", "-F", "32", "-n", "ESP", dev], step="format the EFI system partition", timeout=120)
        target = dev
        run(["mmd", "-i", target, "::/EFI", "::/EFI/BOOT"], step="populate the EFI system partition", timeout=60)
        run(["mcopy", "-i", target, str(efi), "::/EFI/BOOT/BOOTX64.EFI"], step="populate the EFI system partition",
            timeout=60)


def assemble(disk: Path, rootfs_tar: Path, size_bytes: int, workdir: Path, configure) -> tuple[str, str]:
    """Partition, fill the root from ``rootfs_tar``, call ``configure(root_dir, root_uuid)``,
    install both bootloaders. Returns (root filesystem UUID, kernel version)."""
    parts = partition(disk, size_bytes)
    root_uuid = str(uuidlib.uuid4())
    early = workdir / "early.cfg"
    early.write_text(early_config(root_uuid), encoding="ascii")
    with loop(disk, parts["root"]) as root_dev:
        run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-U", root_uuid, root_dev], step="format the root filesystem",
            timeout=300)
        with mounted(root_dev, workdir / "root") as root:
            run(["tar", "--extract", "--file", str(rootfs_tar), "--directory", str(root), "--numeric-owner",
                 "--xattrs", "--xattrs-include=*"], step="unpack the root filesystem", timeout=1800)
            version = kernel_version(root)
            configure(root, root_uuid)
            (root / "boot" / "grub").mkdir(parents=True, exist_ok=True)
            (root / "boot" / "grub" / "grub.cfg").write_text(grub_config(root_uuid, version), encoding="ascii")
            install_bios(disk, root_dev, root, early)
    install_efi(disk, parts["esp"], workdir, early)
    log.info("disk %s: root %s, kernel %s", disk, root_uuid, version)
    return root_uuid, version
