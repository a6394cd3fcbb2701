"""The deploy ramdisk: a Debian kernel and a busybox initramfs that installs a node.

A node network-boots it (iPXE, or QEMU's ``-kernel/-initrd/-append``); its
``/init`` (``cloudplan/data/deploy/init``) streams the OS image onto the root
disk, checks it, adds the NoCloud seed and wipes the data disks, as the kernel
command line written by :func:`cloudplan.provision.deploy.cmdline.kernel_cmdline`
says. Built like the lab installer (:mod:`cloudplan.images.initramfs`): the
kernel and busybox-static from Debian packages, ``sfdisk``, ``wipefs``,
``lsblk``, ``zstd`` (busybox has gunzip and unxz, not zstd) and coreutils'
``dd`` from the host with their libraries. Outputs are cached with a stamp of every input.
"""

from __future__ import annotations

import fcntl
import json
import logging
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cloudplan.images import initramfs

log = logging.getLogger(__name__)

# Host binaries copied into the ramdisk, with the Debian package that provides each.
# coreutils' dd, ahead of busybox's in PATH: O_DIRECT, iflag=fullblock/count_bytes, and a byte count.
HOST_BINARIES = (("sfdisk", "fdisk"), ("wipefs", "util-linux"), ("lsblk", "util-linux"), ("zstd", "zstd"),
                 ("dd", "coreutils"))
# Disk controllers and NICs of QEMU machines (virtio, e1000) and common servers (AHCI, NVMe,
# Intel 1/10/40 GbE); their dependencies come from each module's modinfo.
MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "e1000", "e1000e", "igb", "ixgbe", "i40e",
           "ahci", "nvme", "sd_mod")
# /init needs these before any insmod, so they must be built in.
REQUIRED_CONFIG = ("BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "PACKET", "UNIX", "INET", "SERIAL_8250_CONSOLE")
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/share/udhcpc", "lib", "lib64", "etc", "dev", "proc", "sys",
        "run", "tmp", "mnt")
MODULE_LIST = "etc/deploy-modules"


@dataclass(frozen=True)
class DeployRamdisk:
    kernel: Path
    initrd: Path
    kernel_version: str


def init_script() -> bytes:
    return resources.files("cloudplan").joinpath("data/deploy/init").read_bytes()


def build_deploy_ramdisk(cache_dir: str | Path, *, force: bool = False) -> DeployRamdisk:
    """The deploy kernel and initrd in ``cache_dir``, built unless up to date (or ``force``).

    Raises :class:`ImageError` naming the package or command that failed.
    """
    cache = Path(cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds into one cache would overwrite each other's files
        return initramfs.with_fresh_lists(lambda: _build(cache, force))


def _stamp(packages: list[initramfs.Package], host_files: list[Path], init: bytes) -> dict:
    """Everything the ramdisk is made from; any change means a rebuild."""
    return {"packages": {p.name: p.version for p in packages},
            "host_files": {str(p): initramfs.digest(p.read_bytes()) for p in host_files},
            "init": initramfs.digest(init), "modules": list(MODULES),
            "builder": initramfs.digest(Path(__file__).read_bytes()),
            "helpers": initramfs.digest(Path(initramfs.__file__).read_bytes())}


def _build(cache: Path, force: bool) -> DeployRamdisk:
    packages = initramfs.kernel_and_busybox()
    host_files = initramfs.host_files(HOST_BINARIES)
    init = init_script()
    stamp = _stamp(packages, host_files, init)
    kernel, initrd, stamp_file = cache / "vmlinuz", cache / "initrd.img", cache / "deploy-ramdisk.json"
    cached = initramfs.read_stamp(stamp_file)
    if not force and cached.get("inputs") == stamp and kernel.is_file() and initrd.is_file():
        log.info("deploy ramdisk is up to date in %s", cache)
        return DeployRamdisk(kernel, initrd, cached["kernel_version"])
    debs = [initramfs.download(p, cache / "debs") for p in packages]
    for old in set((cache / "debs").glob("*.deb")) - set(debs):
        old.unlink()  # superseded versions: a kernel package is ~70 MB
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        kroot = initramfs.unpack(debs[0], Path(tmp) / "kernel")
        broot = initramfs.unpack(debs[1], Path(tmp) / "busybox")
        version, vmlinuz = initramfs.kernel_of(kroot, debs[0], REQUIRED_CONFIG)
        modules = initramfs.load_order(kroot / "lib" / "modules" / version, MODULES)
        archive = initramfs.Cpio()
        _add_tree(archive, broot / "bin" / "busybox", host_files, version, modules, init)
        initramfs.replace_file(initrd, archive.gzipped())
        initramfs.replace_file(kernel, vmlinuz.read_bytes())
    initramfs.replace_file(stamp_file, json.dumps({"inputs": stamp, "kernel_version": version}, indent=1).encode())
    log.info("deploy ramdisk built in %s: kernel %s, initrd %d KiB", cache, version, initrd.stat().st_size // 1024)
    return DeployRamdisk(kernel, initrd, version)


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
