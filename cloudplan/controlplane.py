"""What the site decides about its control plane: image registry, virtual IPs, TLS, Magnum options.

It is written once in the site file (``control_plane:``), carried into the
inventory by `cloudplan layout`, and read by `cloudplan manifests`. Secrets
are never stored here: the registry password is named by the environment
variable that holds it.
"""

from __future__ import annotations

from pydantic import Field

from cloudplan.spec import Strict

# Kolla-Ansible's default namespace on its default registry (quay.io).
KOLLA_NAMESPACE = "openstack.kolla"


class Registry(Strict):
    """The container registry the site pulls Kolla images from (a mirror it controls)."""

    address: str = Field(description="registry host[:port], Kolla-Ansible's docker_registry")
    namespace: str = Field(default=KOLLA_NAMESPACE, description="image namespace, Kolla-Ansible's docker_namespace")
    openstack_tag: str = Field(description="the pinned image tag every service uses, e.g. 2026.2-ubuntu-noble-20261115; "
                                           "a pinned tag keeps a redeploy from pulling newer images")
    username: str | None = Field(default=None, description="registry user (docker_registry_username)")
    password_env: str | None = Field(default=None, description="environment variable holding the registry password; "
                                                               "written into passwords.yml (docker_registry_password)")
    insecure: bool = Field(default=False, description="plain HTTP registry (docker_registry_insecure)")


class Magnum(Strict):
    cluster_user_trust: bool = Field(
        default=False,
        description="give clusters a trust acting as their creator (needed by the auto-scaler and auto-healer); "
                    "off by default because it exposes the cluster to CVE-2016-7404")


class ControlPlane(Strict):
    """Control-plane choices of the site; unset fields are derived from the inventory."""

    registry: Registry | None = Field(default=None, description="where the images come from; required unless "
                                                                 "test_images is true")
    test_images: bool = Field(default=False, description="use Kolla's upstream test images (quay.io/openstack.kolla, "
                                                         "moving tags): lab clouds only; prechecks then need "
                                                         "`kolla-ansible prechecks --use-test-images`")
    internal_vip: str | None = Field(default=None, description="virtual IP of the internal APIs on the api network; "
                                                               "default: the lowest free address below the nodes'")
    external_vip: str | None = Field(default=None, description="virtual IP of the public APIs (on the 'public' "
                                                               "network if the site has one, else on api); default: "
                                                               "the next free reserved address")
    external_fqdn: str | None = Field(default=None, description="DNS name of the public endpoints (the external "
                                                                "certificate's name); default: the external VIP")
    tls: bool = Field(default=True, description="TLS on the internal and external VIPs (certificates in "
                                                "config/certificates/)")
    magnum: Magnum = Field(default_factory=Magnum, description="Magnum options")
