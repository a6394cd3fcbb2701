"""A deployable Debian image from Debian's own packages: mmdebstrap, then a two-way bootable disk.

mmdebstrap rather than diskimage-builder: it builds the root filesystem from the
host's apt sources alone (nothing but the Debian mirror is reached), in one
command, with no chroot element scripts to maintain, and its output is a plain
tarball that can be cached; the disk around it (:mod:`cloudplan.images.disk`)
is a few well-known tools (sfdisk, mkfs, GRUB's own image and boot-sector
tools). The image is generic: everything node-specific (hostname, users and
keys, networks) comes from the NoCloud seed the deploy step writes beside it,
and host keys and the machine id are removed so every node makes its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloudplan.errors import ImageError
from cloudplan.images import disk as disklib
from cloudplan.images.tools import need_root, run

log = logging.getLogger(__name__)

DEFAULT_SUITE = "bookworm"
SUITES = ("bookworm", "trixie")
# What a node needs to be handed to Kolla-Ansible and cephadm: cloud-init (NoCloud seed,
# network-config v2 through netplan), sshd, python3 for Ansible, sudo, growpart to fill
# the disk, time sync, and the kernel with its initramfs; mdadm, whose initramfs hook assembles
# a root mirrored by the deploy ramdisk (software RAID1 over two root disks).
IMAGE_PACKAGES = ("linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "kmod", "cloud-init",
                  "cloud-guest-utils", "openssh-server", "python3", "sudo", "netplan.io", "systemd-resolved",
                  "systemd-timesyncd", "iproute2", "netbase", "ca-certificates", "lvm2", "mdadm")
# The root filesystem holds about 0.9 GB: 2 GiB leaves a GiB free for the first boot, and every
# deploy writes and reads back each byte of the raw image (cloud-init grows the root to the disk).
DEFAULT_SIZE_GIB = 2
# Only the NoCloud seed is ever offered; probing EC2, OpenStack and the rest costs minutes of timeouts.
# The image carries no locale data (minbase): C.UTF-8, built into glibc, is what cloud-init
# finds set, so its locale module has nothing to generate.
CLOUD_CFG = "# Written by cloudplan's image build.\ndatasource_list: [NoCloud, None]\nlocale: C.UTF-8\n"


@dataclass(frozen=True)
class OSImage:
    path: Path
    sha256: str
    suite: str
    kernel_version: str
    size_bytes: int


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _inputs(suite: str, packages: tuple[str, ...], size_gib: int) -> dict:
    mm = run(["mmdebstrap", "--version"], step="check mmdebstrap", timeout=60).strip()
    return {"suite": suite, "packages": sorted(packages), "size_gib": size_gib, "mmdebstrap": mm,
            "grub_setup": disklib.GRUB_BIOS + disklib.GRUB_EFI, "cmdline": disklib.KERNEL_CMDLINE,
            "cloud_cfg": CLOUD_CFG, "format": 2}


def rootfs(cache_dir: Path, suite: str, packages: tuple[str, ...]) -> Path:
    """The root filesystem tarball, built by mmdebstrap unless cached for these inputs."""
    key = hashlib.sha256(json.dumps([suite, sorted(packages)]).encode()).hexdigest()[:16]
    tar = cache_dir / f"rootfs-{suite}-{key}.tar"
    if tar.is_file():
        return tar
    tmp = tar.with_name(tar.name + ".part")
    log.info("building the %s root filesystem with mmdebstrap (a few minutes)", suite)
    run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", f"--include={','.join(packages)}",
         suite, str(tmp)], step=f"mmdebstrap {suite}", timeout=3600)
    os.replace(tmp, tar)
    return tar


def _configure(root: Path, root_uuid: str) -> None:
    """Make the tree a generic image: fstab by UUID, NoCloud only, no shared identity."""
    (root / "etc" / "fstab").write_text(f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n", encoding="ascii")
    cfg = root / "etc" / "cloud" / "cloud.cfg.d"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "90-cloudplan.cfg").write_text(CLOUD_CFG, encoding="ascii")
    # openssh-server's postinst made host keys: every node from this image would share them.
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    # An empty machine-id makes systemd generate one on first boot (DHCP client ids, journald).
    (root / "etc" / "machine-id").write_text("", encoding="ascii")
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    (root / "etc" / "hostname").write_text("localhost\n", encoding="ascii")
    (root / "etc" / "default" / "locale").write_text("LANG=C.UTF-8\n", encoding="ascii")


def build_image(cache_dir: str | Path, *, suite: str = DEFAULT_SUITE, size_gib: int = DEFAULT_SIZE_GIB,
                packages: tuple[str, ...] = IMAGE_PACKAGES, force: bool = False) -> OSImage:
    """A raw disk image in ``cache_dir``, built unless one for the same inputs is there (or ``force``)."""
    if suite not in SUITES:
        raise ImageError(f"suite {suite!r} is not supported; use one of {', '.join(SUITES)}")
    if not 2 <= size_gib <= 64:
        raise ImageError(f"image size {size_gib} GiB: use 2-64 (cloud-init grows the root to the disk)")
    need_root("building an OS image")
    cache = Path(cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds into one cache would share loop devices and files
        return _build(cache, suite, size_gib, packages, force)


def _build(cache: Path, suite: str, size_gib: int, packages: tuple[str, ...], force: bool) -> OSImage:
    inputs = _inputs(suite, packages, size_gib)
    stamp = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    out, meta = cache / f"debian-{suite}-{stamp}.raw", cache / f"debian-{suite}-{stamp}.json"
    if not force and out.is_file() and meta.is_file():
        info = json.loads(meta.read_text(encoding="utf-8"))
        log.info("image %s is up to date", out)
        return OSImage(out, info["sha256"], suite, info["kernel_version"], out.stat().st_size)
    tar = rootfs(cache, suite, packages)
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        part = Path(tmp) / "disk.raw"
        _, version = disklib.assemble(part, tar, size_gib << 30, Path(tmp), _configure)
        os.replace(part, out)
    digest = _digest(out)
    meta.write_text(json.dumps({"sha256": digest, "kernel_version": version, "inputs": inputs}, indent=1),
                    encoding="utf-8")
    log.info("image %s built: kernel %s, sha256 %s", out, version, digest)
    _prune(cache, keep={out, meta, tar})
    return OSImage(out, digest, suite, version, out.stat().st_size)


def _prune(cache: Path, keep: set[Path]) -> None:
    """Drop superseded images and root filesystems: each is hundreds of MB to GB."""
    for old in [*cache.glob("debian-*.raw"), *cache.glob("debian-*.json"), *cache.glob("rootfs-*.tar")]:
        if old not in keep:
            log.info("removing superseded %s", old.name)
            old.unlink()
