"""What changes in the Kolla-Ansible files between the two releases of a hop.

Both releases' files are rendered by :mod:`cloudplan.manifests` from the same
inventory (without secrets) and compared with a unified diff. A release the
manifests module does not know is reported, not fatal: the rest of the
rehearsal still stands.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import yaml
from pydantic import BaseModel, Field

from cloudplan.errors import CloudplanError
from cloudplan.inventory import Inventory
from cloudplan.upgrade.groups import ServiceMove, cinder_backends, service_moves

log = logging.getLogger(__name__)


class FileDiff(BaseModel):
    path: str = Field(description="file path relative to the Kolla-Ansible configuration directory")
    status: str = Field(description="changed, added or removed")
    added: int = Field(description="lines added")
    removed: int = Field(description="lines removed")
    diff: str = Field(description="unified diff")


class ConfigDiff(BaseModel):
    from_release: str = Field(description="release rendered as the 'before' side")
    to_release: str = Field(description="release rendered as the 'after' side")
    available: bool = Field(description="both releases could be rendered")
    note: str | None = Field(default=None, description="why the diff is missing or partial")
    files: list[FileDiff] = Field(default_factory=list, description="changed files only")
    unchanged: int = Field(default=0, description="files identical in both releases")
    enabled_services: list[str] | None = Field(default=None,
                                               description="enable_* services switched on in the new globals.yml")
    new_password_keys: list[str] = Field(default_factory=list,
                                         description="passwords.yml keys the new release adds (merge them in)")
    removed_password_keys: list[str] = Field(default_factory=list,
                                             description="passwords.yml keys the new release no longer has")
    service_moves: list[ServiceMove] = Field(default_factory=list,
                                             description="service groups on other hosts in the new inventory")
    cinder_backends: list[str] = Field(default_factory=list, description="Cinder backends of the new globals.yml")
    cinder_cluster: str = Field(default="", description="cinder_cluster_name of the new globals.yml, if set")
    new_globals: str = Field(default="", exclude=True, description="the new release's rendered globals.yml")


def _manifests():
    try:
        from cloudplan import manifests
    except ImportError as err:
        return None, f"the manifests module cannot be imported ({err})"
    if not hasattr(manifests, "render_all") or not hasattr(manifests, "supported_releases"):
        return None, "the manifests module has no render_all()/supported_releases()"
    return manifests, None


def diff_files(before: dict[str, str], after: dict[str, str], from_label: str, to_label: str) -> list[FileDiff]:
    out = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        lines = list(difflib.unified_diff((a or "").splitlines(keepends=True), (b or "").splitlines(keepends=True),
                                          fromfile=f"{from_label}/{path}", tofile=f"{to_label}/{path}", n=2))
        added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
        removed = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))
        status = "added" if a is None else "removed" if b is None else "changed"
        text = "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines)
        out.append(FileDiff(path=path, status=status, added=added, removed=removed, diff=text))
    return out


def enabled_services(files: dict[str, str]) -> list[str] | None:
    """The ``enable_<service>: yes`` switches of a rendered globals.yml, if there is one."""
    name = next((p for p in files if p.endswith("globals.yml")), None)
    if name is None:
        return None
    try:
        data: Any = yaml.safe_load(files[name])
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    out = []
    for key, value in data.items():
        if isinstance(key, str) and key.startswith("enable_"):
            on = value if isinstance(value, bool) else str(value).strip().strip('"').lower() in ("yes", "true")
            if on:
                out.append(key[len("enable_"):])
    return sorted(out)


def _file(files: dict[str, str], name: str) -> str:
    path = next((p for p in files if p.rsplit("/", 1)[-1] == name), None)
    return files[path] if path is not None else ""


def config_diff(inventory: Inventory, from_release: str, to_release: str) -> ConfigDiff:
    """Render both releases and diff them; never raises for an unsupported release."""
    manifests, problem = _manifests()
    if manifests is None:
        return ConfigDiff(from_release=from_release, to_release=to_release, available=False, note=problem)
    supported = set(manifests.supported_releases())
    missing = [r for r in (from_release, to_release) if r not in supported]
    if missing:
        return ConfigDiff(from_release=from_release, to_release=to_release, available=False,
                          note=f"the manifests module does not support {' and '.join(missing)} "
                               f"(it renders {', '.join(sorted(supported)) or 'no release'}); no configuration "
                               "diff for this hop")
    try:
        before = manifests.render_all(inventory, from_release)
        after = manifests.render_all(inventory, to_release)
    except CloudplanError as err:
        return ConfigDiff(from_release=from_release, to_release=to_release, available=False,
                          note=f"rendering the Kolla-Ansible files failed: {err}")
    files = diff_files(before, after, from_release, to_release)
    # passwords.yml is left out of the diff (its values are secrets): its keys are compared instead
    old_keys = set(manifests.load_release(from_release).password_kinds)
    new_keys = set(manifests.load_release(to_release).password_kinds)
    backends, cluster = cinder_backends(_file(after, "globals.yml"))
    return ConfigDiff(from_release=from_release, to_release=to_release, available=True, files=files,
                      service_moves=service_moves(_file(before, "multinode"), _file(after, "multinode")),
                      cinder_backends=backends, cinder_cluster=cluster, new_globals=_file(after, "globals.yml"),
                      unchanged=len(set(before) & set(after)) - sum(f.status == "changed" for f in files),
                      enabled_services=enabled_services(after), new_password_keys=sorted(new_keys - old_keys),
                      removed_password_keys=sorted(old_keys - new_keys))
