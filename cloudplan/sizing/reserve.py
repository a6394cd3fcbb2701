"""What a host's OSDs keep from its VMs: one definition for sizing and for the drain check.

An OSD takes whole physical cores (both hardware threads of each: a sibling thread shares
the core's execution units, and Ceph's guidance is per core) and its RAM. The sizing knows
each CPU's threads per core; the drain check reads hosts from an inventory or from
``openstack hypervisor list``, which count threads only, and takes the SMT-2 of every
server CPU in the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cloudplan.spec import OSD_CORES, OSD_RAM_GIB, Tier

# Hardware threads per physical core when a host does not say (SMT-2: every EPYC and Xeon
# server CPU of the catalog).
SMT_THREADS_PER_CORE = 2.0


@dataclass(frozen=True)
class OsdReservation:
    cores: float      # physical cores kept for the OSDs
    threads: float    # the hardware threads of those cores
    ram_gib: float    # RAM kept for the OSDs


def osd_reservation(drives: Mapping[Tier, int], threads_per_core: float = SMT_THREADS_PER_CORE,
                    osd_cores: Mapping[Tier, float] | None = None,
                    osd_ram_gib: Mapping[Tier, float] | None = None) -> OsdReservation:
    """Cores, threads and RAM the OSDs of ``drives`` (one OSD per data drive) keep, at the
    policy's per-OSD figures (default: :data:`cloudplan.spec.OSD_CORES`, ``OSD_RAM_GIB``)."""
    per_core = osd_cores or {Tier(k): v for k, v in OSD_CORES.items()}
    per_ram = osd_ram_gib or {Tier(k): v for k, v in OSD_RAM_GIB.items()}
    cores = sum(per_core[t] * n for t, n in drives.items() if n)
    ram = sum(per_ram[t] * n for t, n in drives.items() if n)
    return OsdReservation(cores, cores * threads_per_core, ram)
