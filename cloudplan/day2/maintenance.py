"""Rolling maintenance: patch and reboot every host without losing a VM or a Ceph write.

The roll is the upgrade rehearsal's (:mod:`cloudplan.upgrade.roll`): the
controllers and network hosts one at a time, then the compute hosts in batches
the drain check proves can be emptied by live migration, then the storage
hosts, no batch taking more OSD failure domains of a tier down than its pools
allow. What differs is the work done on each empty host: a kernel and OS
update, or new firmware (which reboots for longer). A tier that cannot lose
one failure domain, or a host whose VMs fit nowhere else, makes the plan a
no-go with the reason.

Library entry point::

    from cloudplan.day2.maintenance import plan_maintenance
    cloud = load_cloud(inventory, blueprint="bp.yaml")
    result = plan_maintenance(inventory, cloud, reason="kernel", protection=bp.workload.policy.protection)
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from cloudplan.inventory import Inventory, Role
from cloudplan.spec import Protection
from cloudplan.upgrade.ceph import PoolProtection
from cloudplan.upgrade.models import Cloud, DrainReport, PlanStep, UpgradeDefaults
from cloudplan.upgrade.plan import HEALTH_COMMANDS
from cloudplan.upgrade.roll import HostWork, batch_step, infra_hosts, plan_roll, stuck_step

# A kernel update reboots in the time the rehearsal assumes (services back in ~10 min).
DEFAULT_KERNEL_REBOOT_SECONDS = UpgradeDefaults().host_reboot_seconds
# Firmware (BIOS, BMC, NIC, drive) is flashed on the way down and activated by a power
# cycle; servers then re-train memory and POST: 20-30 minutes per host is common.
DEFAULT_FIRMWARE_REBOOT_SECONDS = 1800
# The hosts run the Debian image cloudplan builds: the kernel comes with the OS updates.
KERNEL_UPDATE = ("ssh HOST 'sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get -y full-upgrade'")


class Reason(str, Enum):
    kernel = "kernel"
    firmware = "firmware"


def host_work(reason: Reason) -> HostWork:
    """What is done to each empty host before its reboot."""
    if reason == Reason.kernel:
        return HostWork(description="Install the new kernel and the OS updates (the reboot below starts the "
                                    "new kernel)", command=KERNEL_UPDATE, disable_reason="kernel maintenance",
                        short="update the kernel and reboot")
    # No command: firmware tools are vendor-specific (or the BMC's Redfish UpdateService).
    return HostWork(description="Stage the firmware updates (BIOS, BMC, NICs, drives) with the vendor's tool or "
                                "the BMC's Redfish UpdateService; the reboot below activates them",
                    disable_reason="firmware maintenance", short="update the firmware and reboot")


def reboot_seconds(reason: Reason) -> int:
    return DEFAULT_FIRMWARE_REBOOT_SECONDS if reason == Reason.firmware else DEFAULT_KERNEL_REBOOT_SECONDS


class MaintenancePlan(BaseModel):
    """Everything the maintenance report shows, and what ``--json`` prints."""

    cloud: str = Field(description="inventory / cloud name")
    reason: Reason = Field(description="kernel or firmware")
    verdict: str = Field(description="go or no-go")
    reasons: list[str] = Field(description="every reason for a no-go")
    warnings: list[str] = Field(default_factory=list, description="findings that do not block the roll")
    placement_source: str = Field(description="where the VM placement came from")
    compute_hosts: int = Field(description="compute hosts drained by live migration")
    vms: int = Field(description="VMs in the placement")
    drain: DrainReport = Field(description="drain check and batches")
    plan: PlanStep = Field(description="the ordered steps")
    duration_seconds: float = Field(description="estimated wall time of the whole roll, seconds")
    ceph: list[PoolProtection] = Field(default_factory=list, description="protection of each Ceph tier")
    defaults: UpgradeDefaults = Field(description="the figures assumed")
    generated_at: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              description="when the plan was made")

    @property
    def hosts_alone(self) -> list[str]:
        """Controllers and network hosts, rebooted one at a time, in order."""
        return [s.description.split()[2] for s in self.plan.children[1].children
                if not s.description.startswith(("Batch ", "Hosts no batch"))]

    def summary_json(self) -> dict[str, Any]:
        """The machine-readable answer: verdict, reasons, order of hosts, batches, duration."""
        return {
            "verdict": self.verdict,
            "reason": self.reason.value,
            "reasons": self.reasons,
            "warnings": self.warnings,
            "one_at_a_time": self.hosts_alone,
            "batches": [{"index": b.index, "kind": b.kind, "hosts": b.hosts, "vms": b.vms, "seconds": b.seconds,
                         "ceph_domains_down": b.ceph_domains_down} for b in self.drain.batches],
            "hosts": [{"name": h.name, "rack": h.rack, "drainable": h.drainable, "batch": h.batch, "vms": h.vms,
                       "reason": h.reason} for h in self.drain.hosts],
            "unbatched": self.drain.unbatched,
            "ceph": [{**p.model_dump(), "max_domains_down": p.max_domains_down} for p in self.ceph],
            "duration_seconds": round(self.duration_seconds, 1),
            "placement_source": self.placement_source,
        }


def _health(defaults: UpgradeDefaults, key: str, description: str) -> PlanStep:
    return PlanStep(description=description, command=HEALTH_COMMANDS, seconds=float(defaults.step_seconds.get(key, 0)))


def _quorum_warnings(inventory: Inventory) -> list[str]:
    controllers = len(inventory.by_role(Role.control))
    if controllers == 0 or controllers >= 3:
        return []
    return [f"{controllers} controller(s): with one rebooting, Galera and RabbitMQ lose their quorum (three "
            "keep it with one down); the control plane stops while each controller reboots"]


def plan_maintenance(inventory: Inventory, cloud: Cloud, *, reason: Reason | str = Reason.kernel,
                     protection: Protection | None = None, defaults: UpgradeDefaults | None = None,
                     failure_domain: str | None = None) -> MaintenancePlan:
    """The rolling maintenance of ``inventory`` running ``cloud``: order, batches, commands, duration.

    ``defaults.host_reboot_seconds`` is the reboot of one batch; without
    ``defaults`` it is the reason's (:data:`DEFAULT_FIRMWARE_REBOOT_SECONDS`
    for firmware). ``protection`` is the Ceph pools' scheme (the blueprint's;
    3x replication when not given), ``failure_domain`` their CRUSH domain (the blueprint
    policy's; by the racks each tier spans when not given).
    """
    reason = Reason(reason)
    defaults = defaults or UpgradeDefaults(host_reboot_seconds=reboot_seconds(reason))
    work = host_work(reason)
    roll = plan_roll(inventory, cloud, protection, defaults, failure_domain)
    drain = roll.drain
    batched = {h for b in drain.batches for h in b.hosts} | set(drain.unbatched) | roll.osd_hosts
    hosts = infra_hosts(inventory, defaults, batched, work) + [batch_step(b, roll.osd_hosts, work)
                                                              for b in drain.batches]
    stuck = stuck_step(drain)
    if stuck is not None:
        hosts.append(stuck)
    name = inventory.name or "cloud"
    plan = PlanStep(description=f"Rolling {reason.value} maintenance of {name}", children=[
        _health(defaults, "health", "Before: verify health (every service and agent up, Galera and RabbitMQ "
                "clustered, Ceph HEALTH_OK, no VM migrating)"),
        PlanStep(description="Every host, one at a time or in Ceph-safe batches: empty, patch, reboot, wait",
                 children=hosts),
        _health(defaults, "verify", "After: verify health again"),
    ])
    reasons = list(drain.reasons) + roll.blocked
    warnings = list(cloud.notes) + _quorum_warnings(inventory) + [r.reason for r in drain.racks if r.reason]
    return MaintenancePlan(cloud=name, reason=reason, verdict="no-go" if reasons else "go", reasons=reasons,
                           warnings=warnings, placement_source=cloud.source, compute_hosts=len(cloud.hosts),
                           vms=cloud.vm_count, drain=drain, plan=plan, duration_seconds=plan.total_seconds,
                           ceph=roll.pools, defaults=defaults)
