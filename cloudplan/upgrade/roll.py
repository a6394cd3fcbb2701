"""Taking every host of the cloud down and up again, a batch at a time: shared by the
upgrade rehearsal and rolling maintenance (kernel or firmware patching).

Both need the same three things: Ceph-safe batches from the drain check (no
batch takes more OSD failure domains of a tier down than its pools allow),
the controllers and network hosts one at a time (Galera and RabbitMQ keep
their quorum), and the commands of each batch: disable the compute service,
live-migrate the VMs away, ``noout`` around OSD hosts, reboot, wait for the
services and ``HEALTH_OK``, enable again. Only what is done to a host while
it is empty (an OS update, new firmware) differs, and it is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudplan.inventory import Inventory, Role
from cloudplan.spec import Protection
from cloudplan.sizing.crush import RACK_DOMAIN_MIN_RACKS
from cloudplan.upgrade.ceph import CephGuard, PoolProtection, pool_protections
from cloudplan.upgrade.drain import drain_check
from cloudplan.upgrade.models import Batch, Cloud, DrainReport, PlanStep, UpgradeDefaults

GALERA_RABBITMQ_STATUS = ("docker exec rabbitmq rabbitmqctl cluster_status; docker exec -it mariadb mysql -u root -p "
                          "-e \"SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'\"")
CEPH_HEALTH_WAIT = "until cephadm shell -- ceph health | grep -q HEALTH_OK; do sleep 30; done"
# OpenStackClient has no host-wide live evacuation (novaclient's host-evacuate-live):
# Kolla's guide for removing compute nodes loops over the host's servers instead.
LIVE_MIGRATE_HOST = ("openstack server list --all-projects --host HOST -f value -c ID | "
                     "xargs -n1 openstack server migrate --live-migration --wait")
COMPUTE_UP_WAIT = ("until openstack compute service list --host HOST --service nova-compute -f value -c State | "
                   "grep -qx up; do sleep 10; done")


@dataclass(frozen=True)
class HostWork:
    """What is done to each host while it is empty, before the reboot that ends it."""

    description: str
    command: str | None = None
    # Why the compute service is disabled, as `openstack compute service list --long` shows it.
    disable_reason: str = "maintenance"
    # The same in a few words, for the hosts rebooted alone.
    short: str = "apply host OS updates and reboot"
    # A step of its own before the reboot; without one, the reboot step says what is done.
    separate: bool = True


REBOOT_ONLY = HostWork(description="Apply host OS updates and reboot (containers restart with their restart policy)",
                       separate=False)


@dataclass
class Roll:
    """The batches of one roll and the Ceph protection they respect."""

    drain: DrainReport
    pools: list[PoolProtection]
    guard: CephGuard | None

    @property
    def osd_hosts(self) -> set[str]:
        return {h for p in self.pools for h in p.hosts}

    @property
    def blocked(self) -> list[str]:
        """Reasons no OSD host of some tier can be taken down at all."""
        return self.guard.blocked() if self.guard else []


def ceph_pools(inventory: Inventory, protection: Protection | None = None,
               failure_domain: str | None = None) -> list[PoolProtection]:
    """Each tier's protection, with the failure domain the manifests' CRUSH rules use (the
    blueprint policy's ``failure_domain`` when given)."""
    return pool_protections(inventory, protection, rack_domain_min=RACK_DOMAIN_MIN_RACKS,
                            failure_domain=failure_domain)


def plan_roll(inventory: Inventory, cloud: Cloud, protection: Protection | None = None,
              defaults: UpgradeDefaults | None = None, failure_domain: str | None = None) -> Roll:
    """Ceph-safe batches of every compute host of ``cloud`` (drained by live migration) and,
    after them, of every other OSD host of ``inventory`` (storage hosts, which run no VMs)."""
    pools = ceph_pools(inventory, protection, failure_domain)
    guard = CephGuard.build(inventory, pools) if pools else None
    compute = {h.name for h in cloud.hosts}
    storage = [(n.name, n.rack) for n in inventory.nodes if n.name not in compute
               and (n.role == Role.storage or any(n.drives.values()))]
    return Roll(drain=drain_check(cloud, defaults, guard=guard, storage_hosts=storage), pools=pools, guard=guard)


def batch_step(b: Batch, osd_hosts: set[str], work: HostWork = REBOOT_ONLY) -> PlanStep:
    """One batch: empty its compute hosts, hold Ceph still, do ``work``, reboot, wait, enable."""
    hosts = ",".join(b.hosts)
    shown = ", ".join(b.hosts[:6]) + (f" and {len(b.hosts) - 6} more" if len(b.hosts) > 6 else "")
    osds = [h for h in b.hosts if h in osd_hosts]
    ceph = ", ".join(f"{t}: {n}" for t, n in sorted(b.ceph_domains_down.items()))
    compute = b.kind == "compute"
    children = []
    if compute:
        children += [
            PlanStep(description="Disable the compute services so nothing new is scheduled there",
                     command=f"openstack compute service set --disable --disable-reason '{work.disable_reason}' "
                             "HOST nova-compute"),
            PlanStep(description=f"Live-migrate {b.vms} VM(s), {b.ram_gib:g} GiB of RAM, to the other hosts "
                     "(one at a time per host: Nova's max_concurrent_live_migrations)",
                     command=LIVE_MIGRATE_HOST, seconds=b.migration_seconds)]
    if osds:
        children.append(PlanStep(description=f"Keep Ceph from rebalancing while {', '.join(osds)} "
                                 f"{'is' if len(osds) == 1 else 'are'} down "
                                 f"(failure domains down per tier: {ceph})",
                                 command="cephadm shell -- ceph osd set noout"))
    if not work.separate:
        children.append(PlanStep(description=work.description, command="ssh HOST sudo reboot",
                                 seconds=b.reboot_seconds))
    else:
        children += [PlanStep(description=work.description, command=work.command),
                     PlanStep(description="Reboot", command="ssh HOST sudo reboot", seconds=b.reboot_seconds)]
    if compute:
        children += [PlanStep(description="Wait until nova-compute reports up", command=COMPUTE_UP_WAIT),
                     PlanStep(description="Verify the network agents report up",
                              command="openstack network agent list --host HOST")]
    if osds:
        children += [PlanStep(description="Let Ceph rebalance again", command="cephadm shell -- ceph osd unset noout"),
                     PlanStep(description="Wait for HEALTH_OK before the next batch", command=CEPH_HEALTH_WAIT)]
    if compute:
        children.append(PlanStep(description="Enable the compute services",
                                 command="openstack compute service set --enable HOST nova-compute"))
    return PlanStep(description=f"Batch {b.index} ({'compute' if compute else 'storage'}): {len(b.hosts)} host(s) in "
                    f"{', '.join(b.racks)}: {shown} [HOST = each of {hosts}]", children=children)


def infra_hosts(inventory: Inventory, defaults: UpgradeDefaults, skip: set[str],
                work: HostWork = REBOOT_ONLY) -> list[PlanStep]:
    """Controllers, then network hosts, one at a time: Galera and RabbitMQ keep a quorum of three with one
    member down, and the other network hosts keep the routers. Hosts in ``skip`` (OSD hosts, which the
    Ceph-checked batches take) are left out."""
    out = []
    for role, verify in ((Role.control, GALERA_RABBITMQ_STATUS),
                         (Role.network, "openstack network agent list --host HOST")):
        for node in sorted(inventory.by_role(role), key=lambda n: (n.rack, n.name)):
            if node.name in skip:
                continue
            steps = [PlanStep(description=work.description, command=work.command)] if work.separate else []
            steps += [PlanStep(description="Reboot", command="ssh HOST sudo reboot",
                               seconds=float(defaults.host_reboot_seconds)),
                      PlanStep(description="Wait until it is back in its clusters before the next host"
                               if role == Role.control else "Verify its agents report up", command=verify)]
            out.append(PlanStep(description=f"{role.value.title()} host {node.name} [HOST = {node.name}]: "
                                f"{work.short}, alone", children=steps))
    return out


def stuck_step(drain: DrainReport) -> PlanStep | None:
    """The hosts no batch can take, if any, with what to do about them."""
    stuck = [h.name for h in drain.hosts if not h.drainable] + list(drain.unbatched)
    if not stuck:
        return None
    return PlanStep(description=f"Hosts no batch can take ({len(stuck)}): free capacity or Ceph redundancy first, "
                    f"or stop their VMs: {', '.join(stuck[:10])}" + (" ..." if len(stuck) > 10 else ""))
