"""Service configuration Kolla-Ansible merges from ``config/``: what the plan assumed, written down.

Kolla-Ansible merges ``config/nova.conf`` into every Nova service's
configuration and ``config/nova/<host>/nova.conf`` into that host's only.
cloudplan writes there the allocation ratios sizing used (so Nova never
falls back to its own initial ratios) and, for each hyperconverged host (a
compute node with Ceph data drives), the cores and RAM sizing kept for its
OSDs: without them Nova would keep its 512 MiB default and schedule VMs into
the OSDs' memory. Glance gets ``show_image_direct_url`` so Nova and Cinder
make copy-on-write RBD clones of images instead of copying them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cloudplan.errors import ManifestError
from cloudplan.inventory import Node
from cloudplan.manifests.site import Site
from cloudplan.sizing.reserve import osd_reservation
from cloudplan.spec import Policy

# Nova's initial_disk_allocation_ratio (nova/conf/compute.py): sizing plans no disk overcommit.
DISK_ALLOCATION_RATIO = 1.0


@dataclass
class HostReservation:
    """What one compute host keeps from Nova: the host's own share plus its OSDs'."""

    host: str
    osds: int
    reserved_host_memory_mb: int
    reserved_host_cpus: int


def plan_policy(blueprint: Mapping[str, Any] | None) -> Policy:
    """The policy the blueprint was sized with (its embedded workload), else sizing's defaults."""
    raw = ((blueprint or {}).get("workload") or {}).get("policy")
    if raw is None:
        return Policy()
    try:
        return Policy.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"blueprint workload.policy.{where}: {first['msg']}") from None


def reservation(node: Node, site: Site, policy: Policy) -> HostReservation:
    """The host's reservation as sizing counted it (:func:`osd_reservation`): the host share plus,
    per OSD, its tier's RAM and its physical cores' hardware threads (Nova counts host CPUs in threads)."""
    osd_drives = {t: node.drives.get(t, 0) for t in site.tiers}
    osds = osd_reservation(osd_drives, osd_cores=policy.osd_cores, osd_ram_gib=policy.osd_ram_gib)
    ram_mb = policy.reserved_host_memory_mb + osds.ram_gib * 1024
    cpus = policy.reserved_host_cores + osds.threads
    return HostReservation(node.name, sum(osd_drives.values()), int(math.ceil(ram_mb)), int(math.ceil(cpus)))


def reservations(site: Site, policy: Policy) -> list[HostReservation]:
    """One entry per hyperconverged host (a compute host carrying OSDs of a planned tier)."""
    return [r for r in (reservation(n, site, policy) for n in site.groups["compute"]) if r.osds]


def _ini(sections: dict[str, dict[str, Any]], comment: str) -> str:
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    for name, values in sections.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_ini_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _ini_value(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    return f"{v:g}" if isinstance(v, float) else str(v)


def config_files(site: Site, policy: Policy) -> dict[str, str]:
    """Relative path (under config/) -> content."""
    files = {
        "config/nova.conf": _ini(
            {"DEFAULT": {"cpu_allocation_ratio": policy.cpu_allocation_ratio,
                         "ram_allocation_ratio": policy.ram_allocation_ratio,
                         "disk_allocation_ratio": DISK_ALLOCATION_RATIO,
                         "reserved_host_memory_mb": policy.reserved_host_memory_mb,
                         "reserved_host_cpus": policy.reserved_host_cores}},
            f"Nova settings of {site.name} for every host, merged by Kolla-Ansible into nova.conf.\n"
            "The allocation ratios are the ones the blueprint was sized with; written out so Nova\n"
            "never falls back to its initial_*_allocation_ratio defaults."),
        "config/glance/glance-api.conf": _ini(
            {"DEFAULT": {"show_image_direct_url": True}},
            "Glance on RBD: publish the image location so Nova and Cinder clone images\n"
            "(copy-on-write) instead of downloading and copying them."),
    }
    for r in reservations(site, policy):
        files[f"config/nova/{r.host}/nova.conf"] = _ini(
            {"DEFAULT": {"reserved_host_memory_mb": r.reserved_host_memory_mb,
                         "reserved_host_cpus": r.reserved_host_cpus}},
            f"{r.host} is hyperconverged: it runs {r.osds} Ceph OSD(s). What sizing kept from the VMs\n"
            "(the host's own share plus each OSD's RAM and cores) is kept from Nova's placement here.")
    return files
