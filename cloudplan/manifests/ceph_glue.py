"""The hand-off from the cephadm cluster to Kolla-Ansible: ``ceph/kolla-config.sh``.

Kolla-Ansible's external-Ceph support reads, from its ``config/`` directory,
a ``ceph.conf`` and the client keyrings of each service (its external-ceph
guide; the nova, glance and cinder roles' ``external_ceph`` tasks). They can
only be made once the cluster exists, so cloudplan writes a script for the
operator to run after ``cephadm bootstrap`` and ``ceph/pools.sh``: it asks
the cluster for a minimal ``ceph.conf`` (``ceph config
generate-minimal-conf``) and for each client's keyring (``ceph auth get``)
and puts them where each role looks. The names follow the Kolla variables
(``ceph_cluster``, ``ceph_*_user``), overrides included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Kolla-Ansible's group_vars (ceph.yml) defaults; ceph_nova_user defaults to the Cinder user.
DEFAULTS = {"ceph_cluster": "ceph", "ceph_glance_user": "glance", "ceph_cinder_user": "cinder",
            "ceph_cinder_backup_user": "cinder-backup"}


@dataclass
class Keyring:
    user: str
    dirs: list[str]  # under config/, where Kolla-Ansible's tasks look for it


def names(settings: dict[str, Any]) -> dict[str, str]:
    """The cluster and user names from globals.yml (a Jinja2 reference keeps the default)."""
    out = {}
    for key, default in DEFAULTS.items():
        value = settings.get(key, default)
        out[key] = default if not isinstance(value, str) or "{{" in value else value
    nova = settings.get("ceph_nova_user")
    out["ceph_nova_user"] = nova if isinstance(nova, str) and "{{" not in nova else out["ceph_cinder_user"]
    return out


def context(settings: dict[str, Any]) -> dict[str, Any]:
    n = names(settings)
    keyrings = [
        Keyring(n["ceph_glance_user"], ["glance"]),
        Keyring(n["ceph_cinder_user"], ["cinder/cinder-volume", "cinder/cinder-backup"]),
        Keyring(n["ceph_cinder_backup_user"], ["cinder/cinder-backup"]),
        # nova-compute attaches Cinder's volumes (the cinder user) and keeps its disks as the nova user.
        Keyring(n["ceph_cinder_user"], ["nova"]),
    ]
    if n["ceph_nova_user"] != n["ceph_cinder_user"]:
        keyrings.append(Keyring(n["ceph_nova_user"], ["nova"]))
    return {"cluster": n["ceph_cluster"], "conf_dirs": ["glance", "cinder", "nova"], "keyrings": keyrings}
