"""One dated snapshot of a live cloud's usage, read from what the real CLIs print.

A snapshot is a directory holding the JSON output of read-only commands an
operator (or a cron job) runs against the cloud; cloudplan never talks to the
cloud's APIs itself, so it needs no credentials and a snapshot can be reviewed
before it is used. :data:`SNAPSHOT_FILES` lists each file and the command that
writes it; the README has a script that collects them all.

Compute capacity comes from Placement when its files are there (since Nova API
microversion 2.88 ``hypervisor list`` no longer carries usage): a host offers
``(total - reserved) * allocation_ratio`` of each resource class, exactly what
the scheduler uses. Without them, the ``--long`` columns of an older
``hypervisor list`` are used with the blueprint's allocation ratios.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloudplan.errors import SpecError

TAKEN_AT = "taken-at"
HYPERVISORS = "hypervisors.json"
SERVERS = "servers.json"
PROVIDERS = "resource-providers.json"
CEPH_DF = "ceph-df.json"
CEPH_OSD_TREE = "ceph-osd-df-tree.json"

SNAPSHOT_FILES: dict[str, str] = {
    TAKEN_AT: "date -u +%Y-%m-%dT%H:%M:%SZ",
    HYPERVISORS: "openstack hypervisor list --long -f json",
    SERVERS: "openstack server list --all-projects --long --limit -1 -f json",
    PROVIDERS: "openstack resource provider list -f json",
    "inventory/UUID.json": "openstack resource provider inventory list UUID -f json",
    "usage/UUID.json": "openstack resource provider usage show UUID -f json",
    CEPH_DF: "ceph df -f json",
    CEPH_OSD_TREE: "ceph osd df tree -f json",
}
REQUIRED = (TAKEN_AT, HYPERVISORS, SERVERS)
# An OSD's size in `ceph osd df` is in KiB.
KIB = 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostUsage(_Model):
    name: str = Field(description="hypervisor hostname")
    up: bool = Field(description="nova-compute reports the hypervisor up")
    vcpus_offered: float = Field(description="vCPUs the scheduler may place: (total - reserved) x allocation ratio")
    vcpus_used: float = Field(description="vCPUs allocated to instances")
    ram_mib_offered: float = Field(description="RAM the scheduler may place, MiB")
    ram_mib_used: float = Field(description="RAM allocated to instances, MiB")


class CephHost(_Model):
    name: str = Field(description="CRUSH host bucket")
    rack: str | None = Field(default=None, description="CRUSH rack bucket above the host, if any")
    bytes_by_class: dict[str, int] = Field(description="OSD capacity per device class, bytes")


class Snapshot(_Model):
    path: str = Field(description="snapshot directory")
    taken_at: datetime = Field(description="when the snapshot was taken (UTC)")
    source: str = Field(description="where compute capacity came from: placement or hypervisor-list")
    hosts: list[HostUsage] = Field(description="compute hosts")
    vms: int = Field(description="instances in the cloud (any status)")
    vms_by_flavor: dict[str, int] = Field(description="instances per flavor name")
    ceph_hosts: list[CephHost] = Field(default_factory=list, description="OSD hosts and their capacity per class")
    ceph_raw_used_bytes: dict[str, int] = Field(default_factory=dict, description="raw bytes used per device class")

    @property
    def day(self) -> float:
        """Days since the epoch, for fitting growth."""
        return self.taken_at.timestamp() / 86400.0


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError("file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text", path=str(path)) from None
    except json.JSONDecodeError as err:
        raise SpecError(f"not JSON: {err.msg}", path=str(path), line=err.lineno, column=err.colno) from None
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror}", path=str(path)) from None


def _rows(path: Path) -> list[dict[str, Any]]:
    data = _read_json(path)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise SpecError("expected a JSON list of objects, as `-f json` prints a list", path=str(path))
    return data


def _number(row: dict[str, Any], key: str, path: Path, i: int) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SpecError(f"expected a non-negative number, got {str(value)[:40]!r}", path=str(path), field=f"[{i}].{key}")
    return float(value)


def _text(row: dict[str, Any], key: str, path: Path, i: int) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise SpecError("missing or not a string", path=str(path), field=f"[{i}].{key}")
    return value


def _taken_at(path: Path) -> datetime:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SpecError("file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError):
        raise SpecError("cannot read as text", path=str(path)) from None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(f"expected an ISO-8601 time such as 2026-11-30T06:00:00Z, got {text[:40]!r}",
                        path=str(path)) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _placement_resources(d: Path, uuid: str) -> dict[str, tuple[float, float]]:
    """Per resource class: (offered, used) of one provider."""
    inv_path, use_path = d / "inventory" / f"{uuid}.json", d / "usage" / f"{uuid}.json"
    usage = {_text(r, "resource_class", use_path, i): _number(r, "usage", use_path, i)
             for i, r in enumerate(_rows(use_path))}
    out = {}
    for i, r in enumerate(_rows(inv_path)):
        rc = _text(r, "resource_class", inv_path, i)
        offered = (_number(r, "total", inv_path, i) - _number(r, "reserved", inv_path, i)) \
            * _number(r, "allocation_ratio", inv_path, i)
        out[rc] = (max(0.0, offered), usage.get(rc, 0.0))
    return out


def _hosts_from_placement(d: Path, states: dict[str, bool]) -> list[HostUsage]:
    path = d / PROVIDERS
    hosts = []
    for i, r in enumerate(_rows(path)):
        name, uuid = _text(r, "name", path, i), _text(r, "uuid", path, i)
        if name not in states:
            continue  # a nested or sharing provider (a GPU, a shared disk pool), not a hypervisor
        res = _placement_resources(d, uuid)
        vcpu, ram = res.get("VCPU", (0.0, 0.0)), res.get("MEMORY_MB", (0.0, 0.0))
        hosts.append(HostUsage(name=name, up=states[name], vcpus_offered=vcpu[0], vcpus_used=vcpu[1],
                               ram_mib_offered=ram[0], ram_mib_used=ram[1]))
    return hosts


def _hosts_from_hypervisors(rows: list[dict[str, Any]], path: Path, cpu_ratio: float, ram_ratio: float,
                            reserved_ram_mib: float) -> list[HostUsage]:
    hosts = []
    for i, r in enumerate(rows):
        hosts.append(HostUsage(
            name=_text(r, "Hypervisor Hostname", path, i), up=r.get("State") == "up",
            vcpus_offered=_number(r, "vCPUs", path, i) * cpu_ratio, vcpus_used=_number(r, "vCPUs Used", path, i),
            ram_mib_offered=max(0.0, _number(r, "Memory MB", path, i) - reserved_ram_mib) * ram_ratio,
            # Before Placement, "Memory MB Used" counted the host's reserved memory as used.
            ram_mib_used=max(0.0, _number(r, "Memory MB Used", path, i) - reserved_ram_mib)))
    return hosts


def _flavor_counts(d: Path) -> Counter[str]:
    path = d / SERVERS
    counts: Counter[str] = Counter()
    for i, r in enumerate(_rows(path)):
        # `--long` prints "Flavor Name" up to compute API 2.46 and "Flavor" (the name) since 2.47.
        flavor = r.get("Flavor Name", r.get("Flavor"))
        if isinstance(flavor, dict):
            flavor = flavor.get("original_name") or flavor.get("name")
        if not isinstance(flavor, str) or not flavor:
            raise SpecError("no flavor name (expected a 'Flavor Name' or 'Flavor' column)", path=str(path),
                            field=f"[{i}]")
        counts[flavor] += 1
    return counts


def _ceph(d: Path) -> tuple[list[CephHost], dict[str, int]]:
    tree_path, df_path = d / CEPH_OSD_TREE, d / CEPH_DF
    if not tree_path.exists() and not df_path.exists():
        return [], {}
    tree, df = _read_json(tree_path), _read_json(df_path)
    nodes = tree.get("nodes") if isinstance(tree, dict) else None
    if not isinstance(nodes, list):
        raise SpecError("expected an object with a 'nodes' list, as `ceph osd df tree -f json` prints",
                        path=str(tree_path))
    by_id = {n.get("id"): n for n in nodes if isinstance(n, dict)}
    rack_of = {c: n.get("name") for n in by_id.values() if n.get("type") == "rack" for c in n.get("children", [])}
    hosts = []
    for hid, n in by_id.items():
        if n.get("type") != "host":
            continue
        caps: Counter[str] = Counter()
        for c in n.get("children", []):
            osd = by_id.get(c, {})
            if osd.get("type") == "osd" and isinstance(osd.get("kb"), (int, float)):
                caps[str(osd.get("device_class") or "unknown")] += int(osd["kb"]) * KIB
        hosts.append(CephHost(name=str(n.get("name")), rack=rack_of.get(hid), bytes_by_class=dict(caps)))
    classes = df.get("stats_by_class") if isinstance(df, dict) else None
    if not isinstance(classes, dict):
        raise SpecError("expected an object with 'stats_by_class', as `ceph df -f json` prints", path=str(df_path))
    used = {}
    for cls, stats in classes.items():
        value = stats.get("total_used_raw_bytes") if isinstance(stats, dict) else None
        if not isinstance(value, (int, float)) or value < 0:
            raise SpecError("expected a non-negative number", path=str(df_path),
                            field=f"stats_by_class.{cls}.total_used_raw_bytes")
        used[str(cls)] = int(value)
    return hosts, used


def load_snapshot(directory: str | Path, *, cpu_ratio: float, ram_ratio: float,
                  reserved_ram_mib: float) -> Snapshot:
    """Read one snapshot directory; the ratios and reservation are used only without Placement files."""
    d = Path(directory)
    if not d.is_dir():
        raise SpecError("not a snapshot directory", path=str(d))
    for name in REQUIRED:
        if not (d / name).exists():
            raise SpecError(f"missing {name} (written by `{SNAPSHOT_FILES[name]}`)", path=str(d))
    hyp_path = d / HYPERVISORS
    rows = _rows(hyp_path)
    states = {_text(r, "Hypervisor Hostname", hyp_path, i): r.get("State") == "up" for i, r in enumerate(rows)}
    if (d / PROVIDERS).exists():
        hosts, source = _hosts_from_placement(d, states), "placement"
    elif rows and all("vCPUs" in r for r in rows):
        hosts, source = _hosts_from_hypervisors(rows, hyp_path, cpu_ratio, ram_ratio, reserved_ram_mib), \
            "hypervisor-list"
    else:
        raise SpecError(f"no compute capacity: add {PROVIDERS} with inventory/ and usage/ (Placement), or a "
                        "hypervisor list from compute API <= 2.87 with its vCPUs columns", path=str(d))
    if not hosts:
        raise SpecError("no compute host in the snapshot", path=str(d))
    flavors = _flavor_counts(d)
    ceph_hosts, ceph_used = _ceph(d)
    return Snapshot(path=str(d), taken_at=_taken_at(d / TAKEN_AT), source=source, hosts=hosts,
                    vms=sum(flavors.values()), vms_by_flavor=dict(sorted(flavors.items())),
                    ceph_hosts=ceph_hosts, ceph_raw_used_bytes=ceph_used)
