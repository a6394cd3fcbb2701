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

import logging
from importlib import resources
from pathlib import Path

from cloudplan.errors import ImageError, LabError
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


# kernel, initrd, kernel_version: what every cached ramdisk build gives.
InstallerImage = initramfs.Built


def _fail(message: str) -> LabError:
    return LabError(f"installer image: {message}")


def build_installer(cache_dir: Path, *, force: bool = False) -> InstallerImage:
    """The installer kernel and initrd in ``cache_dir``, built unless up to date (or ``force``).

    Raises :class:`LabError` naming the
    package or command that failed.
    """
    recipe = initramfs.Recipe(label="installer image", stamp_file="installer.json", host_binaries=HOST_BINARIES,
                              modules=MODULES, required_config=REQUIRED_CONFIG, init=init_script(),
                              builder=Path(__file__), add_tree=_add_tree)
    try:
        built = initramfs.build_cached(cache_dir, recipe, force=force)
    except ImageError as err:
        raise _fail(str(err)) from err
    return built


def init_script() -> bytes:
    return resources.files("cloudplan").joinpath("data/lab/init").read_bytes()


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
