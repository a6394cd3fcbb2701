"""Node options: every buildable server configuration with its capacities and cost.

The MILP chooses how many of each option to buy, so its size grows with the
number of distinct configurations, not with the number of VMs or nodes. Options
that another option beats on every capacity at no more cost, space and power
are dropped before the model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import CPU, DIMM, Catalog, Chassis, Drive, PriceBook
from cloudplan.errors import Infeasible
from cloudplan.sizing.bluestore import DbLayout, db_layout
from cloudplan.sizing.reserve import OsdReservation, osd_reservation
from cloudplan.sizing.tiers import osd_client_iops
from cloudplan.spec import Hyperconverged, Policy, Tier, Workload

# What a dedicated storage host keeps for its OS besides the OSDs and the Ceph daemons:
# Red Hat's Ceph hardware guide's 16 GB baseline per OSD host, and two physical cores.
STORAGE_HOST_CORES = 2
STORAGE_HOST_RAM_GIB = 16.0
# Fractions of the bays a storage option may fill: fewer drives per node let small
# tiers spread over enough hosts for their replicas.
FILL_LEVELS = (1.0, 0.5, 0.25)
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class NodeOption:
    role: NodeRole
    chassis: Chassis
    cpu: CPU
    dimm: DIMM
    dimm_count: int
    drive: Drive | None = None
    drive_count: int = 0
    capex_usd: float = 0.0
    power_w: float = 0.0
    vcpus: float = 0.0            # offered to VMs, after overcommit and reservations
    vm_ram_gib: float = 0.0       # offered to VMs
    raw_tib: dict[Tier, float] = field(default_factory=dict)
    iops: dict[Tier, float] = field(default_factory=dict)
    osd_cores: float = 0.0        # physical cores kept for the OSDs
    osd_ram_gib: float = 0.0      # RAM kept for the OSDs
    peak_power_w: float = 0.0     # CPUs at TDP, every DIMM and drive at peak: what the rack feed must carry
    _factors: tuple[float, float] = (1.0, 1.0)   # the price book's CPU and DIMM what-if multipliers
    db: DbLayout | None = None    # flash drives holding the HDD OSDs' block.db and WAL
    local_drive: Drive | None = None   # controllers: fast local disks (no OSD), priced in capex
    local_drive_count: int = 0

    @cached_property
    def key(self) -> str:
        # Cached: the MILP, the LP ranking and the packing look options up by key thousands of times.
        k = f"{self.role.value}|{self.chassis.name}|{self.chassis.sockets}x{self.cpu.name}|{self.dimm_count}x{self.dimm.name}"
        k += f"|{self.drive_count}x{self.drive.name}" if self.drive else ""
        k += f"|local:{self.local_drive_count}x{self.local_drive.name}" if self.local_drive else ""
        return k + (f"|db:{self.db.count}x{self.db.drive.name}" if self.db else "")

    @property
    def group(self) -> str:
        """Configurations in one group serve the same purpose: compute, or a tier's OSDs."""
        return self.role.value + (f":{self.drive.tier.value}" if self.drive else "")

    @property
    def threads(self) -> int:
        return self.chassis.sockets * self.cpu.threads

    @property
    def cores(self) -> int:
        return self.chassis.sockets * self.cpu.cores

    @property
    def ram_gib(self) -> int:
        return self.dimm.size_gib * self.dimm_count

    @property
    def height_u(self) -> int:
        return self.chassis.form_factor_u

    @property
    def cpu_usd(self) -> float:
        return self.chassis.sockets * self.cpu.price_usd * self._factors[0]

    @property
    def dimm_usd(self) -> float:
        return self.dimm_count * self.dimm.price_usd * self._factors[1]

    def tco_usd(self, pb: PriceBook, months: float) -> float:
        return lifetime_cost(self.capex_usd, self.power_w, pb, months)


def lifetime_cost(capex_usd: float, power_w: float, pb: PriceBook, months: float) -> float:
    """Capex plus support and energy (with PUE) over ``months``."""
    support = capex_usd * pb.support_pct_per_year / 100.0 * months / 12.0
    energy = power_w / 1000.0 * pb.pue * HOURS_PER_MONTH * months * pb.usd_per_kwh
    return capex_usd + support + energy


def _hardware(pb: PriceBook, ch: Chassis, cpu: CPU, dimm: DIMM, n_dimm: int,
              drive: Drive | None, n_drive: int, db: DbLayout | None = None) -> tuple[float, float, float]:
    """Capex, typical power (the energy bill: CPUs at the load factor) and peak power (the rack budget)."""
    capex = (ch.base_price_usd + ch.sockets * cpu.price_usd * pb.cpu_price_factor
             + n_dimm * dimm.price_usd * pb.dimm_price_factor)
    power = ch.base_power_w + ch.sockets * cpu.tdp_w * pb.load_factor + n_dimm * dimm.power_w
    peak = ch.base_power_w + ch.sockets * cpu.tdp_w + n_dimm * dimm.power_w
    if drive is not None:
        capex += n_drive * drive.price_usd * pb.drive_price_factor
        power += n_drive * drive.power_w
        peak += n_drive * drive.peak_draw_w
    if db is not None:
        capex += db.count * db.drive.price_usd * pb.drive_price_factor
        power += db.count * db.drive.power_w
        peak += db.count * db.drive.peak_draw_w
    return capex, power, peak


def _vm_capacity(policy: Policy, threads: int, ram_gib: float, osds: OsdReservation) -> tuple[float, float]:
    """vCPUs and VM RAM a host offers Nova after its reservations.

    The OSDs keep their physical cores' threads and their RAM (:func:`osd_reservation`, the
    same the drain check subtracts). RAM: Nova's reserved_host_memory plus OSDs x RAM per OSD
    (Red Hat's HCI guide); the per-VM overhead is charged to each VM (:meth:`Workload.vm_ram_gib`).
    """
    free = threads - policy.reserved_host_cores - osds.threads
    vcpus = max(0.0, free) * policy.cpu_allocation_ratio
    ram = max(0.0, ram_gib - policy.reserved_host_memory_mb / 1024.0 - osds.ram_gib) * policy.ram_allocation_ratio
    return vcpus, ram


def _make(pb: PriceBook, policy: Policy, role: NodeRole, ch: Chassis, cpu: CPU, dimm: DIMM, n_dimm: int,
          drive: Drive | None = None, n_drive: int = 0, osd_iops: float = 0.0,
          db: DbLayout | None = None) -> NodeOption:
    """One build; ``osd_iops`` is the client IOPS one of its OSDs serves (see :func:`osd_client_iops`)."""
    capex, power, peak = _hardware(pb, ch, cpu, dimm, n_dimm, drive, n_drive, db)
    raw, iops = {}, {}
    if drive is not None and n_drive:
        raw = {drive.tier: n_drive * drive.capacity_tib}
        iops = {drive.tier: n_drive * osd_iops}
    osds = osd_reservation({drive.tier: n_drive} if drive is not None else {}, cpu.threads / cpu.cores,
                           policy.osd_cores, policy.osd_ram_gib)
    osd_cores, osd_ram = osds.cores, osds.ram_gib
    vcpus = ram = 0.0
    if role in (NodeRole.compute, NodeRole.hyperconverged):
        vcpus, ram = _vm_capacity(policy, ch.sockets * cpu.threads, dimm.size_gib * n_dimm, osds)
    return NodeOption(role, ch, cpu, dimm, n_dimm, drive, n_drive, capex, power, vcpus, ram, raw, iops,
                      osd_cores, osd_ram, peak, (pb.cpu_price_factor, pb.dimm_price_factor), db)


def _fits_all(opt: NodeOption, wl: Workload) -> bool:
    return all(f.vcpus <= opt.vcpus + 1e-9 and wl.vm_ram_gib(f) <= opt.vm_ram_gib + 1e-9
               for f in wl.flavors if f.count > 0)


def _base_configs(cat: Catalog, role: str):
    for ch in cat.chassis:
        if role not in ch.roles:
            continue
        for cpu in cat.cpus_for(ch):
            for dimm, n in ch.ram_configs(cat.dimms):
                yield ch, cpu, dimm, n


def largest_flavor_check(wl: Workload, cat: Catalog) -> None:
    """Explain, before any solve, a flavor that no host of the catalog can carry."""
    pol = wl.policy
    best_ram = best_vcpu = 0.0
    for ch, cpu, dimm, n in _base_configs(cat, "compute"):
        v, r = _vm_capacity(pol, ch.sockets * cpu.threads, dimm.size_gib * n, osd_reservation({}))
        best_ram, best_vcpu = max(best_ram, r), max(best_vcpu, v)
    for f in wl.flavors:
        if f.count and wl.vm_ram_gib(f) > best_ram + 1e-9:
            raise Infeasible(
                f"flavor {f.name} needs {f.ram_gib:g} GiB RAM (+ {pol.vm_overhead_gib:g} GiB hypervisor overhead); "
                f"the largest chassis holds "
                f"{best_ram:g} GiB for VMs (after the {pol.reserved_host_memory_mb} MiB host reservation, "
                f"RAM allocation ratio {pol.ram_allocation_ratio:g})", requirement=f"flavors[{wl.flavors.index(f)}].ram_gib")
        if f.count and f.vcpus > best_vcpu + 1e-9:
            raise Infeasible(
                f"flavor {f.name} needs {f.vcpus} vCPUs; the largest host offers {best_vcpu:g} vCPUs "
                f"(CPU allocation ratio {pol.cpu_allocation_ratio:g})", requirement=f"flavors[{wl.flavors.index(f)}].vcpus")


def compute_options(wl: Workload, cat: Catalog) -> list[NodeOption]:
    pb = cat.price_book
    opts = [_make(pb, wl.policy, NodeRole.compute, *cfg) for cfg in _base_configs(cat, "compute")]
    return [o for o in opts if _fits_all(o, wl)]


def _fills(bays: int) -> list[int]:
    return sorted({max(1, int(bays * f)) for f in FILL_LEVELS}, reverse=True)


def storage_options(wl: Workload, cat: Catalog, tiers: set[Tier]) -> list[NodeOption]:
    """Dedicated OSD hosts: per chassis, drive model, fill and block.db placement, the cheapest CPU/RAM
    that carries the OSDs."""
    pol = wl.policy
    out: list[NodeOption] = []
    for ch in cat.chassis:
        if "storage" not in ch.roles:
            continue
        for drive in cat.drives:
            bays = ch.bays.get(drive.bay, 0)
            if drive.tier not in tiers or bays == 0:
                continue
            least = math.ceil(pol.min_storage_bay_fill * sum(ch.bays.values()) - 1e-9)
            for n in (n for n in _fills(bays) if n >= least):
                for db in _db_choices(pol, ch, drive, n, cat):
                    opt = _storage_build(wl, cat, ch, drive, n, db)
                    if opt is not None:
                        out.append(opt)
    return out


def _db_choices(pol: Policy, ch: Chassis, drive: Drive, n: int, cat: Catalog) -> list[DbLayout | None]:
    """Where an HDD build's block.db goes: on its own spindles (None), on flash, or either (the
    optimizer chooses, ``policy.hdd_db_on_flash`` unset). Flash-tier builds have no choice."""
    layout = db_layout(ch, drive, n, cat.drives, pol.block_db_share)
    if layout is None or pol.hdd_db_on_flash is False:
        return [None]
    return [layout] if pol.hdd_db_on_flash else [None, layout]


def _storage_build(wl: Workload, cat: Catalog, ch: Chassis, drive: Drive, n: int,
                   db: DbLayout | None) -> NodeOption | None:
    """The cheapest CPU and RAM that carry ``n`` OSDs on ``drive`` in chassis ``ch``."""
    pb, pol = cat.price_book, wl.policy
    need_cores = n * pol.osd_cores[drive.tier] + STORAGE_HOST_CORES
    # Every storage host keeps room for a monitor and a manager: cephadm puts them on storage hosts.
    need_ram = n * pol.osd_ram_gib[drive.tier] + STORAGE_HOST_RAM_GIB + pol.mon_ram_gib + pol.mgr_ram_gib
    iops = osd_client_iops(wl, drive, db_on_flash=db is not None)
    cands = [_make(pb, pol, NodeRole.storage, ch, cpu, dimm, k, drive, n, iops, db)
             for cpu in cat.cpus_for(ch) for dimm, k in ch.ram_configs(cat.dimms)
             if ch.sockets * cpu.cores >= need_cores - 1e-9 and dimm.size_gib * k >= need_ram - 1e-9]
    return min(cands, key=lambda o: (o.capex_usd, o.power_w, o.key)) if cands else None


def hyperconverged_options(wl: Workload, cat: Catalog, compute: list[NodeOption], tiers: set[Tier]) -> list[NodeOption]:
    pb, pol = cat.price_book, wl.policy
    per_osd = {d.name: osd_client_iops(wl, d) for d in cat.drives}
    out = []
    for base in compute:
        for drive in cat.drives:
            bays = base.chassis.bays.get(drive.bay, 0)
            if drive.tier not in tiers or bays == 0:
                continue
            for n in _fills(bays):
                o = _make(pb, pol, NodeRole.hyperconverged, base.chassis, base.cpu, base.dimm, base.dimm_count, drive, n,
                          per_osd[drive.name])
                if _fits_all(o, wl):
                    out.append(o)
    return out


def _vector(o: NodeOption, tiers: list[Tier]) -> tuple[float, ...]:
    return (o.vcpus, o.vm_ram_gib, *(o.raw_tib.get(t, 0.0) for t in tiers), *(o.iops.get(t, 0.0) for t in tiers))


def prune_dominated(opts: list[NodeOption], pb: PriceBook, months: float) -> list[NodeOption]:
    """Drop options that another beats or equals on every capacity at no more TCO, U and power.

    Valid under N+1 too: swapping a dominated node for its dominator adds at least
    as much to the total as it adds to the largest single loss.
    """
    tiers = sorted({t for o in opts for t in o.raw_tib}, key=lambda t: t.value)
    rows = sorted(((o.tco_usd(pb, months), o.height_u, o.power_w, _vector(o, tiers), o) for o in opts),
                  key=lambda r: (r[0], r[1], r[2], r[4].key))
    if not rows:
        return []
    cost = np.array([r[0] for r in rows])
    u = np.array([r[1] for r in rows])
    power = np.array([r[2] for r in rows])
    vec = np.array([r[3] for r in rows], dtype=float)
    kept: list[int] = []
    # Rows come cheapest first, so only kept rows before a row can dominate it; one
    # vectorized test per row keeps a catalog of a thousand builds well under a second.
    for i in range(len(rows)):
        k = np.array(kept, dtype=np.int64)
        dominated = ((cost[k] <= cost[i] + 1e-6) & (u[k] <= u[i]) & (power[k] <= power[i] + 1e-6)
                     & np.all(vec[k] >= vec[i] - 1e-9, axis=1))
        if not dominated.any():
            kept.append(i)
    return [rows[i][4] for i in kept]


def build_options(wl: Workload, cat: Catalog, tiers: set[Tier]) -> list[NodeOption]:
    """Every candidate VM-carrying or storage option for this workload, pruned."""
    largest_flavor_check(wl, cat)
    compute = compute_options(wl, cat)
    opts = list(compute)
    mode = wl.policy.hyperconverged
    if tiers and mode != Hyperconverged.never:
        opts += hyperconverged_options(wl, cat, compute, tiers)
    if tiers and mode != Hyperconverged.always:
        opts += storage_options(wl, cat, tiers)
    return prune_dominated(opts, cat.price_book, wl.horizon_months)


def count_bound(opt: NodeOption, demand: dict[str, float], extra: int, capacity=None) -> int:
    """An upper bound on how many of ``opt`` an optimal plan can use (big-M for the used indicator).

    ``capacity(opt, resource)`` is what one node adds (default :func:`opt_capacity`)."""
    need = 0
    for res, d in demand.items():
        cap = (capacity or opt_capacity)(opt, res)
        if cap > 0 and d > 0:
            need = max(need, math.ceil(d / cap))
    return need + extra


def opt_capacity(opt: NodeOption, resource: str) -> float:
    """Capacity of one node of ``opt`` in a named resource: vcpu, ram, raw:<tier>, iops:<tier>."""
    if resource == "vcpu":
        return opt.vcpus
    if resource == "ram":
        return opt.vm_ram_gib
    kind, _, tier = resource.partition(":")
    table = opt.raw_tib if kind == "raw" else opt.iops
    return table.get(Tier(tier), 0.0)
