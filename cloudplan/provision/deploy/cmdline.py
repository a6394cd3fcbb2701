"""What the deploy ramdisk is given (its kernel command line) and what it reports back.

The ramdisk's ``/init`` (``cloudplan/data/deploy/init``) reads ``cloudplan.*``
arguments from ``/proc/cmdline``; :func:`kernel_cmdline` writes them, checked,
for the boot service's iPXE script (or QEMU's ``-append``). The ramdisk POSTs
a form (``application/x-www-form-urlencoded``) to ``report_url`` after each
step; :func:`parse_report` reads one. The one-time token travels in the body,
never in a URL, and ``quiet`` keeps the kernel from printing the command line
(which holds it) on the console.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from enum import Enum

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import DataDiskErase
from cloudplan.provision.deploy.rootdisk import RootDiskHints

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Hint values the shell can split and compare safely (no comma: data_serials is a comma list);
# a blank is written %20 on the command line.
HINT_RE = re.compile(r"^[A-Za-z0-9._:/+ -]+$")
COMPRESSION_SUFFIXES = {".gz": "gzip", ".xz": "xz", ".zst": "zstd"}
# Steps in the order the ramdisk reports them; "failed" can follow any of them.
STEPS = ("started", "root-disk", "image-written", "image-verified", "seed-written", "mirror-built", "data-wiped",
         "done")
FAILED = "failed"
# How the ramdisk may have cleared a data disk (cloudplan/data/deploy/init: erase_method).
DATA_METHODS = ("wipefs", "nvme-format-user-data-erase", "nvme-format-crypto-erase", "ata-security-erase",
                "ata-enhanced-security-erase")


class Compression(str, Enum):
    none = "none"
    gzip = "gzip"
    xz = "xz"
    zstd = "zstd"


class After(str, Enum):
    """What the ramdisk does after a successful deploy. A failure always powers off."""

    poweroff = "poweroff"
    reboot = "reboot"


@dataclass(frozen=True)
class DeployArgs:
    image_url: str
    image_sha256: str
    report_url: str
    token: str
    seed_url: str | None = None
    seed_sha256: str | None = None
    compression: Compression | None = None  # None: from the image URL's suffix
    ip: str = "dhcp"  # "ADDR/PREFIX" on the provisioning NIC, or "dhcp"
    gateway: str | None = None
    mac: str | None = None  # the provisioning NIC; default: the first ethernet NIC
    root_hints: RootDiskHints = RootDiskHints()
    mirror_hints: RootDiskHints | None = None  # a second root disk: / on software RAID1 over both
    data_serials: tuple[str, ...] = ()
    data_erase: DataDiskErase = DataDiskErase.signatures  # secure: each data disk's own erase, or a failed deploy
    after: After = After.poweroff


def _fail(message: str, node: str | None) -> ProvisioningFailed:
    return ProvisioningFailed(message, node=node, step="deploy ramdisk arguments")


def _url(name: str, value: str, node: str | None) -> str:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or any(c.isspace() or c == '"' for c in value):
        raise _fail(f"{name} must be an http(s) URL without blanks or quotes, got {value!r}", node)
    return value


def _sha256(name: str, value: str, node: str | None) -> str:
    if not SHA256_RE.match(value.lower()):
        raise _fail(f"{name} must be 64 hex digits", node)
    return value.lower()


def _hint(name: str, value: str, node: str | None) -> str:
    if not HINT_RE.match(value):
        raise _fail(f"root disk hint {name} {value!r} has characters other than letters, digits, ._:/+- and blank",
                    node)
    return value.strip().replace(" ", "%20")


def compression_of(args: DeployArgs) -> Compression:
    if args.compression is not None:
        return Compression(args.compression)
    path = urllib.parse.urlsplit(args.image_url).path
    return next((Compression(c) for s, c in COMPRESSION_SUFFIXES.items() if path.endswith(s)), Compression.none)


def _network(args: DeployArgs, node: str | None) -> list[str]:
    out = []
    if args.ip != "dhcp":
        try:
            iface = ipaddress.IPv4Interface(args.ip)
        except ValueError:
            raise _fail(f"ip must be ADDR/PREFIX or dhcp, got {args.ip!r}", node) from None
        if "/" not in args.ip:
            raise _fail(f"ip {args.ip!r} needs its prefix length (ADDR/PREFIX)", node)
        out.append(f"cloudplan.ip={iface.with_prefixlen}")
    if args.gateway:
        out.append(f"cloudplan.gateway={ipaddress.IPv4Address(args.gateway)}")
    if args.mac:
        if not MAC_RE.match(args.mac.lower()):
            raise _fail(f"mac {args.mac!r} is not six colon-separated hex octets", node)
        out.append(f"cloudplan.mac={args.mac.lower()}")
    return out


def _hints(prefix: str, h: RootDiskHints, node: str | None) -> list[str]:
    out = []
    if h.size_gib is not None:
        if h.size_gib < 1:
            raise _fail(f"{prefix} disk hint size_gib must be at least 1, got {h.size_gib}", node)
        out.append(f"cloudplan.{prefix}_size_gib={int(h.size_gib)}")
    for name in ("serial", "model", "by_path"):
        value = getattr(h, name)
        if value is not None:
            out.append(f"cloudplan.{prefix}_{name}={_hint(name, value, node)}")
    return out


def _disks(args: DeployArgs, node: str | None) -> list[str]:
    out = _hints("root", args.root_hints, node)
    if args.mirror_hints is not None:
        mirror = _hints("mirror", args.mirror_hints, node)
        # No hint would let the ramdisk take any disk as the mirror: never what was meant.
        if not mirror:
            raise _fail("the mirror disk needs at least one hint", node)
        out += mirror
    if args.data_serials:
        serials = [_hint("data serial", s, node) for s in args.data_serials]
        if any("%20" in s for s in serials):
            raise _fail("data disk serials may not contain blanks (the list is comma-separated)", node)
        out.append(f"cloudplan.data_serials={','.join(serials)}")
    # Only a secure erase is written: a ramdisk that reads no data_erase wipes signatures.
    if DataDiskErase(args.data_erase) is DataDiskErase.secure:
        out.append(f"cloudplan.data_erase={DataDiskErase.secure.value}")
    return out


def kernel_cmdline(args: DeployArgs, *, node: str | None = None) -> str:
    """The ramdisk's arguments, checked; prepend console= and the like as the machine needs."""
    if not args.token or not re.fullmatch(r"[A-Za-z0-9_-]+", args.token):
        raise _fail("the report token must be non-empty URL-safe characters ([A-Za-z0-9_-])", node)
    if (args.seed_url is None) != (args.seed_sha256 is None):
        raise _fail("seed_url and seed_sha256 go together", node)
    parts = ["quiet",  # the kernel prints its command line, token and all, at a level quiet hides
             f"cloudplan.image_url={_url('image_url', args.image_url, node)}",
             f"cloudplan.image_sha256={_sha256('image_sha256', args.image_sha256, node)}",
             f"cloudplan.image_compression={compression_of(args).value}",
             f"cloudplan.report_url={_url('report_url', args.report_url, node)}",
             f"cloudplan.token={args.token}"]
    if args.seed_url is not None:
        parts += [f"cloudplan.seed_url={_url('seed_url', args.seed_url, node)}",
                  f"cloudplan.seed_sha256={_sha256('seed_sha256', args.seed_sha256 or '', node)}"]
    parts += _network(args, node) + _disks(args, node) + [f"cloudplan.after={After(args.after).value}"]
    return " ".join(parts)


@dataclass(frozen=True)
class DeployReport:
    step: str
    token: str
    root_disk: str | None = None
    root_serial: str | None = None
    root_size_bytes: int | None = None
    mirror_disk: str | None = None    # the second root disk of a RAID1 root, once chosen
    mirror_serial: str | None = None
    sha256_ok: bool | None = None  # None until the read-back is done
    # (disk, method) of each data disk cleared so far: wipefs, nvme-format-user-data-erase,
    # nvme-format-crypto-erase, ata-security-erase or ata-enhanced-security-erase.
    data_disks: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.step == FAILED

    @property
    def done(self) -> bool:
        return self.step == "done"


def parse_report(body: bytes) -> DeployReport:
    """One report POSTed by the ramdisk; an unknown step or a malformed field is an error."""
    try:
        fields = {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        raise ProvisioningFailed("deploy report is not ASCII form data", step="deploy report") from None
    step = fields.get("step", "")
    if step not in STEPS and step != FAILED:
        raise ProvisioningFailed(f"deploy report has unknown step {step!r}", step="deploy report")
    sha = fields.get("sha256_ok", "")
    size = fields.get("root_size_bytes", "")
    return DeployReport(step=step, token=fields.get("token", ""), root_disk=fields.get("root_disk") or None,
                        root_serial=fields.get("root_serial") or None,
                        root_size_bytes=int(size) if size.isdigit() else None,
                        mirror_disk=fields.get("mirror_disk") or None,
                        mirror_serial=fields.get("mirror_serial") or None,
                        sha256_ok={"true": True, "false": False}.get(sha),
                        data_disks=_data_disks(fields.get("data_disks", "")),
                        error=fields.get("error") or None)


def _data_disks(text: str) -> tuple[tuple[str, str], ...]:
    """``vdb:wipefs,nvme0n1:nvme-format-user-data-erase`` as pairs; a malformed entry is an error."""
    pairs = []
    for item in filter(None, text.split(",")):
        disk, sep, method = item.partition(":")
        if not sep or not disk or method not in DATA_METHODS:
            raise ProvisioningFailed(f"deploy report has a malformed data disk entry {item!r}", step="deploy report")
        pairs.append((disk, method))
    return tuple(pairs)
