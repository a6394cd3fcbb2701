"""Pydantic models of what the architect asks for: workloads, flavors, storage, policy.

Defaults that come from upstream projects are named constants with their source,
so a reader can check them and a user can override them in the workload file.
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
OSD_CORES = {"nvme": 2.0, "ssd": 1.0, "hdd": 1.0}


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


class Protection(Strict):
    """Ceph data protection: ``replicas`` copies, or erasure coding ``ec_k`` + ``ec_m``."""

    replicas: int | None = Field(default=None, ge=1, description="replica count (size)")
    ec_k: int | None = Field(default=None, ge=1, description="erasure-coding data chunks")
    ec_m: int | None = Field(default=None, ge=1, description="erasure-coding coding chunks")

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
                                         description="hardware threads reserved per OSD, by tier")
    controllers: int = Field(default=3, ge=1, description="control-plane nodes (3 for a quorum)")
    controller_min_cores: int = Field(default=32, ge=1, description="hardware threads a controller needs at least")
    controller_min_ram_gib: float = Field(default=256, gt=0, description="RAM a controller needs at least, GiB")
    max_racks: int | None = Field(default=None, ge=1, description="site limit on racks, if any")
    max_configs_per_role: int = Field(default=1, ge=1, le=5,
                                      description="distinct server configurations per role and tier (1 = homogeneous fleet)")
    node_penalty_usd: float = Field(default=50.0, ge=0,
                                    description="tie-breaker cost per node: at equal cost prefer fewer, RAM-heavier nodes")


class Workload(Strict):
    name: str = Field(description="name of the cloud")
    horizon_years: float = Field(default=5, gt=0, le=15, description="TCO and amortisation horizon, years")
    growth_per_year: float = Field(default=0.0, ge=0, le=5,
                                   description="compound yearly growth; sizing is for the end of the horizon")
    flavors: list[Flavor] = Field(min_length=1, description="VM flavors and how many of each")
    storage: list[StorageDemand] = Field(default_factory=list, description="usable storage per tier")
    policy: Policy = Field(default_factory=Policy, description="allocation ratios, failure domain, protection")

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

    def grown_count(self, flavor: Flavor) -> int:
        """VMs of ``flavor`` at the end of the horizon (rounded up)."""
        return math.ceil(flavor.count * self.growth_factor - 1e-9)

    def grown_storage(self, demand: StorageDemand) -> StorageDemand:
        g = self.growth_factor
        return StorageDemand(tier=demand.tier, usable_tib=demand.usable_tib * g,
                             iops=None if demand.iops is None else demand.iops * g)
