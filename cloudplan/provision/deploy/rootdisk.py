"""Which disk of a node becomes its root disk: the rules, once.

The deploy ramdisk's ``/init`` (``cloudplan/data/deploy/init``) applies the
same rules in shell to the same ``lsblk`` columns; this module is their
statement and what cloudplan itself uses to predict or check the choice.

1. Candidates are the devices ``lsblk`` calls TYPE ``disk`` with a size above
   zero (no partitions, loop devices, optical drives).
2. A planned data disk (its serial among the node's data-disk serials) is
   never the root disk.
3. Every hint given must match: ``serial`` and ``model`` exactly (after
   trimming blanks), ``size_gib`` the size in whole GiB rounded down (as
   Ironic's root device hints), ``by_path`` one of the disk's
   ``/dev/disk/by-path`` names (``pci-0000:00:04.0``).
4. Of the disks left, the smallest wins; a tie goes to the first name in
   sort order (``sda`` before ``sdb``). No disk left is an error that names
   the hints and the disks seen.

5. With mirror hints (a root on software RAID1), the mirror disk is chosen
   the same way from the disks left (not the root disk, not a planned data
   disk), and must be at least as large as the root disk.

Data disks are the planned ones when their serials are known, else every
other disk (but the root disks); the ramdisk wipes their signatures and leaves
them unpartitioned.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cloudplan.errors import ProvisioningFailed

GIB = 1 << 30
# The ramdisk reads these columns too (as ``lsblk -P``); this module reads them as ``lsblk -J -b -o``.
LSBLK_COLUMNS = "NAME,SIZE,SERIAL,MODEL,TYPE,ROTA"


@dataclass(frozen=True)
class Disk:
    name: str
    size_bytes: int
    serial: str | None = None
    model: str | None = None
    rotational: bool = False
    by_path: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.name} ({self.size_bytes // GIB} GiB, serial {self.serial or '-'}, model {self.model or '-'})"


@dataclass(frozen=True)
class RootDiskHints:
    """Inventory hints for the root disk; ``None`` is no hint."""

    size_gib: int | None = None
    serial: str | None = None
    model: str | None = None
    by_path: str | None = None

    def given(self) -> dict[str, str | int]:
        return {k: v for k, v in (("size_gib", self.size_gib), ("serial", self.serial), ("model", self.model),
                                   ("by_path", self.by_path)) if v is not None}


@dataclass(frozen=True)
class RootDiskChoice:
    root: Disk
    data: tuple[Disk, ...] = field(default=())
    mirror: Disk | None = None


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def disks_from_lsblk(lsblk_json: str, by_path: Mapping[str, Iterable[str]] | None = None) -> list[Disk]:
    """The disks (rule 1) in ``lsblk -J -b -o NAME,SIZE,SERIAL,MODEL,TYPE,ROTA`` output.

    ``by_path`` maps a disk name to its ``/dev/disk/by-path`` names, which lsblk does not print.
    """
    try:
        devices = json.loads(lsblk_json)["blockdevices"]
    except (ValueError, KeyError, TypeError) as err:
        raise ProvisioningFailed(f"unreadable lsblk output: {err}", step="root disk") from None
    paths = by_path or {}
    disks = []
    for dev in devices:
        size = int(dev.get("size") or 0)
        if dev.get("type") != "disk" or size <= 0:
            continue
        rota = dev.get("rota")
        disks.append(Disk(name=dev["name"], size_bytes=size, serial=_text(dev.get("serial")),
                          model=_text(dev.get("model")), rotational=rota in (True, "1", 1),
                          by_path=tuple(paths.get(dev["name"], ()))))
    return disks


def _matches(disk: Disk, hints: RootDiskHints) -> bool:
    if hints.serial is not None and disk.serial != hints.serial.strip():
        return False
    if hints.model is not None and disk.model != hints.model.strip():
        return False
    if hints.size_gib is not None and disk.size_bytes // GIB != hints.size_gib:
        return False
    return hints.by_path is None or hints.by_path in disk.by_path


def _pick(disks: list[Disk], hints: RootDiskHints, planned: set[str], what: str, node: str | None,
          taken: Disk | None = None) -> Disk:
    candidates = [d for d in disks if d.serial not in planned and d is not taken and _matches(d, hints)]
    if not candidates:
        seen = "; ".join(d.describe() for d in disks) or "none"
        wanted = ", ".join(f"{k}={v}" for k, v in hints.given().items()) or "no hints"
        excluded = f", data disks {', '.join(sorted(planned))} excluded" if planned else ""
        raise ProvisioningFailed(f"no disk matches the {what} disk rules ({wanted}{excluded}); disks seen: {seen}",
                                 node=node, step="root disk")
    return min(candidates, key=lambda d: (d.size_bytes, d.name))


def choose_root_disk(disks: list[Disk], hints: RootDiskHints | None = None,
                     data_serials: Iterable[str] = (), *, mirror_hints: RootDiskHints | None = None,
                     node: str | None = None) -> RootDiskChoice:
    """The root disk (and its mirror) by the module's rules, and the disks that will be wiped as data disks."""
    planned = {s.strip() for s in data_serials if s.strip()}
    root = _pick(disks, hints or RootDiskHints(), planned, "root", node)
    mirror = None
    if mirror_hints is not None:
        mirror = _pick(disks, mirror_hints, planned, "mirror", node, taken=root)
        if mirror.size_bytes < root.size_bytes:
            raise ProvisioningFailed(f"mirror disk {mirror.describe()} is smaller than root disk "
                                     f"{root.describe()}", node=node, step="root disk")
    if planned:
        data = tuple(d for d in disks if d.serial in planned)
    else:
        data = tuple(d for d in disks if d is not root and d is not mirror)
    return RootDiskChoice(root=root, data=data, mirror=mirror)
