"""Control-plane artifacts: Kolla-Ansible's inventory, globals and passwords, and cephadm specs.

Library entry points::

    from cloudplan.manifests import render_manifests, render_all, supported_releases
    result = render_manifests("inventory.yaml", "out/", release="2026.1")
    files = render_all(inventory, "2025.2")   # {relative path: text}, passwords excluded
"""

from cloudplan.manifests.release import DEFAULT_RELEASE, load_release, supported_releases
from cloudplan.manifests.render import ManifestResult, render_all, render_bundle, render_manifests

__all__ = ["DEFAULT_RELEASE", "ManifestResult", "load_release", "render_all", "render_bundle",
           "render_manifests", "supported_releases"]
