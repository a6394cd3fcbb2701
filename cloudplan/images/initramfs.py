"""Building blocks of a Debian kernel + busybox initramfs, shared by the lab installer and the deploy ramdisk.

Nothing is installed on the host for the image itself: the kernel (the package
``linux-image-amd64`` depends on) and ``busybox-static`` are ``apt-get
download``-ed and unpacked with ``dpkg-deb -x``; host binaries the image needs
(``sfdisk``, ``lsblk``, ``dropbear``...) are copied with the libraries ``ldd``
names. The newc cpio is written in Python (no ``cpio`` binary; device nodes
need no privileges). Failures raise :class:`ImageError` naming the package or
command; callers with an error family of their own translate it.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cloudplan.errors import ImageError

log = logging.getLogger(__name__)

KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# apt's words for "the package lists are missing or stale": `apt-get update` can fix those.
_STALE_LISTS = ("Unable to locate package", "No packages found", "has no installation candidate",
                "404  Not Found", "404 Not Found")
SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

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

T = TypeVar("T")


@dataclass(frozen=True)
class Package:
    name: str
    version: str


class StaleLists(Exception):
    """apt could not find a package; ``apt-get update`` may help."""


# -- commands and apt ------------------------------------------------------------


def run(argv: list[str], *, cwd: Path | None = None, package: str | None = None) -> str:
    """stdout of ``argv``; an error naming the command (and the package it was about) on failure."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} is not installed (needed to build a boot image)") from None
    if done.returncode != 0:
        err = done.stderr.strip()
        if any(hint in err for hint in _STALE_LISTS):
            raise StaleLists(package or argv[-1])
        about = f" for package {package}" if package else ""
        raise ImageError(f"`{' '.join(argv)}` failed{about} (exit {done.returncode}): {err[-500:]}")
    if done.stderr.strip():
        log.debug("%s: %s", argv[0], done.stderr.strip())
    return done.stdout


def need_root(why: str, command: str) -> None:
    if os.geteuid() != 0:
        raise ImageError(f"{why}, and `{command}` needs root: run it as root")


def apt_update(missing: str) -> None:
    need_root(f"apt cannot find package {missing}", "apt-get update")
    run(["apt-get", "update", "-q"])


def apt_install(package: str) -> None:
    need_root(f"{package} is not installed on this host", f"apt-get install {package}")
    log.warning("installing %s on this host (its binaries go into a boot image)", package)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package], package=package)


def with_fresh_lists(build: Callable[[], T]) -> T:
    """``build()``, once more after ``apt-get update`` if apt could not find a package."""
    try:
        return build()
    except StaleLists as err:
        log.info("apt cannot find %s; updating the package lists", err)
        apt_update(str(err))
    try:
        return build()
    except StaleLists as err:
        raise ImageError(f"apt cannot find package {err}, even after apt-get update") from None


def candidates(*packages: str) -> dict[str, tuple[str, str]]:
    """(Version, Depends) of the version apt would install, per package; one apt-cache run (each takes ~1 s)."""
    text = run(["apt-cache", "show", "--no-all-versions", *packages], package=" ".join(packages))
    found = {}
    for record in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Depends): (.*)$", record, flags=re.M))
        if "Package" in fields and "Version" in fields:
            found[fields["Package"]] = (fields["Version"], fields.get("Depends", ""))
    for package in packages:
        if package not in found:
            raise StaleLists(package)
    return found


def kernel_and_busybox() -> list[Package]:
    """The kernel image package ``linux-image-amd64`` points at (``linux-image-6.1.0-NN-amd64``), and busybox."""
    found = candidates(KERNEL_META_PACKAGE, BUSYBOX_PACKAGE)
    busybox = Package(BUSYBOX_PACKAGE, found[BUSYBOX_PACKAGE][0])
    depends = found[KERNEL_META_PACKAGE][1]
    for alternative in re.split(r"[,|]", depends):
        name, _, constraint = alternative.strip().partition(" ")
        if name.startswith("linux-image-"):
            # The meta-package pins its image with "(= VERSION)"; ask apt only when it does not.
            pinned = re.fullmatch(r"\(= (\S+)\)", constraint.strip())
            version = pinned.group(1) if pinned else candidates(name)[name][0]
            return [Package(name, version), busybox]
    raise ImageError(f"{KERNEL_META_PACKAGE} depends on no linux-image-* package ({depends!r})")


def download(package: Package, debs_dir: Path) -> Path:
    """The package's .deb in ``debs_dir``, downloaded unless there already."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    # apt-get download names files NAME_VERSION_ARCH.deb, with ':' in the version escaped.
    pattern = f"{package.name}_{package.version.replace(':', '%3a')}_*.deb"
    found = sorted(debs_dir.glob(pattern))
    if not found:
        log.info("downloading %s %s", package.name, package.version)
        run(["apt-get", "download", "-q", f"{package.name}={package.version}"], cwd=debs_dir, package=package.name)
        found = sorted(debs_dir.glob(pattern))
        if not found:
            raise ImageError(f"apt-get download left no {pattern} in {debs_dir}")
    return found[0]


def unpack(deb: Path, dest: Path) -> Path:
    run(["dpkg-deb", "-x", str(deb), str(dest)], package=deb.name)
    return dest


# -- kernel and modules ----------------------------------------------------------


def kernel_of(root: Path, deb: Path, required_config: tuple[str, ...]) -> tuple[str, Path]:
    """(kernel version, vmlinuz) of an unpacked kernel package, after checking its built-in options."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise ImageError(f"{deb.name} holds {len(images)} boot/vmlinuz-* files, expected one")
    version = images[0].name.removeprefix("vmlinuz-")
    config = root / "boot" / f"config-{version}"
    text = config.read_text() if config.is_file() else ""
    missing = [c for c in required_config if f"\nCONFIG_{c}=y\n" not in f"\n{text}\n"]
    if missing:
        raise ImageError(f"kernel {version} ({deb.name}) lacks built-in " + ", ".join(f"CONFIG_{c}" for c in missing))
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
            raise ImageError(f"cannot decompress {path.name} (is zstd installed?)") from None
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
            raise ImageError(f"kernel module {name} is neither in {moddir.name}'s modules nor built in")
        elf = module_bytes(files[name])
        for dep in module_depends(elf):
            visit(dep)
        order.append((name, elf))

    for name in wanted:
        visit(name)
    return order


# -- host binaries ---------------------------------------------------------------


def host_binary(name: str, package: str) -> Path:
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        apt_install(package)
        found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise ImageError(f"{name} not found after installing {package}")
    return Path(found)


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries (and the dynamic loader) ``ldd`` says ``binary`` loads."""
    out = run(["ldd", str(binary)])
    if "not found" in out:
        raise ImageError(f"{binary} misses shared libraries: {out.strip()}")
    return [Path(p) for p in re.findall(r"(?:=>\s*|^\s*)(/\S+)\s+\(0x", out, flags=re.M)]


def host_files(binaries: tuple[tuple[str, str], ...]) -> list[Path]:
    """``(name, package)`` host binaries for the image, then their libraries, each once."""
    found = [host_binary(name, package) for name, package in binaries]
    libraries = [lib for b in found for lib in shared_libraries(b)]
    return list(dict.fromkeys(found + libraries))


# -- cache -----------------------------------------------------------------------


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def replace_file(path: Path, data: bytes) -> None:
    # Written beside and renamed, so a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- the archive -----------------------------------------------------------------


class Cpio:
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
    return [a for a in run([str(busybox), "--list"]).split() if a and "/" not in a and a != "busybox"]


def add_busybox(archive: Cpio, busybox: Path) -> None:
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        archive.symlink(f"bin/{applet}", "busybox")


def add_host_files(archive: Cpio, paths: list[Path]) -> None:
    for path in paths:
        archive.file(str(path), path.read_bytes(), 0o755)  # same path as on the host, where ldd found it


def add_modules(archive: Cpio, version: str, modules: list[tuple[str, bytes]], list_path: str) -> None:
    """The modules under ``lib/modules/VERSION`` and, at ``list_path``, their load order for /init."""
    for name, elf in modules:
        archive.file(f"lib/modules/{version}/{name}.ko", elf)
    archive.file(list_path, "".join(f"{name}.ko\n" for name, _ in modules).encode())


# -- a cached build ----------------------------------------------------------------

TreeFn = Callable[["Cpio", Path, list[Path], str, list[tuple[str, bytes]], bytes], None]


@dataclass(frozen=True)
class Recipe:
    """What one kind of ramdisk is made of; :func:`build_cached` fetches, stamps and caches it."""

    label: str                                   # "deploy ramdisk", "installer image": for logs
    stamp_file: str                              # its stamp's file name in the cache
    host_binaries: tuple[tuple[str, str], ...]   # (binary, Debian package) copied from the host
    modules: tuple[str, ...]                     # kernel modules (their dependencies are added)
    required_config: tuple[str, ...]             # kernel options that must be built in
    init: bytes                                  # the /init script
    builder: Path                                # the caller's module: a change to its layout rebuilds
    add_tree: TreeFn                             # (archive, busybox, host files, version, modules, init)


@dataclass(frozen=True)
class Built:
    kernel: Path
    initrd: Path
    kernel_version: str


def build_cached(cache_dir: str | Path, recipe: Recipe, *, force: bool = False) -> Built:
    """The recipe's kernel and initrd in ``cache_dir``, built unless up to date (or ``force``)."""
    cache = Path(cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds into one cache would overwrite each other's files
        return with_fresh_lists(lambda: _build(cache, recipe, force))


def _stamp(recipe: Recipe, packages: list[Package], host_files: list[Path]) -> dict:
    """Everything the ramdisk is made from; any change means a rebuild."""
    return {"packages": {p.name: p.version for p in packages},
            "host_files": {str(p): digest(p.read_bytes()) for p in host_files},
            "init": digest(recipe.init), "modules": list(recipe.modules),
            "builder": digest(recipe.builder.read_bytes()), "helpers": digest(Path(__file__).read_bytes())}


def _build(cache: Path, recipe: Recipe, force: bool) -> Built:
    packages = kernel_and_busybox()
    host = host_files(recipe.host_binaries)
    stamp = _stamp(recipe, packages, host)
    kernel, initrd, stamp_file = cache / "vmlinuz", cache / "initrd.img", cache / recipe.stamp_file
    cached = read_stamp(stamp_file)
    if not force and cached.get("inputs") == stamp and kernel.is_file() and initrd.is_file():
        log.info("%s is up to date in %s", recipe.label, cache)
        return Built(kernel, initrd, cached["kernel_version"])
    debs = [download(p, cache / "debs") for p in packages]
    for old in set((cache / "debs").glob("*.deb")) - set(debs):
        old.unlink()  # superseded versions: a kernel package is ~70 MB
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        kroot = unpack(debs[0], Path(tmp) / "kernel")
        broot = unpack(debs[1], Path(tmp) / "busybox")
        version, vmlinuz = kernel_of(kroot, debs[0], recipe.required_config)
        modules = load_order(kroot / "lib" / "modules" / version, recipe.modules)
        archive = Cpio()
        recipe.add_tree(archive, broot / "bin" / "busybox", host, version, modules, recipe.init)
        replace_file(initrd, archive.gzipped())
        replace_file(kernel, vmlinuz.read_bytes())
    replace_file(stamp_file, json.dumps({"inputs": stamp, "kernel_version": version}, indent=1).encode())
    log.info("%s built in %s: kernel %s, initrd %d KiB", recipe.label, cache, version, initrd.stat().st_size // 1024)
    return Built(kernel, initrd, version)
