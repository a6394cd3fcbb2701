"""BlueStore block.db (and WAL) of HDD OSDs on flash drives of the same chassis.

A storage chassis with 3.5" bays often has a few NVMe (or SATA) bays beside them.
Putting the HDD OSDs' RocksDB there takes the WAL and metadata writes off the
spindles. ``ceph-volume lvm batch`` (what cephadm's ``db_devices`` runs) splits
each DB device evenly among the OSDs it serves, so a device serving ``m`` OSDs
needs ``m * share * data capacity``.

What a DB device's loss costs: every OSD whose block.db it holds fails with it
(BlueStore cannot run without its DB). Those OSDs are all on one host, so the
host failure domain (and the rack one) already covers the loss: the sizing keeps
the same N+1 capacity and adds nothing for it; the blueprint says how many OSDs
one DB device takes down, which is what its recovery must backfill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudplan.catalog import Bay, Chassis, Drive
from cloudplan.spec import Tier

# Flash bays a DB device may sit in, preferred first.
DB_BAYS = (Bay.nvme, Bay.sata)


@dataclass(frozen=True)
class DbLayout:
    drive: Drive            # the flash drive model holding block.db
    count: int              # DB devices per node
    osds_per_device: int    # HDD OSDs whose block.db one device holds (ceil(n / count))
    db_tb_per_osd: float    # block.db of one OSD, decimal TB (share x data drive)

    @property
    def used_tb_per_device(self) -> float:
        return self.osds_per_device * self.db_tb_per_osd


def db_layout(chassis: Chassis, data: Drive, n_data: int, drives: list[Drive], share: float) -> DbLayout | None:
    """The cheapest flash drive, one per flash bay of the first bay kind the chassis has (at most one
    per OSD), whose capacity holds block.db of its share of the OSDs; None when the chassis has no
    flash bay, the data drives are not HDDs (or do not fit it), or no drive is large enough.

    Every flash bay gets a device: the more devices, the fewer OSDs one device's loss takes down.
    """
    if data.tier != Tier.hdd or not 0 < n_data <= chassis.bays.get(data.bay, 0):
        return None
    bay = next((b for b in DB_BAYS if chassis.bays.get(b, 0) > 0), None)
    if bay is None:
        return None
    count = min(chassis.bays[bay], n_data)
    per_osd = share * data.capacity_tb
    per_device = math.ceil(n_data / count)
    fits = [d for d in drives if d.bay == bay and d.tier != Tier.hdd and d.capacity_tb >= per_device * per_osd - 1e-9]
    if not fits:
        return None
    best = min(fits, key=lambda d: (d.price_usd, d.capacity_tb, d.name))
    return DbLayout(best, count, per_device, per_osd)
