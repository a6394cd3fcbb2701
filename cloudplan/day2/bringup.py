"""Bringing an expansion's new nodes up: the ordered steps printed for the operator.

Kolla-Ansible's "Adding and removing hosts" guide: ``bootstrap-servers``, ``pull``
and ``deploy`` may be limited to the new compute hosts; when a controller is
among them, bootstrap and deploy include every controller (RabbitMQ and the
other clusters need each other's ``/etc/hosts`` entries), so ``--limit`` names
the ``control`` group too. Ceph hosts join by the regenerated host specs (the
spec form of ``ceph orch host add``, with the rack as CRUSH location and the
labels the manifests chose), then the regenerated OSD specs, whose new entries
are the new hosts' drives.
"""

from __future__ import annotations

from cloudplan.inventory import Inventory, Node, Role
from cloudplan.spec import Tier
from cloudplan.upgrade.models import PlanStep
from cloudplan.upgrade.plan import HEALTH_COMMANDS
from cloudplan.upgrade.roll import CEPH_HEALTH_WAIT, COMPUTE_UP_WAIT


def new_nodes(grown: Inventory, existing: Inventory) -> list[Node]:
    """The nodes of ``grown`` that ``existing`` does not have, by name."""
    old = {n.name for n in existing.nodes}
    return [n for n in grown.nodes if n.name not in old]


def _ceph(n: Node) -> bool:
    return any(n.drives.values())


def _cephadm_apply(manifests_dir: str, rel: str) -> str:
    # cephadm shell mounts a host file at /mnt/<its name> in the container
    name = rel.rsplit("/", 1)[-1]
    return f"cephadm shell -m {manifests_dir.rstrip('/')}/{rel} -- ceph orch apply -i /mnt/{name}"


def bring_up_new(grown: Inventory, existing: Inventory, *, inventory_file: str, manifests_dir: str = "deploy/",
                 blueprint_file: str | None = None, state_file: str = "expansion.db") -> PlanStep:
    """Provision the new nodes, regenerate the manifests (passwords kept), deploy Kolla and Ceph on them."""
    new = new_nodes(grown, existing)
    names = ",".join(n.name for n in new)
    kolla_inventory = f"{manifests_dir.rstrip('/')}/multinode"
    bp = f" --blueprint {blueprint_file}" if blueprint_file else ""
    children = [
        PlanStep(description=f"Provision the {len(new)} new node(s) only (the standing ones are not touched)",
                 command=f"cloudplan provision {inventory_file} --state {state_file} --only {names}"),
        PlanStep(description="Regenerate the Kolla-Ansible and cephadm files for the grown cloud (every existing "
                             "password kept)", command=f"cloudplan manifests {inventory_file} -o {manifests_dir}{bp}"),
    ]
    kolla = [n for n in new if n.role != Role.storage]
    if kolla:
        hosts = ",".join(n.name for n in kolla)
        limit = f"control,{hosts}" if any(n.role == Role.control for n in kolla) else hosts
        children += [
            PlanStep(description="Prepare the new hosts for Kolla (Docker, users, /etc/hosts)",
                     command=f"kolla-ansible bootstrap-servers -i {kolla_inventory} --limit {limit}"),
            PlanStep(description="Run Kolla's prechecks on them",
                     command=f"kolla-ansible prechecks -i {kolla_inventory} --limit {limit}"),
            PlanStep(description="Pull the images to them",
                     command=f"kolla-ansible pull -i {kolla_inventory} --limit {hosts}"),
            PlanStep(description="Deploy their containers",
                     command=f"kolla-ansible deploy -i {kolla_inventory} --limit {limit}"),
        ]
    ceph = [n for n in new if _ceph(n)]
    if ceph:
        children += [PlanStep(description=f"Let cephadm reach {n.name}", command=f"ssh-copy-id -f -i "
                              f"/etc/ceph/ceph.pub root@{n.name}") for n in ceph]
        children += [
            PlanStep(description="Add the new hosts to Ceph (the host specs: `ceph orch host add` with their "
                                 "labels and rack)", command=_cephadm_apply(manifests_dir, "ceph/hosts.yaml")),
            PlanStep(description="Create OSDs on their drives (the OSD specs; the standing hosts' are unchanged)",
                     command=_cephadm_apply(manifests_dir, "ceph/osd-specs.yaml")),
        ]
        # The manifests write the later specs when a host has both NVMe and SSD data drives.
        if any(n.drives.get(Tier.nvme) and n.drives.get(Tier.ssd) for n in grown.nodes):
            children.append(PlanStep(description="Then the SSD specs of hosts that also carry NVMe drives",
                                     command=_cephadm_apply(manifests_dir, "ceph/osd-specs-after-nvme.yaml")))
        children.append(PlanStep(description="Wait for HEALTH_OK (data rebalances onto the new OSDs)",
                                 command=CEPH_HEALTH_WAIT))
    children += [PlanStep(description=f"Wait until {n.name}'s nova-compute reports up",
                          command=COMPUTE_UP_WAIT.replace("HOST", n.name)) for n in new if n.role == Role.compute]
    children.append(PlanStep(description="Verify health", command=HEALTH_COMMANDS))
    return PlanStep(description=f"Bring the {len(new)} new node(s) of {grown.name or 'the cloud'} up",
                    children=children)
