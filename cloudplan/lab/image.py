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
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cloudplan.errors import LabError
from cloudplan.io import write_bytes_atomic

log = logging.getLogger(__name__)

KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# Host binaries copied into the image, with the package that provides each.
HOST_BINARIES = (("dropbear", "dropbear-bin"), ("dropbearkey", "dropbear-bin"), ("lsblk", "util-linux"))
# e1000: QEMU's ``-device e1000`` NIC; virtio_pci and virtio_blk: an ``if=virtio`` data disk.
# Their dependencies (virtio, virtio_ring, virtio_pci_*_dev) are found from each module's modinfo.
MODULES = ("e1000", "virtio_pci", "virtio_blk")
# /init cannot load these as modules (it needs them before any insmod), so they must be built in.
REQUIRED_CONFIG = ("BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "PACKET", "UNIX", "INET", "SERIAL_8250_CONSOLE")
# apt's words for "the package lists are missing or stale": `apt-get update` can fix those.
_STALE_LISTS = ("Unable to locate package", "No packages found", "has no installation candidate",
                "404  Not Found", "404 Not Found")
_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc hook: apply the lease (address, default route, DNS servers) to $interface.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        [ "$1" = bound ] && ip -4 addr flush dev "$interface"
        ip addr replace "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route replace default via "$r" dev "$interface" && break; done
        : > /etc/resolv.conf
        [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        ;;
esac
exit 0
"""
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


@dataclass(frozen=True)
class Package:
    name: str
    version: str


class _StaleLists(Exception):
    """apt could not find a package; ``apt-get update`` may help."""


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
            return _build(cache_dir, force)
        except _StaleLists as err:
            log.info("apt cannot find %s; updating the package lists", err)
            _apt_update(str(err))
        try:
            return _build(cache_dir, force)
        except _StaleLists as err:
            raise _fail(f"apt cannot find package {err}, even after apt-get update") from None


def _build(cache_dir: Path, force: bool) -> InstallerImage:
    packages = _packages()
    host_files = _host_files()
    init = init_script()
    stamp = _stamp(packages, host_files, init)
    kernel, initrd, stamp_file = cache_dir / "vmlinuz", cache_dir / "initrd.img", cache_dir / "installer.json"
    cached = _read_stamp(stamp_file)
    if not force and cached.get("inputs") == stamp and kernel.is_file() and initrd.is_file():
        log.info("installer image is up to date in %s", cache_dir)
        return InstallerImage(kernel, initrd, cached["kernel_version"])
    debs = [_download(p, cache_dir / "debs") for p in packages]
    for old in set((cache_dir / "debs").glob("*.deb")) - set(debs):
        old.unlink()  # superseded versions: a kernel package is ~70 MB
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="build-") as tmp:
        kroot, broot = _unpack(debs[0], Path(tmp) / "kernel"), _unpack(debs[1], Path(tmp) / "busybox")
        version, vmlinuz = _kernel_of(kroot, debs[0])
        modules = load_order(kroot / "lib" / "modules" / version, MODULES)
        archive = _Cpio()
        _add_tree(archive, broot / "bin" / "busybox", host_files, version, modules, init)
        _replace(initrd, archive.gzipped())
        _replace(kernel, vmlinuz.read_bytes())
    _replace(stamp_file, json.dumps({"inputs": stamp, "kernel_version": version}, indent=1).encode())
    log.info("installer image built in %s: kernel %s, initrd %d KiB", cache_dir, version, initrd.stat().st_size // 1024)
    return InstallerImage(kernel, initrd, version)


def init_script() -> bytes:
    return resources.files("cloudplan").joinpath("data/lab/init").read_bytes()


# -- commands and apt ------------------------------------------------------------


def _run(argv: list[str], *, cwd: Path | None = None, package: str | None = None) -> str:
    """stdout of ``argv``; an error naming the command (and the package it was about) on failure."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise _fail(f"{argv[0]} is not installed (needed to build the installer image)") from None
    if done.returncode != 0:
        err = done.stderr.strip()
        if any(hint in err for hint in _STALE_LISTS):
            raise _StaleLists(package or argv[-1])
        about = f" for package {package}" if package else ""
        raise _fail(f"`{' '.join(argv)}` failed{about} (exit {done.returncode}): {err[-500:]}")
    if done.stderr.strip():
        log.debug("%s: %s", argv[0], done.stderr.strip())
    return done.stdout


def _need_root(why: str, command: str) -> None:
    if os.geteuid() != 0:
        raise _fail(f"{why}, and `{command}` needs root: run it as root")


def _apt_update(missing: str) -> None:
    _need_root(f"apt cannot find package {missing}", "apt-get update")
    _run(["apt-get", "update", "-q"])


def _apt_install(package: str) -> None:
    _need_root(f"{package} is not installed on this host", f"apt-get install {package}")
    log.warning("installing %s on this host (its binaries go into the installer image)", package)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package], package=package)


def _candidates(*packages: str) -> dict[str, tuple[str, str]]:
    """(Version, Depends) of the version apt would install, per package; one apt-cache run (each takes ~1 s)."""
    text = _run(["apt-cache", "show", "--no-all-versions", *packages], package=" ".join(packages))
    found = {}
    for record in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Depends): (.*)$", record, flags=re.M))
        if "Package" in fields and "Version" in fields:
            found[fields["Package"]] = (fields["Version"], fields.get("Depends", ""))
    for package in packages:
        if package not in found:
            raise _StaleLists(package)
    return found


def _packages() -> list[Package]:
    """The kernel image package ``linux-image-amd64`` points at (``linux-image-6.1.0-NN-amd64``), and busybox."""
    candidates = _candidates(KERNEL_META_PACKAGE, BUSYBOX_PACKAGE)
    busybox = Package(BUSYBOX_PACKAGE, candidates[BUSYBOX_PACKAGE][0])
    depends = candidates[KERNEL_META_PACKAGE][1]
    for alternative in re.split(r"[,|]", depends):
        name, _, constraint = alternative.strip().partition(" ")
        if name.startswith("linux-image-"):
            # The meta-package pins its image with "(= VERSION)"; ask apt only when it does not.
            pinned = re.fullmatch(r"\(= (\S+)\)", constraint.strip())
            version = pinned.group(1) if pinned else _candidates(name)[name][0]
            return [Package(name, version), busybox]
    raise _fail(f"{KERNEL_META_PACKAGE} depends on no linux-image-* package ({depends!r})")


def _download(package: Package, debs_dir: Path) -> Path:
    """The package's .deb in ``debs_dir``, downloaded unless there already."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    # apt-get download names files NAME_VERSION_ARCH.deb, with ':' in the version escaped.
    pattern = f"{package.name}_{package.version.replace(':', '%3a')}_*.deb"
    found = sorted(debs_dir.glob(pattern))
    if not found:
        log.info("downloading %s %s", package.name, package.version)
        _run(["apt-get", "download", "-q", f"{package.name}={package.version}"], cwd=debs_dir, package=package.name)
        found = sorted(debs_dir.glob(pattern))
        if not found:
            raise _fail(f"apt-get download left no {pattern} in {debs_dir}")
    return found[0]


def _unpack(deb: Path, dest: Path) -> Path:
    _run(["dpkg-deb", "-x", str(deb), str(dest)], package=deb.name)
    return dest


# -- kernel and modules ----------------------------------------------------------


def _kernel_of(root: Path, deb: Path) -> tuple[str, Path]:
    """(kernel version, vmlinuz) of an unpacked kernel package, after checking its configuration."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise _fail(f"{deb.name} holds {len(images)} boot/vmlinuz-* files, expected one")
    version = images[0].name.removeprefix("vmlinuz-")
    config = root / "boot" / f"config-{version}"
    text = config.read_text() if config.is_file() else ""
    missing = [c for c in REQUIRED_CONFIG if f"\nCONFIG_{c}=y\n" not in f"\n{text}\n"]
    if missing:
        raise _fail(f"kernel {version} ({deb.name}) lacks built-in " + ", ".join(f"CONFIG_{c}" for c in missing))
    return version, images[0]


def module_name(path: Path) -> str:
    """``virtio_pci`` from ``virtio_pci.ko[.xz|.gz|.zst]``; the kernel treats '-' and '_' alike."""
    return path.name.split(".ko")[0].replace("-", "_")


def module_bytes(path: Path) -> bytes:
    """The ELF object of a module file, decompressed: busybox insmod takes only plain .ko files."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):  # Python's zstd module is 3.14+
        try:
            return subprocess.run(["zstd", "-dcq", str(path)], capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            raise _fail(f"cannot decompress {path.name} (is zstd installed?)") from None
    return data


def module_depends(elf: bytes) -> list[str]:
    """The ``depends=`` of a module's modinfo (what depmod would write to modules.dep)."""
    found = re.search(rb"(?:^|\0)depends=([^\0]*)", elf)
    return [d.replace("-", "_") for d in found.group(1).decode().split(",") if d] if found else []


def load_order(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """``(name, elf)`` of ``wanted`` and their dependencies, dependencies first; built-ins left out.

    The package ships no modules.dep (its postinst runs depmod), so the
    dependencies come from each module's modinfo.
    """
    files = {module_name(p): p for p in (moddir / "kernel").rglob("*.ko*")}
    builtin_file = moddir / "modules.builtin"
    builtin = {module_name(Path(ln)) for ln in builtin_file.read_text().split()} if builtin_file.is_file() else set()
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in files:
            raise _fail(f"kernel module {name} is neither in {moddir.name}'s modules nor built in")
        elf = module_bytes(files[name])
        for dep in module_depends(elf):
            visit(dep)
        order.append((name, elf))

    for name in wanted:
        visit(name)
    return order


# -- host binaries ---------------------------------------------------------------


def _host_binary(name: str, package: str) -> Path:
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        _apt_install(package)
        found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        raise _fail(f"{name} not found after installing {package}")
    return Path(found)


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries (and the dynamic loader) ``ldd`` says ``binary`` loads."""
    out = _run(["ldd", str(binary)])
    if "not found" in out:
        raise _fail(f"{binary} misses shared libraries: {out.strip()}")
    return [Path(p) for p in re.findall(r"(?:=>\s*|^\s*)(/\S+)\s+\(0x", out, flags=re.M)]


def _host_files() -> list[Path]:
    """Host binaries for the image, then their libraries, each once."""
    binaries = [_host_binary(name, package) for name, package in HOST_BINARIES]
    libraries = [lib for b in binaries for lib in shared_libraries(b)]
    return list(dict.fromkeys(binaries + libraries))


# -- cache stamp -----------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamp(packages: list[Package], host_files: list[Path], init: bytes) -> dict:
    """Everything the image is made from; any change means a rebuild."""
    return {
        "packages": {p.name: p.version for p in packages},
        "host_files": {str(p): _digest(p.read_bytes()) for p in host_files},
        "init": _digest(init),
        # This module decides the layout: a change to it must rebuild too.
        "builder": _digest(Path(__file__).read_bytes()),
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


class _Cpio:
    """A newc ("070701") cpio archive in memory; every entry owned by root, mtime 0, parents made first."""

    def __init__(self) -> None:
        self._out, self._dirs, self._ino = bytearray(), {""}, 0

    def _entry(self, path: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self._ino += 1
        name = path.encode() + b"\0"
        nlink = 2 if mode & 0o040000 else 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name), 0)
        self._out += b"070701" + "".join(f"{f:08X}" for f in fields).encode() + name
        self._out += b"\0" * (-len(self._out) % 4) + data
        self._out += b"\0" * (-len(self._out) % 4)

    def dir(self, path: str, perm: int = 0o755) -> None:
        if path.strip("/") not in self._dirs:
            self._dirs.add(path.strip("/"))
            self._entry(path, 0o040000 | perm)

    def file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(path, 0o100000 | perm, data)

    def symlink(self, path: str, target: str) -> None:
        self._entry(path, 0o120777, target.encode())

    def chardev(self, path: str, perm: int, major: int, minor: int) -> None:
        self._entry(path, 0o020000 | perm, rdev=(major, minor))

    def gzipped(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return gzip.compress(bytes(self._out), compresslevel=6, mtime=0)


def busybox_applets(busybox: Path) -> list[str]:
    """Applet names of a (static, runnable on this host) busybox."""
    return [a for a in _run([str(busybox), "--list"]).split() if a and "/" not in a and a != "busybox"]


def _add_tree(archive: _Cpio, busybox: Path, host_files: list[Path], version: str,
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
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        archive.symlink(f"bin/{applet}", "busybox")
    for path in host_files:
        archive.file(str(path), path.read_bytes(), 0o755)  # same path as on the host, where ldd found it
    for name, elf in modules:
        archive.file(f"lib/modules/{version}/{name}.ko", elf)
    archive.file("etc/installer-modules", "".join(f"{name}.ko\n" for name, _ in modules).encode())
    for path, text in ETC_FILES.items():
        archive.file(path, text.encode())
    archive.file("usr/share/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
    archive.file("init", init, 0o755)
