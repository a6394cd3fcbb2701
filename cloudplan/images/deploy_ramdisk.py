"""The deploy ramdisk: a Debian kernel and a busybox initramfs that installs a node.

A node network-boots it (iPXE, or QEMU's ``-kernel/-initrd/-append``); its
``/init`` (``cloudplan/data/deploy/init``) streams the OS image onto the root
disk, checks it, adds the NoCloud seed and wipes (or securely erases) the data
disks, as the kernel command line written by
:func:`cloudplan.provision.deploy.cmdline.kernel_cmdline` says. Built like the
lab installer (:mod:`cloudplan.images.initramfs`): the kernel and busybox-static
from Debian packages, ``sfdisk``, ``wipefs``, ``lsblk``, ``zstd`` (busybox has
gunzip and unxz, not zstd), coreutils' ``dd``, ``nvme`` (nvme-cli),
``hdparm`` and ``mdadm`` from the host with their libraries. Outputs are cached with a stamp of every input.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from cloudplan.images import initramfs

log = logging.getLogger(__name__)

# Host binaries copied into the ramdisk, with the Debian package that provides each.
# coreutils' dd, ahead of busybox's in PATH: O_DIRECT, iflag=fullblock/count_bytes, and a byte count.
# nvme and hdparm: the drives' own secure erase (NVMe Format NVM, ATA Security Erase) when asked for;
# mdadm: a root mirrored over two disks (software RAID1).
HOST_BINARIES = (("sfdisk", "fdisk"), ("wipefs", "util-linux"), ("lsblk", "util-linux"), ("zstd", "zstd"),
                 ("dd", "coreutils"), ("nvme", "nvme-cli"), ("hdparm", "hdparm"), ("mdadm", "mdadm"))
# Disk controllers and NICs of QEMU machines (virtio, e1000) and common servers (AHCI, NVMe,
# Intel 1/10/40 GbE); their dependencies come from each module's modinfo.
MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "e1000", "e1000e", "igb", "ixgbe", "i40e",
           "ahci", "nvme", "sd_mod", "md_mod", "raid1")
# /init needs these before any insmod, so they must be built in.
REQUIRED_CONFIG = ("BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "PACKET", "UNIX", "INET", "SERIAL_8250_CONSOLE")
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/share/udhcpc", "lib", "lib64", "etc", "dev", "proc", "sys",
        "run", "tmp", "mnt")
MODULE_LIST = "etc/deploy-modules"


# kernel, initrd, kernel_version: what every cached ramdisk build gives.
DeployRamdisk = initramfs.Built


def init_script() -> bytes:
    return resources.files("cloudplan").joinpath("data/deploy/init").read_bytes()


def build_deploy_ramdisk(cache_dir: str | Path, *, force: bool = False) -> DeployRamdisk:
    """The deploy kernel and initrd in ``cache_dir``, built unless up to date (or ``force``).

    Raises :class:`ImageError` naming the package or command that failed.
    """
    recipe = initramfs.Recipe(label="deploy ramdisk", stamp_file="deploy-ramdisk.json", host_binaries=HOST_BINARIES,
                              modules=MODULES, required_config=REQUIRED_CONFIG, init=init_script(),
                              builder=Path(__file__), add_tree=_add_tree)
    built = initramfs.build_cached(cache_dir, recipe, force=force)
    return built


def _add_tree(archive: initramfs.Cpio, busybox: Path, host_files: list[Path], version: str,
              modules: list[tuple[str, bytes]], init: bytes) -> None:
    for d in DIRS:
        archive.dir(d)
    archive.symlink("var/run", "../run")
    # The kernel opens /dev/console for /init before anything mounts devtmpfs.
    archive.chardev("dev/console", 0o600, 5, 1)
    archive.chardev("dev/null", 0o666, 1, 3)
    initramfs.add_busybox(archive, busybox)
    initramfs.add_host_files(archive, host_files)
    initramfs.add_modules(archive, version, modules, MODULE_LIST)
    archive.file("etc/passwd", b"root:*:0:0:root:/root:/bin/sh\n")
    archive.file("etc/group", b"root:x:0:\n")
    archive.file("usr/share/udhcpc/default.script", initramfs.UDHCPC_SCRIPT.encode(), 0o755)
    archive.file("init", init, 0o755)
