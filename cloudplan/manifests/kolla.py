"""The settings cloudplan writes into Kolla-Ansible's ``globals.yml``, and their checks.

The recipe keeps the scope to IaaS plus Magnum: the core services, HAProxy
and keepalived in front of them with TLS, Magnum with what its clusters need
(Octavia, Barbican), Valkey for coordination, MariaDB backups, and
Cinder/Glance/Nova on an external Ceph cluster (deployed with cephadm from
``ceph/``) with one Cinder backend and pool per storage tier. Everything else keeps Kolla-Ansible's default (off)
unless the user's overrides ask for it. Every key, ours or the user's, must be
a variable the release defines.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudplan.errors import ManifestError
from cloudplan.manifests.release import ReleaseData
from cloudplan.manifests.site import Site
from cloudplan.spec import Tier

log = logging.getLogger(__name__)

# Kolla images are built on several distributions; Ubuntu LTS is the most
# deployed. An override of kolla_base_distro replaces it.
DEFAULT_BASE_DISTRO = "ubuntu"
VIP_KEY = "kolla_internal_vip_address"
UBUNTU_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Kolla-Ansible reads every enable_* flag through `| bool`; "yes"/"no" work in
# every release and read the same in the file.
YES, NO = "yes", "no"
# The core IaaS services the recipe keeps, switched on explicitly so the file
# says what runs.
CORE_SERVICES = ("keystone", "glance", "nova", "placement", "neutron", "heat", "horizon", "cinder")


@dataclass
class Section:
    """A commented block of globals.yml."""

    title: str
    settings: dict[str, Any]


def volume_pool(tier: Tier) -> str:
    return f"volumes-{tier.value}"


def cinder_backend(tier: Tier) -> str:
    return f"rbd-{tier.value}"


def cinder_ceph_backends(tiers: list[Tier]) -> list[dict[str, Any]]:
    """One Cinder RBD backend per tier, each on its own pool, in the release's list format."""
    return [{
        "name": cinder_backend(t),
        "backend_name": cinder_backend(t),
        "cluster": "{{ ceph_cluster }}",
        "user": "{{ ceph_cinder_user }}",
        "pool": volume_pool(t),
        # The release filters this list with `selectattr('enabled', 'equalto', true)`: a real boolean.
        "enabled": True,
    } for t in tiers]


def image_settings(site: Site, data: ReleaseData) -> dict[str, Any]:
    """Where the images come from: the site's registry and pinned tag, or (a lab) Kolla's test images."""
    cp = site.control_plane
    out: dict[str, Any] = {"kolla_base_distro": DEFAULT_BASE_DISTRO, "openstack_release": data.release}
    if cp.registry is None:
        if not cp.test_images:
            raise ManifestError(
                "control_plane.registry is not set: a production cloud pulls Kolla images from a registry it "
                "controls, with a pinned openstack_tag (control_plane.registry.address, .openstack_tag); "
                "for a lab, set control_plane.test_images: true to use quay.io/openstack.kolla")
        return out
    if cp.test_images:
        raise ManifestError("control_plane: registry and test_images are both set; choose one")
    reg = cp.registry
    out.update(docker_registry=reg.address, docker_namespace=reg.namespace, openstack_tag=reg.openstack_tag)
    if reg.username:
        out["docker_registry_username"] = reg.username
    if reg.insecure:
        out["docker_registry_insecure"] = YES
    return out


def image_warnings(site: Site, data: ReleaseData) -> list[str]:
    """Kolla's tags start with their release (2026.2-ubuntu-noble...): another one is likely a leftover."""
    reg = site.control_plane.registry
    if reg is not None and not reg.openstack_tag.startswith(f"{data.release}-"):
        return [f"control_plane.registry.openstack_tag {reg.openstack_tag!r} does not name OpenStack "
                f"{data.release}: the images may be of another release"]
    return []


def network_settings(site: Site) -> dict[str, Any]:
    out = {"kolla_internal_vip_address": site.vip, "kolla_external_vip_address": site.external_vip,
           **site.interfaces}
    if site.external_vip_interface:
        out["kolla_external_vip_interface"] = site.external_vip_interface
    if site.control_plane.external_fqdn:
        out["kolla_external_fqdn"] = site.control_plane.external_fqdn
    return out


def tls_settings(site: Site) -> dict[str, Any]:
    """Kolla's own certificate handling: haproxy.pem / haproxy-internal.pem and the CA in config/certificates/."""
    tls = YES if site.control_plane.tls else NO
    out: dict[str, Any] = {"kolla_enable_tls_internal": tls, "kolla_enable_tls_external": tls}
    if site.control_plane.tls:
        # Services and Magnum's clusters must trust a private CA; the Ubuntu images' CA bundle.
        out.update(kolla_copy_ca_into_containers=YES, openstack_cacert=UBUNTU_CA_BUNDLE)
    return out


def service_settings(site: Site) -> dict[str, Any]:
    services = {f"enable_{s}": YES for s in CORE_SERVICES}
    services.update({"enable_haproxy": YES, "enable_keepalived": YES, "enable_magnum": YES,
                     # Magnum's multi-master clusters and LoadBalancer services need Octavia;
                     # Barbican stores the clusters' certificates.
                     "enable_octavia": YES, "enable_barbican": YES,
                     # Coordination for Cinder's active-active volume service and Octavia's jobboard.
                     "enable_valkey": YES,
                     # `kolla-ansible mariadb-backup` does nothing without it.
                     "enable_mariabackup": YES,
                     # A trust acting as the cluster's creator: CVE-2016-7404, so only when the site opts in.
                     "enable_cluster_user_trust": YES if site.control_plane.magnum.cluster_user_trust else NO})
    return services


def group_hosts(site: Site, data: ReleaseData, group: str) -> set[str]:
    """Hosts of a Kolla service group, through the release's ``[group:children]`` sections."""
    children: dict[str, list[str]] = {}
    current = None
    for line in data.service_groups.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith(":children]"):
            current = children.setdefault(line[1:-len(":children]")], [])
        elif line.startswith("["):
            current = None
        elif line and not line.startswith("#") and current is not None:
            current.append(line)

    def walk(name: str, seen: frozenset = frozenset()) -> set[str]:
        if name in site.groups:
            return {n.name for n in site.groups[name]}
        return set().union(*(walk(c, seen | {name}) for c in children.get(name, []) if c not in seen))
    return walk(group)


def ceph_settings(site: Site, data: ReleaseData) -> dict[str, Any]:
    out: dict[str, Any] = {
        "glance_backend_ceph": YES,
        "glance_backend_file": NO,
        "nova_backend_ceph": YES,
        "cinder_backend_ceph": YES,
        "cinder_ceph_backends": cinder_ceph_backends(site.tiers),
        # Backups go through the first tier's backend settings (to the release's backups pool).
        "cinder_backup_backend_ceph_name": cinder_backend(site.tiers[0]),
        "cinder_coordination_backend": "valkey",
    }
    # Where cinder-volume runs changed between releases (storage hosts, then the controllers).
    if len(group_hosts(site, data, "cinder-volume")) > 1:
        # Several cinder-volume hosts serve the same pools: one active-active cluster.
        out["cinder_cluster_name"] = f"{site.name}-volumes"
    return out


def recipe_sections(site: Site, data: ReleaseData) -> list[Section]:
    """The settings cloudplan derives from the site, before the user's overrides."""
    return [
        Section("Release and images", image_settings(site, data)),
        Section(f"Networking: API network {site.api_cidr}, VIPs {site.vip} and {site.external_vip}",
                network_settings(site)),
        Section("TLS on both VIPs: certificates in config/certificates/", tls_settings(site)),
        Section("Services: IaaS, HAProxy, Magnum, Octavia, Barbican, Valkey", service_settings(site)),
        Section("Storage: external Ceph (see ceph/); a Cinder backend and pool per tier", ceph_settings(site, data)),
    ]


def check_known(keys, data: ReleaseData, where: str) -> None:
    """Every key must be a variable of the release; the error names the first unknown one."""
    for key in keys:
        if not isinstance(key, str) or key not in data.variables:
            close = difflib.get_close_matches(str(key), data.variables, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ManifestError(f"{where}: {key!r} is not a variable of Kolla-Ansible {data.kolla_ansible} "
                                f"(OpenStack {data.release}){hint}")


def apply_overrides(sections: list[Section], overrides: Mapping[str, Any] | None,
                    data: ReleaseData, where: str) -> list[Section]:
    """Merge the user's overrides on top: a key we write is replaced in place, new keys go last."""
    check_known((k for s in sections for k in s.settings), data, "cloudplan's globals template")
    if not overrides:
        return sections
    check_known(overrides, data, where)
    extra = {}
    for key, value in overrides.items():
        for s in sections:
            if key in s.settings:
                s.settings[key] = value
                break
        else:
            extra[key] = value
    if extra:
        sections.append(Section(f"Site overrides from {where}", extra))
    return sections


def overridden_vip(overrides: Mapping[str, Any] | None) -> str | None:
    if overrides and overrides.get(VIP_KEY) is not None:
        return str(overrides[VIP_KEY])
    return None
