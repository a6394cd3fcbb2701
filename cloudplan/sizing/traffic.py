"""Storage traffic against the NICs, and how long the cluster takes to heal.

Per storage or hyperconverged node, per direction (the NICs are full duplex):
- client and replication: the client IOPS its OSDs are credited with, at CLIENT_IO_KIB,
  reads once and writes with the protection's extra copies (size - 1, or (k+m-1)/k
  chunks) sent on to the other OSDs;
- recovery: each OSD backfilling at its mClock reservation for background recovery
  (MCLOCK_RECOVERY_SHARE of the OSD's sequential bandwidth, capped by the drive).
A build whose NICs (ports x the slower of NIC and leaf port) cannot carry the sum is
dropped, and the plan's notes say which and why.

Recovery time after losing the largest host (or rack): the data it held (its raw TiB
at the tier's fill) over the recovery bandwidth of the survivors, each node giving the
smaller of its OSDs' recovery rate and what its NICs have left after client traffic.
CRUSH spreads the lost placement groups over every surviving OSD, so this is the
time with recovery evenly spread: a lower bound on the real time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudplan.blueprint import TierRecovery
from cloudplan.catalog import Catalog, SwitchRole
from cloudplan.errors import Infeasible
from cloudplan.sizing.options import NodeOption
from cloudplan.sizing.tiers import tier_demands
from cloudplan.spec import FailureDomain, Tier, Workload

# The block size the per-OSD IOPS figures are for (Micron's reference architecture: 4 KiB random).
CLIENT_IO_KIB = 4.0
# Ceph's osd_mclock_max_sequential_bandwidth_hdd / _ssd defaults (150 MiB/s, 1200 MiB/s):
# the bandwidth mClock assumes an OSD has; NVMe OSDs count as ssd.
OSD_SEQUENTIAL_MIBPS = {"hdd": 150.0, "ssd": 1200.0, "nvme": 1200.0}
# The mClock 'balanced' profile (the default osd_mclock_profile) reserves 50 % of an OSD's
# capacity for background recovery (Ceph docs, mClock config reference).
MCLOCK_RECOVERY_SHARE = 0.5
MIB = 2**20
GBIT = 1e9


@dataclass(frozen=True)
class Traffic:
    nic_gbps: float
    client_gbps: float        # client and replication
    recovery_gbps: float

    @property
    def total_gbps(self) -> float:
        return self.client_gbps + self.recovery_gbps

    @property
    def fits(self) -> bool:
        return self.total_gbps <= self.nic_gbps + 1e-9


def nic_gbps(opt: NodeOption, cat: Catalog) -> float:
    leaf = cat.cheapest(SwitchRole.leaf)
    return opt.chassis.nic_ports * min(opt.chassis.nic_speed_gbps, leaf.port_speed_gbps)


def osd_recovery_gbps(opt: NodeOption) -> float:
    """What one OSD of ``opt`` backfills at: mClock's recovery reservation, capped by the drive."""
    d = opt.drive
    seq = min(OSD_SEQUENTIAL_MIBPS[d.tier.value], d.throughput_mbps * 1e6 / MIB)
    return MCLOCK_RECOVERY_SHARE * seq * MIB * 8 / GBIT


def _extra_copies(wl: Workload, tier: Tier) -> tuple[float, float]:
    """(read fraction, bytes sent on to other OSDs per byte written) of ``tier``."""
    td = next(t for t in tier_demands(wl) if t.tier == tier)
    p = td.protection
    extra = p.replicas - 1 if p.replicas is not None else (p.ec_k + p.ec_m - 1) / p.ec_k
    return td.read_fraction, extra


def node_traffic(opt: NodeOption, wl: Workload, cat: Catalog) -> Traffic | None:
    """The traffic one node of ``opt`` must carry (None: it holds no OSD)."""
    if opt.drive is None or not opt.drive_count:
        return None
    tier = opt.drive.tier
    f, extra = _extra_copies(wl, tier)
    io_bits = CLIENT_IO_KIB * 1024 * 8
    client = opt.iops.get(tier, 0.0) * io_bits * (f + (1 - f) * (1 + extra)) / GBIT
    return Traffic(nic_gbps(opt, cat), client, opt.drive_count * osd_recovery_gbps(opt))


def nic_filter(options: list[NodeOption], wl: Workload, cat: Catalog) -> tuple[list[NodeOption], str | None]:
    """Drop builds whose NICs cannot carry their traffic; the note says which and why."""
    kept, dropped = [], []
    for o in options:
        t = node_traffic(o, wl, cat)
        (kept if t is None or t.fits else dropped).append((o, t))
    if not dropped:
        return [o for o, _ in kept], None
    o, t = max(dropped, key=lambda d: (d[1].total_gbps - d[1].nic_gbps, d[0].key))
    worst = min(dropped, key=lambda d: (d[1].total_gbps - d[1].nic_gbps, d[0].key))
    note = (f"{len(dropped)} storage or hyperconverged build(s) dropped: their NICs cannot carry client + replication "
            f"+ recovery traffic (e.g. {worst[0].drive_count}x {worst[0].drive.name} in {worst[0].chassis.name}: "
            f"{worst[1].client_gbps:.1f} + {worst[1].recovery_gbps:.1f} Gb/s against {worst[1].nic_gbps:g} Gb/s; "
            f"at worst {o.drive_count}x {o.drive.name}: {t.total_gbps:.1f} Gb/s)")
    return [o for o, _ in kept], note


def recovery_hours(domains: list[list[tuple[NodeOption, int]]], wl: Workload, cat: Catalog, tier: Tier,
                   stored_raw_tib: float) -> tuple[float, float, float] | None:
    """(TiB to move, recovery Gb/s, hours) after losing the domain that holds the most of ``tier``.

    ``domains``: per failure domain (host or rack), the nodes in it as (option, count).
    """
    def raw(dom):
        return sum(o.raw_tib.get(tier, 0.0) * n for o, n in dom)

    total = sum(raw(d) for d in domains)
    if total <= 0 or stored_raw_tib <= 0:
        return None
    lost = max(range(len(domains)), key=lambda i: raw(domains[i]))
    data_tib = raw(domains[lost]) * min(1.0, stored_raw_tib / total)
    gbps = 0.0
    for i, dom in enumerate(domains):
        if i == lost:
            continue
        for o, n in dom:
            t = node_traffic(o, wl, cat) if o.drive is not None and o.drive.tier == tier else None
            if t is not None:
                gbps += n * max(0.0, min(t.recovery_gbps, t.nic_gbps - t.client_gbps))
    if gbps <= 0:
        return data_tib, 0.0, float("inf")
    return data_tib, gbps, data_tib * 2**40 * 8 / (gbps * GBIT) / 3600.0


def _group_key(o: NodeOption) -> str:
    """The blueprint's key (:attr:`NodeGroup.key`) of the group ``o`` becomes."""
    k = f"{o.role.value}:{o.chassis.name}:{o.chassis.sockets}x{o.cpu.name}:{o.dimm_count}x{o.dimm.name}"
    return k + (f":{o.drive_count}x{o.drive.name}" if o.drive else "")


def _domains(bp, chosen: list[tuple[NodeOption, int]], tier: Tier) -> list[list[tuple[NodeOption, int]]]:
    holders = [(o, n) for o, n in chosen if o.raw_tib.get(tier)]
    if bp.workload.policy.failure_domain == FailureDomain.host:
        return [[(o, 1)] for o, n in holders for _ in range(n)]
    from cloudplan.layout import rack_plan  # layout reads blueprints; import late to keep sizing importable alone
    by_key = {_group_key(o): o for o, _ in holders}
    try:
        plan = rack_plan(bp)
    except Infeasible:
        return [[(o, n // max(1, bp.racks_count)) for o, n in holders]] * max(1, bp.racks_count)
    return [[(by_key[g.key], 1) for g in groups if g.key in by_key] for _, groups in plan]


def tier_recovery(bp, chosen: list[tuple[NodeOption, int]], cat: Catalog) -> list[TierRecovery]:
    """Per tier: the data the largest failure domain held, the survivors' recovery bandwidth, the
    hours to heal, and the busiest build's traffic against its NICs."""
    wl = bp.workload
    out = []
    for td in tier_demands(wl):
        stored = td.usable_tib / td.protection.efficiency
        got = recovery_hours(_domains(bp, chosen, td.tier), wl, cat, td.tier, stored)
        if got is None:
            continue
        data, gbps, hours = got
        busiest = max((t for o, _ in chosen if o.raw_tib.get(td.tier) and (t := node_traffic(o, wl, cat))),
                      key=lambda t: t.total_gbps, default=None)
        out.append(TierRecovery(tier=td.tier, lost=f"largest {wl.policy.failure_domain.value}", data_tib=data,
                                recovery_gbps=gbps, hours=hours if math.isfinite(hours) else None,
                                nic_gbps=busiest.nic_gbps if busiest else None,
                                peak_traffic_gbps=busiest.total_gbps if busiest else None))
    return out
