"""What each storage tier must hold: its data pools with their protection, plus the pools
Ceph cannot erasure-code.

RBD image metadata (an EC data pool still needs a replicated pool for image headers
and omap), the RGW bucket index (omap) and CephFS metadata must be replicated. For
every erasure-coded tier they are placed, 3x replicated, on the fastest tier the
workload replicates; without one, on the fastest tier itself under a replicated rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudplan.catalog import Drive
from cloudplan.spec import HDD_COLOCATED_WRITE_COST, OSD_CORES, Protection, Tier, Workload

# Usable TiB of the replicated-only pools per usable TiB of an EC tier's data. Ceph's
# CephFS docs put its metadata pool at "at most a few gigabytes" and RBD headers and
# the RGW index are omap of a few KiB per image or object: 1 % is a deliberately
# generous named default, overridable in code.
REPLICATED_METADATA_SHARE = 0.01
METADATA_PROTECTION = Protection(replicas=3)
TIER_ORDER = (Tier.nvme, Tier.ssd, Tier.hdd)


@dataclass(frozen=True)
class TierDemand:
    tier: Tier
    usable_tib: float             # data pools plus replicated-only pools it hosts, grown
    metadata_usable_tib: float    # of which: replicated-only pools of EC tiers
    iops: float | None            # client IOPS, grown
    read_fraction: float          # of those, reads
    protection: Protection        # of the tier's data pools
    copies: int                   # size, or k+m
    per_copy_tib: float           # raw TiB each copy (or chunk) needs below nearfull

    @property
    def raw_tib(self) -> float:
        return self.copies * self.per_copy_tib


def metadata_home(wl: Workload) -> Tier | None:
    """The tier that holds the replicated-only pools of the EC tiers (None without EC tiers)."""
    grown = {s.tier: wl.grown_storage(s) for s in wl.storage if s.usable_tib > 0}
    if not any(g.protection.replicas is None for g in grown.values()):
        return None
    replicated = [t for t in TIER_ORDER if t in grown and grown[t].protection.replicas is not None]
    return replicated[0] if replicated else next(t for t in TIER_ORDER if t in grown)


def tier_demands(wl: Workload) -> list[TierDemand]:
    """Per tier (in the workload's order): usable TiB, protection and the CRUSH per-copy need.

    A tier of n copies (size, or k+m chunks of 1/k each) needs per_copy = usable / nearfull / (1 or k)
    raw TiB on each of n distinct failure domains. Metadata pools hosted on a replicated tier
    add to its usable TiB. On an EC tier (no replicated tier at all) they add their raw TiB
    spread over the tier's n chunks, n >= 3: the same raw total, each domain's share at most
    one chunk plus one metadata copy (a close, slightly optimistic approximation for a 1 % pool).
    """
    home = metadata_home(wl)
    meta = sum(wl.grown_storage(s).usable_tib for s in wl.storage
               if wl.grown_storage(s).protection.replicas is None) * REPLICATED_METADATA_SHARE
    nearfull = wl.policy.nearfull_ratio
    out = []
    for s in wl.storage:
        g = wl.grown_storage(s)
        prot = g.protection
        extra = meta if s.tier == home else 0.0
        copies = prot.min_hosts
        if prot.replicas is not None:
            per_copy = (g.usable_tib + extra) / nearfull
        else:
            per_copy = g.usable_tib / nearfull / prot.data_chunks + extra * METADATA_PROTECTION.replicas / nearfull / copies
        out.append(TierDemand(s.tier, g.usable_tib + extra, extra, g.iops, g.read_fraction, prot, copies, per_copy))
    return out


def osd_client_iops(wl: Workload, drive: Drive, db_on_flash: bool = False) -> float:
    """Client IOPS one OSD on ``drive`` serves at the tier's read/write mix.

    Reads cost one OSD op; a write costs the protection's penalty in backend writes
    (size, or k+m). Each op is bounded by the OSD's CPU (per-OSD figures scaled by
    its cores) and by the drive: the OSD serves X client IOPS when
    X * (f / reads + (1 - f) * penalty / writes) <= 1. An HDD whose WAL and DB share
    the spindle writes each backend write HDD_COLOCATED_WRITE_COST times; with its
    block.db on flash (``db_on_flash``), once.
    """
    td = next((t for t in tier_demands(wl) if t.tier == drive.tier), None)
    if td is None:
        return 0.0
    pol, t = wl.policy, drive.tier
    scale = pol.osd_cores[t] / OSD_CORES[t.value]
    reads = min(drive.iops, pol.osd_read_iops[t] * scale)
    device_writes = drive.device_write_iops
    if t == Tier.hdd and not db_on_flash:
        device_writes /= HDD_COLOCATED_WRITE_COST
    writes = min(device_writes, pol.osd_write_iops[t] * scale)
    f = td.read_fraction
    return 1.0 / (f / reads + (1.0 - f) * td.protection.write_penalty / writes)
