"""Pydantic models of what the architect asks for: workloads, flavors, storage, policy.

Defaults that come from upstream projects are named constants with their source,
so a reader can check them and a user can override them in the workload file.
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# nova/conf/compute.py: initial_cpu_allocation_ratio, initial_ram_allocation_ratio,
# reserved_host_memory_mb.
NOVA_CPU_ALLOCATION_RATIO = 4.0
NOVA_RAM_ALLOCATION_RATIO = 1.0
NOVA_RESERVED_HOST_MEMORY_MB = 512
# Ceph mon_osd_nearfull_ratio: plan so the cluster sits below it.
CEPH_NEARFULL_RATIO = 0.85
# Ceph guidance: ~1 core per OSD (more for NVMe), 5-8 GB RAM per HDD/SSD OSD,
# 16-24 GB for NVMe OSDs (osd_memory_target plus recovery headroom).
OSD_RAM_GIB = {"nvme": 16.0, "ssd": 8.0, "hdd": 6.0}
OSD_CORES = {"nvme": 2.0, "ssd": 1.0, "hdd": 1.0}   # physical cores, not hardware threads
# Physical RAM a hypervisor spends per VM beyond the guest's own (QEMU, page tables, I/O
# buffers): Red Hat's HCI guide reserves instances x 0.5 GB for it.
VM_OVERHEAD_GIB = 0.5
# Ceph daemons besides the OSDs, RAM each: monitor 8 GB and RGW 4 GB (Canonical's Ceph
# hardware recommendations, memory requirements), manager 4 GB (Red Hat's 1 GB minimum
# leaves no room for the dashboard and the orchestrator modules).
CEPH_MON_RAM_GIB = 8.0
CEPH_MGR_RAM_GIB = 4.0
CEPH_RGW_RAM_GIB = 4.0
# Ceph is CPU-bound per OSD: Micron's all-NVMe Ceph reference architecture measured about
# 54k 4k random read and 10k 4k random write client IOPS per OSD (3x replicated, so 30k
# backend writes per OSD). Per OSD at the default cores per OSD (OSD_CORES), scaled by the
# policy's cores per OSD and capped by the drive itself. HDDs are device-bound.
OSD_READ_IOPS = {"nvme": 54000.0, "ssd": 54000.0, "hdd": 54000.0}
OSD_WRITE_IOPS = {"nvme": 30000.0, "ssd": 30000.0, "hdd": 30000.0}   # backend writes (each replica or chunk)
# Device random write IOPS as a share of the data sheet's read IOPS when a drive gives none:
# SATA SSDs ~90k read / ~30k write; NVMe ~1M / ~200k (4k random, steady state); HDDs alike.
DEVICE_WRITE_SHARE = {"nvme": 0.2, "ssd": 0.33, "hdd": 1.0}
# Client read share of a tier's IOPS when the workload gives none: the usual 70/30 VM mix.
READ_FRACTION = 0.7
# A dedicated storage chassis carries data drives in at least this share of all its data
# bays: a 12-bay LFF box bought for one NVMe drive in its DB/WAL slots is a build no
# architect orders (a smaller chassis, or a hyperconverged host, does the job).
MIN_STORAGE_BAY_FILL = 0.25
# BlueStore block.db (RocksDB, with the WAL beside it) of an HDD OSD on a flash device, as a
# share of the OSD's data device. Ceph's BlueStore configuration reference ("Sizing"): block.db
# between 1 % and 4 % of block, not less than 4 % for RGW (omap-heavy), 1-2 % for RBD. The
# recipe runs RGW beside RBD, so 4 %; an RBD-only site may set 0.02.
BLOCK_DB_SHARE = 0.04
# Device writes an HDD spends per backend write when its WAL and DB share the spindle: a small
# write is deferred (below bluestore_prefer_deferred_size_hdd, 64 KiB), written to the WAL first
# and to its place later, and the RocksDB update lands on the same disk. With block.db (and so
# the WAL) on flash the spindle takes the data write once.
HDD_COLOCATED_WRITE_COST = 2.0


class Strict(BaseModel):
    """Base for input models: unknown fields are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=False, allow_inf_nan=False)


class Tier(str, Enum):
    """Storage tier, fastest first."""

    nvme = "nvme"
    ssd = "ssd"
    hdd = "hdd"


class FailureDomain(str, Enum):
    host = "host"
    rack = "rack"


class Hyperconverged(str, Enum):
    """Whether OSDs may share hosts with VMs: let the optimizer choose, force, or forbid."""

    auto = "auto"
    always = "always"
    never = "never"


class Flavor(Strict):
    name: str = Field(description="Nova flavor name, e.g. m1.large")
    vcpus: int = Field(gt=0, description="virtual CPUs per VM")
    ram_gib: float = Field(gt=0, description="RAM per VM in GiB")
    disk_gib: float = Field(default=0, ge=0, description="root disk per VM in GiB (on Ceph, counted in storage demand by the user)")
    count: int = Field(ge=0, description="number of VMs of this flavor today")


class StorageDemand(Strict):
    tier: Tier = Field(description="storage tier: nvme, ssd or hdd")
    usable_tib: float = Field(ge=0, description="usable capacity the cloud must offer, TiB, after protection")
    iops: float | None = Field(default=None, ge=0, description="client random IOPS the tier must sustain")
    read_fraction: float = Field(default=READ_FRACTION, ge=0, le=1,
                                 description="share of those IOPS that are reads (writes pay the protection's penalty)")
    protection: Protection | None = Field(default=None, description="Ceph protection of this tier's data pools "
                                          "(replicas or EC k+m); default: policy.protection")


class Protection(Strict):
    """Ceph data protection: ``replicas`` copies, or erasure coding ``ec_k`` + ``ec_m``."""

    replicas: int | None = Field(default=None, ge=1, description="replica count (size)")
    ec_k: int | None = Field(default=None, ge=1, description="erasure-coding data chunks")
    ec_m: int | None = Field(default=None, ge=1, description="erasure-coding coding chunks")

    @field_validator("replicas")
    @classmethod
    def _redundant(cls, v: int | None) -> int | None:
        if v == 1:
            raise ValueError("replicas: 1 keeps a single copy, so losing any host loses data and no plan can be "
                             "N+1; use 2 or more replicas (3 is Ceph's default) or erasure coding")
        return v

    @model_validator(mode="after")
    def _one_scheme(self) -> "Protection":
        ec = self.ec_k is not None or self.ec_m is not None
        if ec and (self.ec_k is None or self.ec_m is None):
            raise ValueError("erasure coding needs both ec_k and ec_m")
        if ec and self.replicas is not None:
            raise ValueError("give either replicas or ec_k/ec_m, not both")
        if not ec and self.replicas is None:
            self.replicas = 3
        return self

    @property
    def efficiency(self) -> float:
        """Usable bytes per raw byte."""
        if self.replicas is not None:
            return 1.0 / self.replicas
        return self.ec_k / (self.ec_k + self.ec_m)

    @property
    def write_penalty(self) -> int:
        """Device writes per client write, used to derate raw IOPS."""
        return self.replicas if self.replicas is not None else self.ec_k + self.ec_m

    @property
    def data_chunks(self) -> int:
        """Chunks an object's data is cut into: 1 for replication (each copy is whole), k for EC."""
        return 1 if self.replicas is not None else self.ec_k

    @property
    def min_hosts(self) -> int:
        """Failure domains a placement group needs (size, or k+m)."""
        return self.replicas if self.replicas is not None else self.ec_k + self.ec_m

    def describe(self) -> str:
        return f"{self.replicas}x replication" if self.replicas else f"EC {self.ec_k}+{self.ec_m}"


class Policy(Strict):
    # Upper bounds far above any real cloud: beyond them the solver's coefficients lose precision.
    cpu_allocation_ratio: float = Field(default=NOVA_CPU_ALLOCATION_RATIO, gt=0, le=1000,
                                        description="vCPUs per hardware thread (Nova initial_cpu_allocation_ratio)")
    ram_allocation_ratio: float = Field(default=NOVA_RAM_ALLOCATION_RATIO, gt=0, le=1000,
                                        description="virtual RAM per physical RAM (Nova initial_ram_allocation_ratio)")
    reserved_host_memory_mb: int = Field(default=NOVA_RESERVED_HOST_MEMORY_MB, ge=0,
                                         description="RAM kept for the hypervisor host, MiB (Nova reserved_host_memory_mb)")
    reserved_host_cores: int = Field(default=0, ge=0, description="hardware threads kept for the host OS on compute nodes")
    failure_domain: FailureDomain = Field(default=FailureDomain.host,
                                          description="capacity must survive losing one host or one rack")
    protection: Protection = Field(default_factory=Protection, description="Ceph protection scheme")
    nearfull_ratio: float = Field(default=CEPH_NEARFULL_RATIO, gt=0, le=1,
                                  description="plan storage to stay below this fill (Ceph mon_osd_nearfull_ratio)")
    hyperconverged: Hyperconverged = Field(default=Hyperconverged.auto,
                                           description="allow OSDs on compute hosts: auto, always or never")
    osd_ram_gib: dict[Tier, float] = Field(default_factory=lambda: {Tier(k): v for k, v in OSD_RAM_GIB.items()},
                                           description="RAM reserved per OSD (one OSD per drive), GiB, by tier")
    osd_cores: dict[Tier, float] = Field(default_factory=lambda: {Tier(k): v for k, v in OSD_CORES.items()},
                                         description="physical cores reserved per OSD (both threads of each), by tier")
    osd_read_iops: dict[Tier, float] = Field(default_factory=lambda: {Tier(k): v for k, v in OSD_READ_IOPS.items()},
                                             description="4k random reads one OSD serves at the default cores per "
                                             "OSD, by tier (CPU-bound; the drive caps it)")
    osd_write_iops: dict[Tier, float] = Field(default_factory=lambda: {Tier(k): v for k, v in OSD_WRITE_IOPS.items()},
                                              description="4k random backend writes one OSD serves at the default "
                                              "cores per OSD, by tier")
    vm_overhead_gib: float = Field(default=VM_OVERHEAD_GIB, ge=0,
                                   description="physical RAM a hypervisor spends per VM besides the flavor's, GiB")
    mon_ram_gib: float = Field(default=CEPH_MON_RAM_GIB, ge=0, description="RAM of a Ceph monitor, GiB")
    mgr_ram_gib: float = Field(default=CEPH_MGR_RAM_GIB, ge=0, description="RAM of a Ceph manager, GiB")
    rgw_ram_gib: float = Field(default=CEPH_RGW_RAM_GIB, ge=0, description="RAM of a Ceph object gateway, GiB")
    controllers: int = Field(default=3, ge=1, description="control-plane nodes (3 for a quorum)")
    network_nodes: int = Field(default=0, ge=0, description="dedicated network nodes (Kolla-Ansible's network "
                               "group: OVN gateways, HAProxy); 0 puts them on the controllers, else 2 or more")
    converged_control_plane: bool = Field(default=False, description="edge site: no dedicated controllers; the "
                                          "control plane runs on three of the hyperconverged hosts, each of which "
                                          "keeps its share")
    controller_min_cores: int = Field(default=32, ge=1, description="hardware threads a controller needs at least")
    controller_min_ram_gib: float = Field(default=256, gt=0, description="RAM a controller needs at least, GiB")
    max_racks: int | None = Field(default=None, ge=1, description="site limit on racks, if any")
    min_storage_bay_fill: float = Field(default=MIN_STORAGE_BAY_FILL, ge=0, le=1,
                                        description="share of a storage chassis' data bays (all kinds) its drives "
                                        "must fill at least")
    block_db_share: float = Field(default=BLOCK_DB_SHARE, gt=0, le=0.5,
                                  description="block.db of an HDD OSD on flash, as a share of its data drive "
                                  "(Ceph: 1-4 %)")
    hdd_db_on_flash: bool | None = Field(default=None,
                                         description="HDD OSDs' block.db/WAL on flash drives in the chassis' NVMe or "
                                         "SATA bays: true (in every chassis that has such bays), false (never), "
                                         "unset (the optimizer chooses)")
    max_configs_per_role: int = Field(default=1, ge=1, le=5,
                                      description="distinct server configurations per role and tier (1 = homogeneous fleet)")
    node_penalty_usd: float = Field(default=50.0, ge=0,
                                    description="tie-breaker cost per node: at equal cost prefer fewer, RAM-heavier nodes")

    @field_validator("network_nodes")
    @classmethod
    def _network_pair(cls, v: int) -> int:
        if v == 1:
            raise ValueError("1 leaves the gateways and load balancer without a standby; give 0 "
                             "(they run on the controllers) or 2 or more")
        return v


class Workload(Strict):
    name: str = Field(description="name of the cloud")
    horizon_years: float = Field(default=5, gt=0, le=15, description="TCO and amortisation horizon, years")
    growth_per_year: float = Field(default=0.0, ge=0, le=5,
                                   description="compound yearly growth; sizing is for the end of the horizon")
    flavors: list[Flavor] = Field(min_length=1, description="VM flavors and how many of each")
    storage: list[StorageDemand] = Field(default_factory=list, description="usable storage per tier")
    policy: Policy = Field(default_factory=Policy, description="allocation ratios, failure domain, protection")

    @field_validator("flavors")
    @classmethod
    def _something_to_size(cls, flavors: list[Flavor]) -> list[Flavor]:
        if flavors and not any(f.count for f in flavors):
            raise ValueError("every flavor's count is 0: there is nothing to size (give at least one flavor a count)")
        return flavors

    @model_validator(mode="after")
    def _unique(self) -> "Workload":
        seen: set[str] = set()
        for f in self.flavors:
            if f.name in seen:
                raise ValueError(f"flavor {f.name!r} is listed twice")
            seen.add(f.name)
        tiers = [s.tier for s in self.storage]
        if len(tiers) != len(set(tiers)):
            raise ValueError("a storage tier is listed twice")
        return self

    @property
    def growth_factor(self) -> float:
        return (1.0 + self.growth_per_year) ** self.horizon_years

    @property
    def horizon_months(self) -> float:
        return self.horizon_years * 12.0

    def vm_ram_gib(self, flavor: Flavor) -> float:
        """What one VM of ``flavor`` takes from a host's VM RAM: the flavor plus the hypervisor's
        per-VM overhead (physical RAM, so scaled to allocation units by the RAM ratio)."""
        return flavor.ram_gib + self.policy.vm_overhead_gib * self.policy.ram_allocation_ratio

    def grown_count(self, flavor: Flavor) -> int:
        """VMs of ``flavor`` at the end of the horizon (rounded up)."""
        return math.ceil(flavor.count * self.growth_factor - 1e-9)

    def grown_storage(self, demand: StorageDemand) -> StorageDemand:
        g = self.growth_factor
        return StorageDemand(tier=demand.tier, usable_tib=demand.usable_tib * g,
                             iops=None if demand.iops is None else demand.iops * g, read_fraction=demand.read_fraction,
                             protection=self.protection_for(demand))

    def protection_for(self, demand: StorageDemand) -> Protection:
        """The tier's own protection, else the policy's."""
        return demand.protection if demand.protection is not None else self.policy.protection
