"""The ordered upgrade plan, as a tree of steps with estimated durations.

The layout follows what operators know from Canonical's
charmed-openstack-upgrader (``cou plan``): a root "Upgrade cloud from X to Y",
checks and backups with the running release's tools, the new release's tools,
the control plane service by service, then the hosts in batches. The commands
are the ones Kolla-Ansible's upgrade guide gives, each checked in the tests
against the release's own CLI:

* the control plane runs ``kolla-ansible upgrade --tags <service>`` in the
  order of Kolla's ``site.yml`` (Open vSwitch and OVN before Nova), with no
  ``--limit``, as the guide advises (known Nova bugs with ``--limit``); the
  plays each tag selects are stated and checked;
* the host batches (drain, reboot, Ceph ``noout``) are not part of Kolla's
  procedure: they move each host's VMs off so they restart on the new
  nova-libvirt and QEMU, and let hosts be rebooted, while every Ceph pool
  stays at or above ``min_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cloudplan.inventory import Inventory, Role
from cloudplan.upgrade.groups import ServiceMove
from cloudplan.upgrade.kolla import (
    KOLLA_RELEASES,
    PASSWORDS_TEMPLATE,
    RABBITMQ_STEPS,
    SERVICE_TAGS,
    ServiceTag,
    claimed_plays,
    rabbitmq_move_allowed,
    service_tags,
)
from cloudplan.upgrade.models import Batch, DrainReport, PlanStep, UpgradeDefaults
from cloudplan.upgrade.releases import Hop
# CEPH_HEALTH_WAIT lived here before the roll had a module of its own: still importable from here.
from cloudplan.upgrade.roll import CEPH_HEALTH_WAIT, REBOOT_ONLY, batch_step, infra_hosts, stuck_step  # noqa: F401

# Enabled when the manifests do not say otherwise: the blueprint's scope
# (IaaS plus container orchestration).
DEFAULT_ENABLED_SERVICES: set[str] = {t.key for t in SERVICE_TAGS if t.default}
# Service order of the plan (Kolla's site.yml), by the first tag of each step.
KOLLA_UPGRADE_ORDER: list[str] = [t.key for t in SERVICE_TAGS]
# Services whose agents use RabbitMQ and must be stopped while its state is reset.
RABBITMQ_USERS = ("glance", "cinder", "nova", "neutron", "heat", "magnum")
# The first release whose services need durable (quorum) queues.
DURABLE_QUEUES_FROM = "2025.1"
HEALTH_COMMANDS = (
    "openstack compute service list; openstack network agent list; openstack volume service list; "
    "docker exec rabbitmq rabbitmqctl cluster_status; "
    "docker exec -it mariadb mysql -u root -p -e \"SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'\"; "
    "cephadm shell -- ceph -s")


@dataclass
class PlanInputs:
    """What the plan is built from besides the hop and the batches."""

    services: set[str] = field(default_factory=lambda: set(DEFAULT_ENABLED_SERVICES))
    moves: list[ServiceMove] = field(default_factory=list)
    cinder_backends: list[str] = field(default_factory=list)
    cinder_cluster: str = ""
    osd_hosts: set[str] = field(default_factory=set)
    # cloudplan's manifests render the new release (else the operator merges Kolla's samples by hand).
    manifests_render: bool = True


def _step(defaults: UpgradeDefaults, key: str, description: str, command: str | None = None,
          children: list[PlanStep] | None = None) -> PlanStep:
    return PlanStep(description=description, command=command, seconds=float(defaults.step_seconds.get(key, 0)),
                    children=children or [])


def _before(a: str, b: str) -> bool:
    """Release id ``a`` is older than ``b`` (YYYY.N compares as numbers)."""
    return tuple(int(x) for x in a.split(".")) < tuple(int(x) for x in b.split("."))


def checks_and_backups(hop: Hop, inputs: PlanInputs, defaults: UpgradeDefaults) -> PlanStep:
    src, dst = hop.from_release, hop.to_release
    children = [
        _step(defaults, "health", "Verify health: compute, network and volume services up, RabbitMQ cluster "
              "running, Galera wsrep_cluster_size equal to the controllers, Ceph HEALTH_OK, no VM in ERROR or "
              "migrating", HEALTH_COMMANDS),
        _step(defaults, "config_backup", "Back up the configuration (globals.yml, passwords.yml, inventory)",
              f"cp -a /etc/kolla /etc/kolla.before-{dst.key}"),
        _step(defaults, "db_backup", "Back up the MariaDB databases (needs enable_mariabackup: yes)",
              "kolla-ansible mariadb-backup --full"),
    ]
    if hop.skip_level:
        children.append(_step(
            defaults, "online_migrations", f"Confirm the online data migrations of {src.key} are complete "
            "(a skip-level hop needs them done): both report nothing left to migrate",
            "docker exec nova_api nova-manage db online_data_migrations; "
            "docker exec cinder_api cinder-manage db online_data_migrations"))
    if _before(src.key, DURABLE_QUEUES_FROM) and not _before(dst.key, DURABLE_QUEUES_FROM):
        children.append(durable_queues(inputs, defaults))
    old, new = KOLLA_RELEASES.get(src.key), KOLLA_RELEASES.get(dst.key)
    if old and new and old.rabbitmq and new.rabbitmq and not rabbitmq_move_allowed(old.rabbitmq, new.rabbitmq):
        for version in RABBITMQ_STEPS.get((old.rabbitmq, new.rabbitmq), ()):
            children.append(_step(defaults, "rabbitmq_step", f"Upgrade RabbitMQ to {version} with the {src.key} "
                                  f"kolla-ansible (its latest {old.major}.x), before installing the new one: "
                                  f"RabbitMQ cannot go {old.rabbitmq} -> {new.rabbitmq} in one step",
                                  f"kolla-ansible rabbitmq-upgrade {version}"))
    return PlanStep(description=f"Checks and backups, with the running {src.key} tools", children=children)


def durable_queues(inputs: PlanInputs, defaults: UpgradeDefaults) -> PlanStep:
    """Kolla's procedure for durable (quorum) queues, required before any upgrade to 2025.1."""
    tags = ",".join(s for s in RABBITMQ_USERS if s in inputs.services)
    return _step(defaults, "rabbitmq_migration", "Migrate RabbitMQ to durable (quorum) queues, as Kolla requires "
                 f"before any upgrade to {DURABLE_QUEUES_FROM}: set om_enable_rabbitmq_quorum_queues: true "
                 "(and om_enable_rabbitmq_high_availability: false) in globals.yml, then", children=[
        PlanStep(description="Generate the new configuration of every service (restart nothing yet)",
                 command="kolla-ansible genconfig"),
        PlanStep(description="Stop the services that use RabbitMQ", command=f"kolla-ansible stop --tags {tags} "
                 "--yes-i-really-really-mean-it"),
        PlanStep(description="Reconfigure RabbitMQ (it used om_enable_rabbitmq_high_availability)",
                 command="kolla-ansible reconfigure --tags rabbitmq"),
        PlanStep(description="Reset RabbitMQ's state, dropping the old transient queues and exchanges",
                 command="kolla-ansible rabbitmq-reset-state"),
        PlanStep(description="Start the services again: they declare their queues durable",
                 command=f"kolla-ansible deploy --tags {tags}"),
    ])


def _config_step(dst: str, inputs: PlanInputs, defaults: UpgradeDefaults, inventory_file: str) -> PlanStep:
    if inputs.manifests_render:
        return _step(defaults, "config_merge", "Regenerate the inventory and globals.yml for the new release and "
                     "review the differences (the configuration diff below) before copying them into /etc/kolla",
                     f"cloudplan manifests {inventory_file} -o deploy-{dst}/ --release {dst}")
    return _step(defaults, "config_merge", f"Merge the new release's sample inventory and globals.yml into yours "
                 f"by hand: cloudplan's manifests do not render {dst}",
                 "diff -u multinode \"$VIRTUAL_ENV/share/kolla-ansible/ansible/inventory/multinode\"")


def new_tools(hop: Hop, inputs: PlanInputs, defaults: UpgradeDefaults, inventory_file: str) -> PlanStep:
    dst = hop.to_release
    new = KOLLA_RELEASES.get(dst.key)
    core = new.ansible_core_spec if new else None
    if new is not None:
        children = [_step(defaults, "kolla_ansible", f"Install Kolla-Ansible {new.major}.x for {dst.label}",
                          f"pip install --upgrade '{new.pip_spec}'")]
    else:  # no guessed version: the operator takes it from the release's docs
        children = [_step(defaults, "kolla_ansible", f"Install the Kolla-Ansible series of {dst.label} (not known "
                          "to cloudplan: take the version from the release's docs)")]
    rng = f" {new.ansible_core[0]} to {new.ansible_core[1]}" if new and new.ansible_core else ""
    skip = " (required on this skip-level hop)" if hop.skip_level else ""
    children.append(_step(defaults, "ansible_core", f"Install the ansible-core{rng} that {dst.key} supports{skip}",
                          f"pip install --upgrade '{core}'" if core else None))
    children += [
        _step(defaults, "install_deps", "Install the Ansible Galaxy collections the new release needs",
              "kolla-ansible install-deps"),
        _config_step(dst.key, inputs, defaults, inventory_file),
        _step(defaults, "passwords", "Merge passwords: copy the new release's passwords template, fill its new "
              "keys, keep every existing value",
              f"cp /etc/kolla/passwords.yml passwords.yml.old && cp \"$VIRTUAL_ENV/{PASSWORDS_TEMPLATE}\" "
              "passwords.yml.new && kolla-genpwd -p passwords.yml.new && kolla-mergepwd --old passwords.yml.old "
              "--new passwords.yml.new --final /etc/kolla/passwords.yml"),
        _step(defaults, "pull", f"Pull the {dst.key} images to every host", "kolla-ansible pull"),
        _step(defaults, "prechecks", "Run Kolla-Ansible's prechecks", "kolla-ansible prechecks"),
    ]
    return PlanStep(description=f"New tools and configuration for {dst.key}", children=children)


def _tag_step(tag: ServiceTag, hop: Hop, controllers: list[str], defaults: UpgradeDefaults) -> PlanStep:
    where = " on every host that runs it" if tag.on_compute else (
        f" on {', '.join(controllers)}" if controllers else "")
    note = (": its plays also recreate the compute hosts' containers in place (running VMs keep running)"
            if tag.on_compute and tag.key != "common" else "")
    return PlanStep(description=f"Upgrade {tag.label}{where}{note}",
                    command=f"kolla-ansible upgrade --tags {','.join(tag.tags)}",
                    seconds=float(sum(defaults.service_restart_seconds.get(t, 0) for t in tag.tags) or 300),
                    plays=claimed_plays(tag, KOLLA_RELEASES.get(hop.to_release.key)))


def cinder_move(moves: list[ServiceMove], inputs: PlanInputs, defaults: UpgradeDefaults) -> PlanStep | None:
    """Steps for the volumes the leaving cinder-volume hosts own, and their services."""
    if not moves:
        return None
    children = []
    leaving = sorted({h for m in moves for h in m.leaving})
    if leaving:
        children.append(PlanStep(description="Remove the Cinder containers Kolla leaves on the hosts no longer in "
                                 f"the groups [HOST = each of {', '.join(leaving)}]",
                                 command="ssh HOST sudo docker rm -f cinder_volume cinder_backup"))
    vol = next((m for m in moves if m.group == "cinder-volume"), None)
    if vol is not None and vol.new_hosts and not inputs.cinder_cluster:
        target = vol.new_hosts[0]
        for old in vol.leaving:
            for backend in inputs.cinder_backends or ["BACKEND"]:
                children.append(PlanStep(
                    description=f"Give {old}'s {backend} volumes to {target}",
                    command=f"docker exec cinder_api cinder-manage volume update_host "
                            f"--currenthost {old}@{backend} --newhost {target}@{backend}"))
    for m in moves:
        service = m.group
        for old in m.leaving:
            hosts = [f"{old}@{b}" for b in inputs.cinder_backends] if service == "cinder-volume" and \
                inputs.cinder_backends else [old]
            for h in hosts:
                children.append(PlanStep(description=f"Drop the {service} service record of {h}",
                                         command=f"docker exec cinder_api cinder-manage service remove {service} {h}"))
    moved = "; ".join(f"{m.group}: {', '.join(m.old_hosts) or 'none'} -> {', '.join(m.new_hosts) or 'none'}"
                      for m in moves)
    owner = (f"the volumes belong to cluster {inputs.cinder_cluster}" if inputs.cinder_cluster
             else "each volume is owned by the host@backend that created it")
    children.append(PlanStep(description="Verify: every cinder-volume and cinder-backup service up on the new "
                             "hosts, none left on the old ones", command="openstack volume service list"))
    return _step(defaults, "cinder_move", f"Move Cinder's services to their new hosts ({moved}); {owner}",
                 children=children)


def control_plane(hop: Hop, inventory: Inventory, inputs: PlanInputs, defaults: UpgradeDefaults) -> PlanStep:
    controllers = [n.name for n in inventory.by_role(Role.control)]
    children = []
    for tag in service_tags(KOLLA_RELEASES.get(hop.to_release.key)):
        if tag.key not in inputs.services:
            continue
        children.append(_tag_step(tag, hop, controllers, defaults))
        if tag.key == "cinder":
            move = cinder_move(inputs.moves, inputs, defaults)
            if move is not None:
                children.append(move)
    return PlanStep(description="Control plane: Kolla-Ansible's documented upgrade, service by service in "
                                "site.yml order, without --limit", children=children)


def _batch_step(b: Batch, inputs: PlanInputs, hop: Hop) -> PlanStep:
    return batch_step(b, inputs.osd_hosts, replace(REBOOT_ONLY, disable_reason=f"upgrade to {hop.to_release.key}"))


def host_batches(drain: DrainReport, inputs: PlanInputs, hop: Hop, inventory: Inventory,
                 defaults: UpgradeDefaults) -> PlanStep:
    batched = {h for b in drain.batches for h in b.hosts} | set(drain.unbatched) | inputs.osd_hosts
    children = infra_hosts(inventory, defaults, batched) + [_batch_step(b, inputs, hop) for b in drain.batches]
    stuck = stuck_step(drain)
    if stuck is not None:
        children.append(stuck)
    return PlanStep(description="Hosts in batches (off Kolla's documented path): drain, reboot, Ceph kept at or "
                                "above min_size", children=children)


def post_upgrade(inputs: PlanInputs, defaults: UpgradeDefaults) -> PlanStep:
    extra = "; openstack coe service list" if "magnum" in inputs.services else ""
    return PlanStep(description="Post-upgrade", children=[
        _step(defaults, "verify", "Verify: every service and agent up, Galera and RabbitMQ clustered, Ceph "
              "HEALTH_OK; create, live-migrate and delete a test VM", HEALTH_COMMANDS + extra),
        _step(defaults, "prune", "Remove the previous release's images from every host",
              "kolla-ansible prune-images --yes-i-really-really-mean-it"),
    ])


def build_plan(hop: Hop, inventory: Inventory, drain: DrainReport, *, services: set[str] | None = None,
               defaults: UpgradeDefaults | None = None, inputs: PlanInputs | None = None,
               inventory_file: str = "inventory.yaml") -> PlanStep:
    """The whole plan for one hop."""
    defaults = defaults or UpgradeDefaults()
    inputs = inputs or PlanInputs()
    if services is not None:
        inputs.services = set(services)
    children = [checks_and_backups(hop, inputs, defaults), new_tools(hop, inputs, defaults, inventory_file),
                control_plane(hop, inventory, inputs, defaults), host_batches(drain, inputs, hop, inventory, defaults),
                post_upgrade(inputs, defaults)]
    return PlanStep(description=f"Upgrade cloud from '{hop.from_release.key}' ({hop.from_release.name}) to "
                                f"'{hop.to_release.key}' ({hop.to_release.name})", children=children)
