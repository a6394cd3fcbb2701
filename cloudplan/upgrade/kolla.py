"""What the plan knows about each Kolla-Ansible release: its CLI, tags, tool versions and notes.

Every table here is checked, in the tests, against the release's own wheel:
the ``kolla_ansible.cli`` entry points (the subcommands that exist), the
options each command's parser adds, the plays ``ansible-playbook site.yml
--tags X --list-tasks`` selects, the ansible-core range of its docs and the
RabbitMQ role's ``rabbitmq_allowed_upgrades``. A release outside these tables
gets the generic steps and a warning, never a guessed command.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KollaRelease:
    """Facts about the Kolla-Ansible series that deploys one OpenStack release."""

    openstack: str
    major: int
    # ansible-core range of the release's docs (doc/source/conf.py ANSIBLE_CORE_VERSION_MIN/MAX);
    # None for a series whose wheel the tests do not read.
    ansible_core: tuple[str, str] | None = None
    # RabbitMQ major.minor its images ship, where known; None: Kolla's rabbitmq-version-check decides.
    rabbitmq: str | None = None
    # `--tags common` plays differ between series: 21.x has one common role, 22.x split it.
    common_plays: tuple[str, ...] = ("Apply role logs", "Apply role kolla_toolbox")
    # 23.x moved MariaDB ahead of the load balancer in site.yml.
    mariadb_before_loadbalancer: bool = False

    @property
    def pip_spec(self) -> str:
        return f"kolla-ansible>={self.major}.0.0,<{self.major + 1}"

    @property
    def ansible_core_spec(self) -> str | None:
        if self.ansible_core is None:
            return None
        lo, hi = self.ansible_core
        return f"ansible-core>={lo},<{hi}.99"


KOLLA_RELEASES: dict[str, KollaRelease] = {r.openstack: r for r in (
    KollaRelease("2023.1", 16, rabbitmq="3.11"),
    KollaRelease("2024.1", 18, rabbitmq="3.13"),
    KollaRelease("2025.1", 20, rabbitmq="4.0"),
    KollaRelease("2025.2", 21, ("2.18", "2.19"), rabbitmq="4.1", common_plays=("Apply role common",)),
    KollaRelease("2026.1", 22, ("2.19", "2.20"), rabbitmq="4.2"),
    KollaRelease("2026.2", 23, ("2.20", "2.21"), mariadb_before_loadbalancer=True),
)}

# RabbitMQ moves Kolla's rabbitmq-version-check allows besides "the next minor"
# (roles/rabbitmq/defaults/main.yml of 22.x and 23.x; overridable in globals.yml).
RABBITMQ_ALLOWED_UPGRADES: dict[str, tuple[str, ...]] = {
    "3.13": ("4.0", "4.1", "4.2"),
    "4.0": ("4.1", "4.2"),
}

# RabbitMQ moves that need stepping through versions, with the running release's
# (latest) kolla-ansible before the new one is installed: on 2023.1, 3.11 -> 3.12
# -> 3.13 ahead of the 2024.1 upgrade (Kolla's 2024.1 RabbitMQ SLURP notes).
RABBITMQ_STEPS: dict[tuple[str, str], tuple[str, ...]] = {
    ("3.11", "3.13"): ("3.12", "3.13"),
}


def rabbitmq_move_allowed(old: str, new: str) -> bool:
    """Whether Kolla's version check lets RabbitMQ go from ``old`` to ``new`` in one upgrade."""
    if old == new:
        return True
    (o_major, o_minor), (n_major, n_minor) = (tuple(int(x) for x in v.split(".")[:2]) for v in (old, new))
    return (o_major == n_major and n_minor == o_minor + 1) or new in RABBITMQ_ALLOWED_UPGRADES.get(old, ())


@dataclass(frozen=True)
class ServiceTag:
    """One `kolla-ansible upgrade --tags` step of the control plane and the plays it runs."""

    tags: tuple[str, ...]
    label: str
    plays: tuple[str, ...]
    # The service's plays also run on compute hosts (their containers are recreated in place).
    on_compute: bool = False
    # Enabled by default in a cloudplan control plane (IaaS + Magnum).
    default: bool = True

    @property
    def key(self) -> str:
        return self.tags[0]


_LB = "Apply role loadbalancer"
# Kolla-Ansible's site.yml order (openvswitch and OVN before Nova), restricted to a
# cloudplan control plane. `plays` are the plays with tasks that the tags select.
SERVICE_TAGS: list[ServiceTag] = [
    ServiceTag(("common", "cron", "fluentd"), "the log volume, kolla-toolbox, cron and fluentd",
               ("COMMON", "Apply role cron", "Apply role fluentd"), on_compute=True),
    ServiceTag(("loadbalancer",), "HAProxy and keepalived", (_LB,)),
    ServiceTag(("mariadb",), "MariaDB (Galera)",
               (_LB, "Apply role mariadb", "Restart mariadb services", "Start mariadb services",
                "Restart bootstrap mariadb service", "Apply mariadb post-configuration")),
    ServiceTag(("memcached",), "memcached", (_LB, "Apply role memcached")),
    ServiceTag(("rabbitmq",), "RabbitMQ (guarded by rabbitmq_allowed_upgrades)",
               (_LB, "Apply role rabbitmq", "Restart rabbitmq services", "Apply rabbitmq post-configuration")),
    ServiceTag(("keystone",), "Keystone", (_LB, "Apply role keystone")),
    ServiceTag(("glance",), "Glance", (_LB, "Apply role glance")),
    ServiceTag(("cinder",), "Cinder (API, scheduler, volume, backup)", (_LB, "Apply role cinder")),
    ServiceTag(("placement",), "Placement", (_LB, "Apply role placement")),
    ServiceTag(("openvswitch",), "Open vSwitch", ("Apply role openvswitch",), on_compute=True),
    ServiceTag(("ovn",), "OVN controllers and databases", ("Apply role ovn-controller", "Apply role ovn-db"),
               on_compute=True, default=False),
    ServiceTag(("nova",), "Nova: API, scheduler, conductors, then nova-compute and nova-libvirt (its cell)",
               (_LB, "Bootstrap nova API databases", "Bootstrap nova cell databases", "Apply role nova",
                "Apply role nova-cell", "Refresh nova scheduler cell cache",
                "Reload global Nova super conductor services", "Reload Nova cell services",
                "Reload global Nova API services", "Run Nova API online data migrations",
                "Run Nova cell online data migrations"), on_compute=True),
    ServiceTag(("neutron",), "Neutron server and agents", (_LB, "Apply role neutron"), on_compute=True),
    ServiceTag(("heat",), "Heat", (_LB, "Apply role heat")),
    ServiceTag(("horizon",), "Horizon", (_LB, "Apply role horizon")),
    ServiceTag(("magnum",), "Magnum", (_LB, "Apply role magnum")),
]


def service_tags(release: KollaRelease | None) -> list[ServiceTag]:
    """The control-plane steps in the order of ``release``'s site.yml."""
    tags = list(SERVICE_TAGS)
    if release is not None and release.mariadb_before_loadbalancer:
        i, j = (next(k for k, t in enumerate(tags) if t.key == key) for key in ("loadbalancer", "mariadb"))
        tags[i], tags[j] = tags[j], tags[i]
    return tags


def claimed_plays(tag: ServiceTag, release: KollaRelease | None) -> list[str]:
    """The plays ``--tags`` selects in ``release``'s site.yml (the newest layout when unknown)."""
    common = release.common_plays if release is not None else KollaRelease("", 0).common_plays
    out: list[str] = []
    for p in tag.plays:
        out.extend(common if p == "COMMON" else (p,))
    return out


@dataclass(frozen=True)
class HopNote:
    """A note from a release's upgrade notes that matters to an IaaS + Magnum cloud."""

    text: str
    # Shown when one of these services is enabled (always when empty).
    services: tuple[str, ...] = ()
    source: str = ""


# Keyed by the release upgraded *to*. Each note names where it comes from.
UPGRADE_NOTES: dict[str, list[HopNote]] = {
    "2025.1": [
        HopNote("RabbitMQ queues must be durable (quorum) before this upgrade: run the queue migration "
                "(genconfig, stop, reconfigure --tags rabbitmq, rabbitmq-reset-state, deploy) first",
                ("rabbitmq",), source="Kolla-Ansible RabbitMQ guide, High Availability"),
        HopNote("Magnum deprecates its Heat driver in favour of the Cluster API drivers (k8s_capi_helm or "
                "k8s_cluster_api): plan the move of existing clusters now", ("magnum",),
                source="Magnum 2025.1 release notes"),
    ],
    "2026.1": [
        HopNote("Kolla-Ansible 22.x's prechecks refuse the test images unless --use-test-images is given, and "
                "its rabbitmq-version-check lets RabbitMQ move only as rabbitmq_allowed_upgrades says (3.13 and "
                "4.0 may go straight to 4.2)", ("rabbitmq",),
                source="kolla-ansible 22.x prechecks and RabbitMQ role defaults"),
    ],
    "2026.2": [
        HopNote("Magnum's Heat driver is removed in 2026.2: clusters built with it stop being managed. Move "
                "them to a Cluster API driver (k8s_capi_helm or k8s_cluster_api), which needs a Kubernetes "
                "management cluster, before the upgrade", ("magnum",),
                source="Magnum 2025.1 deprecation; removed in the 2026.2 series"),
        HopNote("Kolla-Ansible 23.x needs Python 3.12 or newer on the deployment host (and ansible-core "
                "2.20 or 2.21)", (), source="kolla-ansible 23.x package metadata and docs"),
    ],
}

# Where the new release's passwords template sits in a virtualenv that installed the wheel.
PASSWORDS_TEMPLATE = "share/kolla-ansible/etc_examples/kolla/passwords.yml"
