"""The lab's installer image: a Debian kernel and a busybox initramfs.

Lab machines network-boot it instead of a real installer. Its ``/init``
(``cloudplan/data/lab/init``) plays cloud-init: it reads the NoCloud seed on the
kernel command line, sets the hostname and root's authorized keys, starts
dropbear and phones the SSH host key home; SSH verification then finds the
facts it reads. Nothing is installed on the host but ``dropbear-bin``: the
kernel (the package ``linux-image-amd64`` depends on) and ``busybox-static``
are ``apt-get download``-ed and unpacked with ``dpkg-deb -x``; ``dropbear``,
``dropbearkey`` and ``lsblk`` come from the host with the libraries ``ldd``
names. The newc cpio is written in Python (no ``cpio`` binary; device nodes
need no privileges). Outputs are cached with a stamp of every input.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cloudplan.errors import ImageError, LabError
from cloudplan.io import write_bytes_atomic
from cloudplan.images import initramfs

# The generic parts live in cloudplan.images.initramfs (the deploy ramdisk is built from them too);
# the names below stay importable from here.
from cloudplan.images.initramfs import (  # noqa: F401
    BUSYBOX_PACKAGE,
    KERNEL_META_PACKAGE,
    UDHCPC_SCRIPT,
    Package,
    busybox_applets,
    load_order,
    module_bytes,
    module_depends,
    module_name,
    shared_libraries,
)

log = logging.getLogger(__name__)

# Host binaries copied into the image, with the package that provides each.
HOST_BINARIES = (("dropbear", "dropbear-bin"), ("dropbearkey", "dropbear-bin"), ("lsblk", "util-linux"))
# e1000: QEMU's ``-device e1000`` NIC; virtio_pci and virtio_blk: an ``if=virtio`` data disk.
# Their dependencies (virtio, virtio_ring, virtio_pci_*_dev) are found from each module's modinfo.
MODULES = ("e1000", "virtio_pci", "virtio_blk")
# /init cannot load these as modules (it needs them before any insmod), so they must be built in.
REQUIRED_CONFIG = ("BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "PACKET", "UNIX", "INET", "SERIAL_8250_CONSOLE")
ETC_FILES = {
    # '*' is no password at all: dropbear runs with password logins off anyway.
    "etc/passwd": "root:*:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    # dropbear refuses users whose shell is not listed here.
    "etc/shells": "/bin/sh\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    "etc/hosts": "127.0.0.1 localhost\n",
}
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/share/udhcpc", "lib", "lib64", "etc/dropbear",
        "dev", "proc", "sys", "run", "mnt", "var/log")


@dataclass(frozen=True)
class InstallerImage:
    kernel: Path
    initrd: Path
    kernel_version: str


def _fail(message: str) -> LabError:
    return LabError(f"installer image: {message}")


def build_installer(cache_dir: Path, *, force: bool = False) -> InstallerImage:
    """The installer kernel and initrd in ``cache_dir``, built unless up to date (or ``force``).

    Raises :class:`LabError` naming the
    package or command that failed.
    """
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds into one cache would overwrite each other's files
        try:
            return initramfs.with_fresh_lists(lambda: _build(cache_dir, force))
        except ImageError as err:
            raise _fail(str(err)) from err


def _build(cache_dir: Path, force: bool) -> InstallerImage:
    packages = initramfs.kernel_and_busybox()
    host_files = initramfs.host_files(HOST_BINARIES)
    init = init_script()
    stamp = _stamp(packages, host_files, init)
    kernel, initrd, stamp_file = cache_dir / "vmlinuz", cache_dir / "initrd.img", cache_dir / "installer.json"
    cached = _read_stamp(stamp_file)
    if not force and cached.get("inputs") == stamp and kernel.is_file() and initrd.is_file():
        log.info("installer image is up to date in %s", cache_dir)
        return InstallerImage(kernel, initrd, cached["kernel_version"])
    debs = [initramfs.download(p, cache_dir / "debs") for p in packages]
    for old in set((cache_dir / "debs").glob("*.deb")) - set(debs):
        old.unlink()  # superseded versions: a kernel package is ~70 MB
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="build-") as tmp:
        kroot = initramfs.unpack(debs[0], Path(tmp) / "kernel")
        broot = initramfs.unpack(debs[1], Path(tmp) / "busybox")
        version, vmlinuz = initramfs.kernel_of(kroot, debs[0], REQUIRED_CONFIG)
        modules = load_order(kroot / "lib" / "modules" / version, MODULES)
        archive = initramfs.Cpio()
        _add_tree(archive, broot / "bin" / "busybox", host_files, version, modules, init)
        _replace(initrd, archive.gzipped())
        _replace(kernel, vmlinuz.read_bytes())
    _replace(stamp_file, json.dumps({"inputs": stamp, "kernel_version": version}, indent=1).encode())
    log.info("installer image built in %s: kernel %s, initrd %d KiB", cache_dir, version, initrd.stat().st_size // 1024)
    return InstallerImage(kernel, initrd, version)


def init_script() -> bytes:
    return resources.files("cloudplan").joinpath("data/lab/init").read_bytes()


# -- cache stamp -----------------------------------------------------------------


def _stamp(packages: list[Package], host_files: list[Path], init: bytes) -> dict:
    """Everything the image is made from; any change means a rebuild."""
    return {
        "packages": {p.name: p.version for p in packages},
        "host_files": {str(p): initramfs.digest(p.read_bytes()) for p in host_files},
        "init": initramfs.digest(init),
        # This module decides the layout: a change to it must rebuild too.
        "builder": initramfs.digest(Path(__file__).read_bytes()),
        "helpers": initramfs.digest(Path(initramfs.__file__).read_bytes()),
        "modules": list(MODULES),
    }


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _replace(path: Path, data: bytes) -> None:
    # Written beside and renamed, so a reader never sees half a file.
    write_bytes_atomic(path, data)


# -- the initramfs ---------------------------------------------------------------


def _add_tree(archive: initramfs.Cpio, busybox: Path, host_files: list[Path], version: str,
              modules: list[tuple[str, bytes]], init: bytes) -> None:
    for d in DIRS:
        archive.dir(d)
    archive.dir("tmp", 0o1777)
    archive.dir("root", 0o700)  # dropbear refuses keys below a group- or world-writable home
    archive.dir("root/.ssh", 0o700)
    archive.symlink("var/run", "../run")
    # The kernel opens /dev/console for /init before anything mounts devtmpfs.
    archive.chardev("dev/console", 0o600, 5, 1)
    archive.chardev("dev/null", 0o666, 1, 3)
    initramfs.add_busybox(archive, busybox)
    initramfs.add_host_files(archive, host_files)
    initramfs.add_modules(archive, version, modules, "etc/installer-modules")
    for path, text in ETC_FILES.items():
        archive.file(path, text.encode())
    archive.file("usr/share/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
    archive.file("init", init, 0o755)
