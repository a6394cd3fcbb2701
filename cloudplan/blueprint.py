"""The Blueprint: what `cloudplan size` decided, in a file the later stages read.

It embeds the workload it was sized for, so `layout`, `report` and the upgrade
rehearsal need no other input to know the demand behind each number.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from cloudplan.spec import Tier, Workload


class NodeRole(str, Enum):
    compute = "compute"
    storage = "storage"
    hyperconverged = "hyperconverged"
    control = "control"
    network = "network"


class Out(BaseModel):
    """Base for output models: tolerant of fields added by newer versions."""

    # Finite numbers only (a blueprint is also an input: an .inf capacity crashed the report);
    # the solver's gap, which may truly be infinite, says so itself.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class DriveLine(Out):
    model: str = Field(description="drive model")
    tier: Tier = Field(description="storage tier")
    count: int = Field(description="drives per node")
    capacity_tb: float = Field(description="capacity per drive, decimal TB")
    unit_price_usd: float = Field(description="price per drive, USD")


class NodeGroup(Out):
    role: NodeRole = Field(description="compute, storage, hyperconverged or control")
    chassis: str = Field(description="catalog chassis")
    bmc: str = Field(default="ipmi", description="BMC protocol of the chassis (ipmi | redfish), from the catalog")
    cpu: str = Field(description="CPU model")
    sockets: int = Field(ge=0, description="CPUs per node")
    cores: int = Field(ge=0, description="physical cores per node")
    threads: int = Field(ge=0, description="hardware threads per node")
    ram_gib: int = Field(ge=0, description="RAM per node, GiB")
    dimm: str = Field(description="DIMM model")
    dimm_count: int = Field(ge=0, description="DIMMs per node")
    drives: list[DriveLine] = Field(default_factory=list, description="data drives per node")
    db_drives: list[DriveLine] = Field(default_factory=list, description="flash drives per node holding the "
                                       "block.db and WAL of its HDD OSDs (no OSD of their own)")
    osds_per_db_drive: int | None = Field(default=None, description="HDD OSDs one DB drive serves: what its loss "
                                          "takes down with it")
    local_drives: list[DriveLine] = Field(default_factory=list, description="fast local disks per node that hold "
                                          "no OSD (controllers: Galera, RabbitMQ, OVN databases)")
    count: int = Field(ge=0, description="number of nodes")
    height_u: int = Field(ge=1, description="rack units per node")
    unit_price_usd: float = Field(ge=0, description="price per node with CPUs, DIMMs and drives, USD")
    power_w: float = Field(ge=0, description="typical power per node, W (what the energy bill counts)")
    peak_power_w: float | None = Field(default=None, ge=0, description="peak power per node, W: CPUs at TDP, every DIMM "
                                       "and drive active (what the rack's power budget must carry)")
    vcpu_capacity: float = Field(ge=0, default=0, description="vCPUs per node offered to VMs after overcommit and reservations")
    vm_ram_gib: float = Field(ge=0, default=0, description="RAM per node offered to VMs, GiB")
    cpu_price_usd: float | None = Field(default=None, description="price of the node's CPUs (all sockets), USD")
    dimm_price_usd: float | None = Field(default=None, description="price of the node's DIMMs (all of them), USD")
    osd_cores_reserved: float = Field(default=0, description="physical cores per node kept for its OSDs")
    osd_ram_gib_reserved: float = Field(default=0, description="RAM per node kept for its OSDs, GiB")
    nova_reserved_host_memory_mb: int | None = Field(
        default=None, description="Nova reserved_host_memory_mb for VM hosts: the host's own plus the OSDs' "
        "(per-VM overhead is in each VM's footprint, so add instances x overhead if Nova should enforce it)")
    new: bool = Field(default=False, description="bought by this plan's expansion (false: already installed, or "
                      "a plan sized from nothing)")
    purchased_on: str | None = Field(default=None, description="ISO date the installed nodes were bought "
                                     "(an expansion keeps it; new nodes have none until bought)")

    @property
    def key(self) -> str:
        """Stable identifier of the configuration (one per group)."""
        drives = "+".join(f"{d.count}x{d.model}" for d in self.drives)
        db = "+".join(f"{d.count}x{d.model}" for d in self.db_drives)
        return f"{self.role.value}:{self.chassis}:{self.sockets}x{self.cpu}:{self.dimm_count}x{self.dimm}" + (
            f":{drives}" if drives else "") + (f":db:{db}" if db else "")


class SwitchGroup(Out):
    role: str = Field(description="leaf, spine or management")
    model: str = Field(description="switch model")
    count: int = Field(ge=0, description="number of switches")
    unit_price_usd: float = Field(ge=0, description="price per switch, USD")
    power_w: float = Field(ge=0, description="typical power per switch, W")
    height_u: int = Field(default=1, ge=1, description="rack units per switch")


class CableLine(Out):
    kind: str = Field(description="dac-25g, dac-100g, aoc-100g, optics-100g (two transceivers and a trunk) or cat6")
    purpose: str = Field(description="what the cables join, e.g. leaf to spine")
    count: int = Field(ge=0, description="cables")
    unit_price_usd: float = Field(ge=0, description="price per cable (or per optic pair and trunk), USD")


class TierRecovery(Out):
    tier: Tier
    lost: str = Field(description="the failure domain lost: the largest host or rack")
    data_tib: float = Field(description="data it held at the planned fill, TiB")
    recovery_gbps: float = Field(description="recovery bandwidth of the survivors (mClock reservation, NIC "
                                 "headroom), Gb/s")
    hours: float | None = Field(default=None, description="data over bandwidth, hours (evenly spread: a lower bound)")
    nic_gbps: float | None = Field(default=None, description="NIC bandwidth of the tier's busiest build, Gb/s")
    peak_traffic_gbps: float | None = Field(default=None, description="its client + replication + recovery "
                                            "traffic, Gb/s")


class ControlPlaneSizing(Out):
    hypervisors: int = Field(description="VM hosts the control plane serves")
    vms: int = Field(description="VMs at the end of the horizon")
    controller_threads: int = Field(description="hardware threads a controller needs")
    controller_ram_gib: float = Field(description="RAM a controller needs, GiB (Ceph daemons included)")
    controller_disk_gb: float = Field(description="fast local disk a controller needs, GB (mirrored)")
    converged: bool = Field(default=False, description="control plane on three hyperconverged hosts (edge)")
    network_nodes: int = Field(default=0, description="dedicated network nodes")


class RackGroup(Out):
    model: str = Field(description="rack model")
    count: int = Field(ge=0, description="number of racks")
    height_u: int = Field(ge=1, description="usable rack units per rack")
    power_budget_w: float = Field(ge=0, description="power budget per rack, W")
    usable_power_w: float | None = Field(default=None, description="what the rack's equipment may draw at peak "
                                         "(the budget derated for continuous load on one of its A/B feeds), W")
    unit_price_usd: float = Field(ge=0, description="price per rack, USD")


class TierCapacity(Out):
    tier: Tier
    demanded_usable_tib: float = Field(description="usable TiB asked for at the end of the horizon, with the "
                                       "replicated-only pools it holds")
    offered_usable_tib: float = Field(description="usable TiB offered below the nearfull ratio, all hosts up, "
                                      "by the CRUSH bound n*S <= sum_i min(c_i, S) over the failure domains")
    offered_usable_tib_degraded: float = Field(description="usable TiB with the largest failure domain lost, "
                                               "by the same CRUSH bound")
    raw_tib: float = Field(description="raw TiB installed")
    protection: str | None = Field(default=None, description="protection of the tier's data pools")
    metadata_usable_tib: float = Field(default=0.0, description="usable TiB (in the demand) of the replicated-only "
                                       "pools of erasure-coded tiers that this tier holds")
    failure_domains: int | None = Field(default=None, description="hosts (or racks) holding the tier")
    largest_domain_raw_tib: float | None = Field(default=None, description="raw TiB of the largest failure domain")
    demanded_iops: float | None = Field(default=None, description="client IOPS asked for")
    offered_iops: float = Field(default=0, description="client IOPS offered at the tier's read/write mix: per-OSD "
                                "figures (CPU-bound, capped by the drive), writes paying the protection's penalty")
    offered_iops_degraded: float | None = Field(default=None, description="client IOPS with the failure domain lost")
    read_fraction: float | None = Field(default=None, description="share of the demanded IOPS that are reads")


class Capacity(Out):
    demanded_vcpus: float = Field(description="vCPUs the grown workload needs")
    offered_vcpus: float = Field(description="vCPUs offered to VMs, all hosts up")
    offered_vcpus_degraded: float = Field(description="vCPUs offered with the failure domain lost")
    demanded_ram_gib: float = Field(description="VM RAM the grown workload needs, GiB")
    offered_ram_gib: float = Field(description="VM RAM offered, all hosts up, GiB")
    offered_ram_gib_degraded: float = Field(description="VM RAM offered with the failure domain lost, GiB")
    tiers: list[TierCapacity] = Field(default_factory=list)
    ram_per_core_gib: float = Field(description="RAM per physical core over VM-carrying hosts, GiB")


class FlavorCost(Out):
    flavor: str
    usd_per_vm_month: float


class Cost(Out):
    capex_usd: float = Field(description="hardware bought up front, USD")
    opex_usd_per_month: float = Field(description="power (with PUE), support and rack space per month, USD")
    tco_usd: float = Field(description="capex + opex over the horizon, USD")
    horizon_months: float = Field(description="months the TCO covers")
    usd_per_vm_month: float = Field(description="TCO per VM per month, averaged over all VMs at the end of the horizon")
    usd_per_vcpu_month: float = Field(description="compute cost per vCPU sold per month, USD")
    usd_per_gib_month: float = Field(description="compute cost per GiB of VM RAM sold per month, USD")
    usd_per_usable_tib_month: dict[str, float] = Field(default_factory=dict, description="storage cost per usable TiB-month by tier")
    flavors: list[FlavorCost] = Field(default_factory=list, description="cost per VM-month for each flavor")
    breakdown_usd: dict[str, float] = Field(default_factory=dict, description="TCO by category")


class PlacementFill(Out):
    """Exact placement summary for one host kind (filled by the packing engine)."""

    kind: str = Field(description="host kind: role|chassis|cpu|memory[|drives]")
    hosts: int = Field(description="hosts of that kind")
    vcpu_fill: float = Field(description="fraction of offered vCPUs used by the placement")
    ram_fill: float = Field(description="fraction of offered VM RAM used by the placement")


class Placement(Out):
    feasible: bool = Field(description="every VM has a host, all hosts up")
    feasible_degraded: bool = Field(description="every VM has a host with the failure domain lost")
    fills: list[PlacementFill] = Field(default_factory=list, description="fill of the placement per host kind")
    aggregate_only_hosts: int = Field(description="compute hosts an aggregate-only (total RAM/vCPU) answer would buy")
    exact_hosts: int = Field(description="compute hosts needed for an exact placement with N+1")
    aggregate_only_tco_usd: float | None = Field(
        default=None, description="TCO of the totals-only plan, when its VMs did not fit host by host")
    patterns: list[dict] = Field(default_factory=list, description="host patterns: kind, multiplicity, VMs per flavor")


class Expansion(Out):
    """What an expansion on an installed base adds, and what that costs."""

    installed: str = Field(description="name of the installed blueprint the expansion starts from")
    prefer_fleet_skus: bool = Field(description="new nodes limited to the configurations already in the fleet")
    added_nodes: int = Field(ge=0, description="servers bought (controllers included)")
    added_racks: int = Field(ge=0, description="racks bought")
    added_switches: dict[str, int] = Field(default_factory=dict, description="switches bought, by role")
    capex_usd: float = Field(ge=0, description="hardware bought for the addition, USD")
    opex_usd_per_month: float = Field(ge=0, description="power (with PUE), support and rack space of what is "
                                      "added, per month, USD")
    tco_usd: float = Field(ge=0, description="capex + opex of what is added over the horizon, USD")
    installed_age_months: dict[str, float] = Field(
        default_factory=dict, description="age of each installed configuration (by its key) on the price book's "
        "date, months; installed nodes are kept for the whole horizon whatever their age")


class Blueprint(Out):
    name: str = Field(description="cloud name, from the workload")
    status: str = Field(description="optimal (within the requested gap of a bound that holds for the whole "
                        "catalog) or feasible (gaps given)")
    solver: str = Field(description="solver used")
    mip_gap: float = Field(allow_inf_nan=True, description="relative gap between the plan's cost and the best bound over the "
                           "configurations the MILP saw")
    optimal_over: str | None = Field(default=None, description="the configurations the MILP's bounds are over")
    candidate_gap: float | None = Field(default=None, description="plan vs the bound over those configurations")
    catalog_lower_bound_usd: float | None = Field(
        default=None, description="TCO (with the per-node tie-breaker) no plan over the whole catalog can beat, USD")
    catalog_gap: float | None = Field(default=None, description="plan vs that catalog-wide bound (None: unknown)")
    solve_seconds: float = Field(description="wall time of the whole sizing (options, LP, MILP), s")
    catalog_date: str = Field(description="date of the price book")
    racks_count: int = Field(description="racks")
    nodes: list[NodeGroup]
    switches: list[SwitchGroup]
    racks: list[RackGroup]
    capacity: Capacity
    cost: Cost
    placement: Placement | None = None
    expansion: Expansion | None = Field(default=None, description="set when the plan grows an installed cloud: "
                                        "what is added and its cost (nodes bought are marked new)")
    cables: list[CableLine] = Field(default_factory=list, description="cables and optics, in the bill and the cost")
    recovery: list[TierRecovery] = Field(default_factory=list, description="per tier: healing after the largest "
                                         "failure domain is lost, and the NIC check")
    control_plane: ControlPlaneSizing | None = Field(default=None, description="what the control plane was sized for")
    notes: list[str] = Field(default_factory=list, description="decisions worth a human's attention")
    workload: Workload

    def nodes_by_role(self, role: NodeRole) -> list[NodeGroup]:
        return [n for n in self.nodes if n.role == role]

    @property
    def node_count(self) -> int:
        return sum(n.count for n in self.nodes)


def summary(bp: Blueprint) -> dict:
    """The stable JSON summary `cloudplan size --json` prints."""
    cap = bp.capacity
    return {
        "name": bp.name,
        "status": bp.status,
        "mip_gap": bp.mip_gap,
        "optimality": {"over": bp.optimal_over, "candidate_gap": bp.candidate_gap,
                       "catalog_lower_bound_usd": bp.catalog_lower_bound_usd, "catalog_gap": bp.catalog_gap},
        "solver": bp.solver,
        "solve_seconds": bp.solve_seconds,
        "racks": bp.racks_count,
        "nodes": [{"role": n.role.value, "chassis": n.chassis, "cpu": f"{n.sockets}x {n.cpu}", "count": n.count,
                   "ram_gib": n.ram_gib, "cores": n.cores, "threads": n.threads,
                   "drives": [{"model": d.model, "tier": d.tier.value, "count": d.count} for d in n.drives],
                   "unit_price_usd": n.unit_price_usd, "new": n.new} for n in bp.nodes],
        "switches": [s.model_dump() for s in bp.switches],
        "cost": {"capex_usd": round(bp.cost.capex_usd, 2), "opex_usd_per_month": round(bp.cost.opex_usd_per_month, 2),
                 "tco_usd": round(bp.cost.tco_usd, 2), "horizon_months": bp.cost.horizon_months,
                 "usd_per_vm_month": round(bp.cost.usd_per_vm_month, 4),
                 "usd_per_vcpu_month": round(bp.cost.usd_per_vcpu_month, 4),
                 "usd_per_gib_month": round(bp.cost.usd_per_gib_month, 4),
                 "usd_per_usable_tib_month": {k: round(v, 2) for k, v in bp.cost.usd_per_usable_tib_month.items()},
                 "flavors": {f.flavor: round(f.usd_per_vm_month, 2) for f in bp.cost.flavors},
                 "breakdown_usd": {k: round(v, 2) for k, v in bp.cost.breakdown_usd.items()}},
        "capacity": {
            "vcpus": {"offered": cap.offered_vcpus, "offered_degraded": cap.offered_vcpus_degraded,
                      "demanded": cap.demanded_vcpus},
            "ram_gib": {"offered": cap.offered_ram_gib, "offered_degraded": cap.offered_ram_gib_degraded,
                        "demanded": cap.demanded_ram_gib},
            "usable_tib": {t.tier.value: {"offered": round(t.offered_usable_tib, 3),
                                          "offered_degraded": round(t.offered_usable_tib_degraded, 3),
                                          "demanded": round(t.demanded_usable_tib, 3)} for t in cap.tiers},
            "iops": {t.tier.value: {"offered": t.offered_iops, "offered_degraded": t.offered_iops_degraded,
                                    "demanded": t.demanded_iops, "read_fraction": t.read_fraction}
                     for t in cap.tiers if t.demanded_iops},
            "ram_per_core_gib": round(cap.ram_per_core_gib, 2),
        },
        "placement": bp.placement.model_dump(exclude={"patterns"}) if bp.placement else None,
        "expansion": bp.expansion.model_dump() if bp.expansion else None,
        "cables": [c.model_dump() for c in bp.cables],
        "recovery": [r.model_dump(mode="json") for r in bp.recovery],
        "control_plane": bp.control_plane.model_dump() if bp.control_plane else None,
        "notes": bp.notes,
    }
