"""The ordered upgrade plan, as a tree of steps with estimated durations.

The layout follows what operators know from Canonical's
charmed-openstack-upgrader (``cou plan``): a root "Upgrade cloud from X to Y",
pre-upgrade checks and backups, the control plane service by service, then
the data plane host group by host group. The commands are Kolla-Ansible's:
``kolla-ansible upgrade`` walks the services in the order of its
``ansible/site.yml`` (common, load balancer, MariaDB, memcached, RabbitMQ,
Keystone, Glance, Cinder, Placement, Nova, Open vSwitch/OVN, Neutron, Heat,
Horizon, Magnum, ...), so the plan does too.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from cloudplan.inventory import Inventory, Role
from cloudplan.upgrade.models import DrainReport, UpgradeDefaults
from cloudplan.upgrade.releases import Hop

# Kolla-Ansible's service order (ansible/site.yml), restricted to the services
# a cloudplan IaaS + Magnum control plane runs.
KOLLA_UPGRADE_ORDER: list[str] = [
    "common", "loadbalancer", "mariadb", "memcached", "prometheus", "rabbitmq", "keystone", "glance",
    "cinder", "placement", "nova", "openvswitch", "ovn", "neutron", "heat", "horizon", "magnum",
    "barbican", "designate", "octavia",
]
# Enabled when the manifests do not say otherwise: the blueprint's scope
# (IaaS plus container orchestration).
DEFAULT_ENABLED_SERVICES: set[str] = {
    "common", "loadbalancer", "mariadb", "memcached", "rabbitmq", "keystone", "glance", "cinder",
    "placement", "nova", "openvswitch", "neutron", "heat", "horizon", "magnum",
}
SERVICE_LABELS: dict[str, str] = {
    "common": "common (fluentd, cron, kolla-toolbox)", "loadbalancer": "loadbalancer (HAProxy, keepalived)",
    "mariadb": "MariaDB (Galera)", "memcached": "memcached", "prometheus": "Prometheus",
    "rabbitmq": "RabbitMQ", "keystone": "Keystone", "glance": "Glance", "cinder": "Cinder",
    "placement": "Placement", "nova": "Nova control services (API, scheduler, conductor)",
    "openvswitch": "Open vSwitch (controllers and network nodes)", "ovn": "OVN databases and northd",
    "neutron": "Neutron server and agents on network nodes", "heat": "Heat", "horizon": "Horizon",
    "magnum": "Magnum", "barbican": "Barbican", "designate": "Designate", "octavia": "Octavia",
}
# RabbitMQ cannot skip a minor version; the intermediate versions Kolla-Ansible
# needs on a skip-level hop, where known (2023.1 -> 2024.1: 3.11 -> 3.12 -> 3.13,
# `kolla-ansible rabbitmq-upgrade <version>`). Other SLURP hops get a generic step.
RABBITMQ_INTERMEDIATE: dict[tuple[str, str], list[str]] = {
    ("2023.1", "2024.1"): ["3.12", "3.13"],
}


class PlanStep(BaseModel):
    """One step of the plan; a step with children takes the sum of theirs."""

    description: str = Field(description="what is done, in the operator's words")
    command: str | None = Field(default=None, description="the command that does it, if one")
    seconds: float = Field(default=0.0, description="estimated wall time of this step alone, seconds")
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


def _step(defaults: UpgradeDefaults, key: str, description: str, command: str | None = None) -> PlanStep:
    return PlanStep(description=description, command=command, seconds=float(defaults.step_seconds.get(key, 0)))


def pre_checks(hop: Hop, defaults: UpgradeDefaults) -> PlanStep:
    to = hop.to_release
    return PlanStep(description="Pre-upgrade checks and backups", children=[
        _step(defaults, "health", "Verify cluster health: all compute services and network agents up, "
              "Galera cluster synced, RabbitMQ cluster running, no VM in ERROR or migrating",
              "openstack compute service list; openstack network agent list"),
        _step(defaults, "db_backup", "Back up MariaDB databases", "kolla-ansible mariadb_backup"),
        _step(defaults, "config_backup", "Back up /etc/kolla (globals.yml, passwords.yml, inventory)",
              "tar czf kolla-config-backup.tgz /etc/kolla"),
        _step(defaults, "kolla_ansible", f"Install Kolla-Ansible for {to.label}",
              f"pip install --upgrade 'kolla-ansible @ git+https://opendev.org/openstack/kolla-ansible"
              f"@stable/{to.key}'"),
        _step(defaults, "passwords", "Merge passwords for the new release's new keys",
              "kolla-genpwd -p passwords.yml.new && kolla-mergepwd --old passwords.yml.old "
              "--new passwords.yml.new --final /etc/kolla/passwords.yml"),
        _step(defaults, "config_merge", "Merge globals.yml and the inventory into the new release's examples "
              "(see the configuration diff)"),
        _step(defaults, "pull", f"Pull the {to.key} images to every host", "kolla-ansible pull"),
        _step(defaults, "prechecks", "Run Kolla-Ansible prechecks", "kolla-ansible prechecks"),
    ])


def hop_steps(hop: Hop, defaults: UpgradeDefaults) -> PlanStep | None:
    """Steps this particular hop needs before the services move."""
    if not hop.skip_level:
        return None
    key = (hop.from_release.key, hop.to_release.key)
    versions = RABBITMQ_INTERMEDIATE.get(key)
    children = []
    if versions:
        for v in versions:
            children.append(_step(defaults, "rabbitmq_step", f"Upgrade RabbitMQ to {v} (intermediate version: "
                                  "RabbitMQ cannot skip a minor version)", f"kolla-ansible rabbitmq-upgrade {v}"))
    else:
        children.append(_step(defaults, "rabbitmq_step",
                              "Upgrade RabbitMQ through the intermediate minor version(s) between the versions "
                              f"{hop.from_release.key} and {hop.to_release.key} ship (RabbitMQ cannot skip a "
                              "minor version); check the Kolla-Ansible release notes",
                              "kolla-ansible rabbitmq-upgrade <version>"))
    children.append(PlanStep(description=f"Confirm online data migrations of {hop.from_release.key} are complete "
                             "before a skip-level upgrade",
                             command="nova-manage db online_data_migrations (reports 0 remaining)"))
    return PlanStep(description=f"Skip-level (SLURP) hop steps for {hop.label}", children=children)


def control_plane(inventory: Inventory, services: set[str], defaults: UpgradeDefaults) -> PlanStep:
    controllers = [n.name for n in inventory.by_role(Role.control)]
    where = f" on {', '.join(controllers)}" if controllers else ""
    children = []
    for svc in KOLLA_UPGRADE_ORDER:
        if svc not in services:
            continue
        children.append(PlanStep(
            description=f"Upgrade {SERVICE_LABELS.get(svc, svc)}{where}",
            command=f"kolla-ansible upgrade --tags {svc} --limit control,network" if svc not in ("common",)
            else "kolla-ansible upgrade --tags common",
            seconds=float(defaults.service_restart_seconds.get(svc, 300))))
    return PlanStep(description="Control plane upgrade, in Kolla-Ansible's service order", children=children)


def data_plane(drain: DrainReport, defaults: UpgradeDefaults) -> PlanStep:
    children = []
    for b in drain.batches:
        hosts = ",".join(b.hosts)
        shown = ", ".join(b.hosts[:6]) + (f" and {len(b.hosts) - 6} more" if len(b.hosts) > 6 else "")
        children.append(PlanStep(description=f"Batch {b.index}: {len(b.hosts)} host(s) in {', '.join(b.racks)}: "
                                 f"{shown}", children=[
            PlanStep(description="Disable the compute services so nothing new is scheduled there",
                     command="openstack compute service set --disable --disable-reason upgrade HOST nova-compute"),
            PlanStep(description=f"Live-migrate {b.vms} VM(s), {b.ram_gib:g} GiB of RAM, to the other hosts",
                     command="nova host-evacuate-live HOST", seconds=b.migration_seconds),
            PlanStep(description="Upgrade nova-compute, nova-libvirt and the Neutron agent",
                     command=f"kolla-ansible upgrade --limit {hosts}", seconds=b.upgrade_seconds),
            PlanStep(description="Enable the compute services and verify they report up",
                     command="openstack compute service set --enable HOST nova-compute"),
        ]))
    stuck = [h.name for h in drain.hosts if not h.drainable]
    if stuck:
        children.append(PlanStep(description=f"Hosts that cannot be drained ({len(stuck)}): free capacity first, "
                                 f"or upgrade them with their VMs shut down: {', '.join(stuck[:10])}"
                                 + (" ..." if len(stuck) > 10 else "")))
    return PlanStep(description="Data plane: compute hosts in batches", children=children)


def post_upgrade(defaults: UpgradeDefaults) -> PlanStep:
    return PlanStep(description="Post-upgrade", children=[
        _step(defaults, "online_migrations", "Run online data migrations",
              "nova-manage db online_data_migrations; cinder-manage db online_data_migrations"),
        _step(defaults, "verify", "Verify: services and agents up, create and live-migrate a test VM",
              "openstack compute service list; openstack network agent list"),
    ])


def build_plan(hop: Hop, inventory: Inventory, drain: DrainReport, *, services: set[str] | None = None,
               defaults: UpgradeDefaults | None = None) -> PlanStep:
    """The whole plan for one hop."""
    defaults = defaults or UpgradeDefaults()
    services = services if services is not None else DEFAULT_ENABLED_SERVICES
    children = [pre_checks(hop, defaults)]
    extra = hop_steps(hop, defaults)
    if extra is not None:
        children.append(extra)
    children += [control_plane(inventory, services, defaults), data_plane(drain, defaults), post_upgrade(defaults)]
    return PlanStep(description=f"Upgrade cloud from '{hop.from_release.key}' ({hop.from_release.name}) to "
                                f"'{hop.to_release.key}' ({hop.to_release.name})", children=children)
