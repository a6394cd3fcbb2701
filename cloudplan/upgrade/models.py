"""Data the upgrade rehearsal works on and the results it produces.

The cloud itself (hosts and their VMs, up to thousands of each) is held in
plain dataclasses because the drain check walks it many times; the knobs a
user sets and the results that go into the report and ``--json`` are pydantic
models with units in their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from cloudplan.spec import NOVA_CPU_ALLOCATION_RATIO, NOVA_RAM_ALLOCATION_RATIO, NOVA_RESERVED_HOST_MEMORY_MB

MIB_PER_GIB = 1024

# Nova's [DEFAULT] max_concurrent_live_migrations defaults to 1
# (nova/conf/compute.py); operators raise it on a dedicated migration network
# (then pass --parallel-migrations).
NOVA_MAX_CONCURRENT_LIVE_MIGRATIONS = 1
# The manifests leave Nova's default in place, so the estimate uses it.
DEFAULT_PARALLEL_MIGRATIONS_PER_HOST = NOVA_MAX_CONCURRENT_LIVE_MIGRATIONS
# One live-migration stream over a 10 GbE migration network.
DEFAULT_MIGRATION_BANDWIDTH_GBPS = 10.0
# Pre-copy live migration sends dirtied pages again: ~30 % more than the RAM
# size for a moderately busy guest (QEMU pre-copy; raise for write-heavy VMs).
DEFAULT_DIRTY_PAGE_FACTOR = 1.3
# At most this share of the compute hosts is emptied at once, so a failed
# batch never takes out a large part of the cloud.
DEFAULT_MAX_BATCH_FRACTION = 0.10
# Rebooting a batch of hosts (OS updates) and waiting for their containers and
# services to report up again; Kolla's upgrade has already recreated them.
DEFAULT_HOST_REBOOT_SECONDS = 600
# Wall time of each pre-check and post-upgrade step (rough figures from
# Kolla-Ansible runs on a mid-size cloud; override per site).
DEFAULT_STEP_SECONDS: dict[str, int] = {
    "health": 300,
    "db_backup": 1800,
    "config_backup": 60,
    "online_migrations": 900,
    "rabbitmq_migration": 3600,
    "rabbitmq_step": 900,
    "kolla_ansible": 300,
    "ansible_core": 120,
    "install_deps": 180,
    "passwords": 120,
    "config_merge": 1800,
    "pull": 1200,
    "prechecks": 600,
    "cinder_move": 900,
    "verify": 900,
    "prune": 600,
}
# Time `kolla-ansible upgrade` spends on each control-plane service: container
# recreation, database schema migration and the rolling restart across the
# controllers.
DEFAULT_SERVICE_RESTART_SECONDS: dict[str, int] = {
    "common": 180, "cron": 60, "fluentd": 120, "loadbalancer": 240, "mariadb": 900, "memcached": 120, "rabbitmq": 600,
    "keystone": 300, "glance": 300, "cinder": 420, "placement": 240, "nova": 900,
    "openvswitch": 300, "ovn": 420, "neutron": 600, "heat": 300, "horizon": 240,
    "magnum": 300, "octavia": 420, "designate": 300, "barbican": 240, "prometheus": 300,
}


class UpgradeDefaults(BaseModel):
    """Every figure the rehearsal assumes, each with its source; all overridable."""

    model_config = ConfigDict(extra="forbid")

    cpu_allocation_ratio: float = Field(default=NOVA_CPU_ALLOCATION_RATIO, gt=0,
                                        description="vCPUs per hardware thread (Nova initial_cpu_allocation_ratio)")
    ram_allocation_ratio: float = Field(default=NOVA_RAM_ALLOCATION_RATIO, gt=0,
                                        description="virtual RAM per physical RAM (Nova initial_ram_allocation_ratio)")
    reserved_host_memory_mb: int = Field(default=NOVA_RESERVED_HOST_MEMORY_MB, ge=0,
                                         description="RAM kept for the host, MiB (Nova reserved_host_memory_mb)")
    migration_bandwidth_gbps: float = Field(default=DEFAULT_MIGRATION_BANDWIDTH_GBPS, gt=0,
                                            description="bandwidth of one live-migration stream, Gbit/s")
    parallel_migrations_per_host: int = Field(default=DEFAULT_PARALLEL_MIGRATIONS_PER_HOST, ge=1,
                                              description="live migrations running at once per source host "
                                                          "(Nova max_concurrent_live_migrations, default 1)")
    dirty_page_factor: float = Field(default=DEFAULT_DIRTY_PAGE_FACTOR, ge=1.0,
                                     description="bytes sent per byte of guest RAM (pre-copy resends dirty pages)")
    max_batch_fraction: float = Field(default=DEFAULT_MAX_BATCH_FRACTION, gt=0, le=1,
                                      description="largest share of compute hosts drained at once")
    host_reboot_seconds: int = Field(default=DEFAULT_HOST_REBOOT_SECONDS, ge=0,
                                     description="rebooting one batch of hosts until its services report up, "
                                                 "seconds")
    step_seconds: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_STEP_SECONDS),
                                         description="wall time of each pre-check and post step, seconds")
    service_restart_seconds: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_SERVICE_RESTART_SECONDS),
        description="upgrade and restart time of each control-plane service, seconds")
    packing_time_limit_s: float = Field(default=5.0, gt=0,
                                        description="time limit of one exact packing check, seconds")
    batch_time_limit_s: float = Field(default=0.1, gt=0,
                                      description="time limit of one check while sizing batches (undecided: the "
                                                  "batch is made smaller), seconds")

    def vm_migration_seconds(self, ram_mib: float) -> float:
        """Live-migration time of one VM: RAM * 8 / bandwidth * dirty-page factor."""
        return ram_mib / MIB_PER_GIB * 8.0 / self.migration_bandwidth_gbps * self.dirty_page_factor

    def host_capacity(self, cores: float, ram_mib: float) -> tuple[int, int]:
        """Schedulable (vCPU, RAM MiB) of a host, as Placement computes it: (total - reserved) * ratio."""
        vcpus = int(cores * self.cpu_allocation_ratio + 1e-9)
        ram = int(max(0.0, ram_mib - self.reserved_host_memory_mb) * self.ram_allocation_ratio + 1e-9)
        return vcpus, ram


@dataclass(frozen=True)
class FlavorSize:
    """What one VM of a flavor takes from a host."""

    name: str
    vcpus: int
    ram_mib: int
    disk_gib: float = 0.0

    @property
    def ram_gib(self) -> float:
        return self.ram_mib / MIB_PER_GIB


@dataclass
class Host:
    """A compute host: its schedulable capacity and the VMs on it, by flavor name."""

    name: str
    rack: str
    vcpu_capacity: int
    ram_mib_capacity: int
    vms: dict[str, int] = field(default_factory=dict)
    used_vcpus: int = 0
    used_ram_mib: int = 0
    vm_ram_mib: list[int] = field(default_factory=list)

    def add(self, flavor: FlavorSize, n: int = 1) -> None:
        self.vms[flavor.name] = self.vms.get(flavor.name, 0) + n
        self.used_vcpus += flavor.vcpus * n
        self.used_ram_mib += flavor.ram_mib * n
        self.vm_ram_mib.extend([flavor.ram_mib] * n)

    @property
    def vm_count(self) -> int:
        return len(self.vm_ram_mib)

    @property
    def free(self) -> tuple[int, int]:
        """Free (vCPU, RAM MiB); never negative even on an over-full host."""
        return max(0, self.vcpu_capacity - self.used_vcpus), max(0, self.ram_mib_capacity - self.used_ram_mib)

    @property
    def load(self) -> float:
        """The busier of the two dimensions, 0..1+."""
        cpu = self.used_vcpus / self.vcpu_capacity if self.vcpu_capacity else 1.0
        ram = self.used_ram_mib / self.ram_mib_capacity if self.ram_mib_capacity else 1.0
        return max(cpu, ram)


@dataclass
class Cloud:
    """The compute hosts to drain, the flavors their VMs use, and where that came from."""

    hosts: list[Host]
    flavors: dict[str, FlavorSize]
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def vm_count(self) -> int:
        return sum(h.vm_count for h in self.hosts)


class HostDrain(BaseModel):
    name: str = Field(description="compute host")
    rack: str = Field(description="rack of the host")
    vms: int = Field(description="VMs on the host")
    used_vcpus: int = Field(description="vCPUs allocated on the host")
    used_ram_gib: float = Field(description="RAM allocated on the host, GiB")
    free_vcpus: int = Field(description="vCPUs still schedulable on the host")
    free_ram_gib: float = Field(description="RAM still schedulable on the host, GiB")
    drainable: bool = Field(description="its VMs fit on the other compute hosts")
    batch: int | None = Field(default=None, description="1-based batch the host is upgraded in; none if not drainable")
    migration_seconds: float = Field(default=0.0, description="time to live-migrate its VMs away, seconds")
    reason: str | None = Field(default=None, description="why it cannot be drained")
    decided_by: str = Field(default="", description="how the answer was found: empty, bound, greedy or exact")


class RackDrain(BaseModel):
    rack: str = Field(description="rack name")
    hosts: int = Field(description="compute hosts in the rack")
    vms: int = Field(description="VMs on those hosts")
    drainable: bool = Field(description="all its VMs fit on compute hosts of other racks")
    reason: str | None = Field(default=None, description="why the rack cannot be drained at once")


class Batch(BaseModel):
    index: int = Field(description="1-based batch number")
    hosts: list[str] = Field(description="compute hosts drained and upgraded together")
    racks: list[str] = Field(description="racks these hosts are in")
    vms: int = Field(description="VMs live-migrated away")
    ram_gib: float = Field(description="RAM of those VMs, GiB")
    migration_seconds: float = Field(description="longest per-host live-migration time in the batch, seconds")
    reboot_seconds: float = Field(description="rebooting the batch and waiting for its services, seconds")
    free_ram_gib_after: float = Field(description="RAM left free on the other hosts once the batch is drained, GiB")
    free_vcpus_after: int = Field(description="vCPUs left free on the other hosts once the batch is drained")
    kind: str = Field(default="compute", description="compute (drained by live migration) or storage (no VMs)")
    ceph_domains_down: dict[str, int] = Field(default_factory=dict,
                                              description="CRUSH failure domains each Ceph tier has down "
                                                          "while the batch is down")

    @property
    def seconds(self) -> float:
        return self.migration_seconds + self.reboot_seconds


class DrainReport(BaseModel):
    hosts: list[HostDrain] = Field(description="per compute host")
    racks: list[RackDrain] = Field(description="per rack")
    batches: list[Batch] = Field(description="hosts drained together, in order")
    max_batch_hosts: int = Field(description="cap on hosts per batch")
    reasons: list[str] = Field(description="every reason a host cannot be drained")
    check_seconds: float = Field(description="wall time of the drain check itself, seconds")
    packing_calls: int = Field(description="calls to the packing engine")
    unbatched: list[str] = Field(default_factory=list,
                                 description="drainable hosts no batch can take (Ceph cannot lose their OSDs)")

    @property
    def compute_batches(self) -> list[Batch]:
        return [b for b in self.batches if b.kind == "compute"]

    @property
    def largest_batch(self) -> int:
        return max((len(b.hosts) for b in self.batches), default=0)


class PlanStep(BaseModel):
    """One step of the plan; a step with children takes the sum of theirs."""

    description: str = Field(description="what is done, in the operator's words")
    command: str | None = Field(default=None, description="the command that does it, if one")
    seconds: float = Field(default=0.0, description="estimated wall time of this step alone, seconds")
    plays: list[str] = Field(default_factory=list, description="plays of Kolla's site.yml the --tags select")
    children: list["PlanStep"] = Field(default_factory=list, description="sub-steps, in order")

    @property
    def total_seconds(self) -> float:
        return self.seconds + sum(c.total_seconds for c in self.children)

    def walk(self, depth: int = 0):
        """(depth, step) for this step and every step under it, in order."""
        yield depth, self
        for c in self.children:
            yield from c.walk(depth + 1)

    def render_text(self, indent: str = "    ") -> str:
        """The plan as ``cou plan`` prints it: one step a line, indented by depth."""
        return "\n".join(f"{indent * d}{s.description}" for d, s in self.walk())

    def commands(self) -> list[str]:
        """Every command of the plan, in order."""
        return [s.command for _, s in self.walk() if s.command]
