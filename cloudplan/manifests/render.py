"""Rendering the Kolla-Ansible and cephadm files from ``templates/`` (strict undefined variables).

:func:`render_all` is pure: inventory in, ``{relative path: text}`` out, so two
releases can be rendered in memory and compared. :func:`render_manifests`
writes them, plus ``passwords.yml``, which is never part of ``render_all``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from cloudplan.errors import ManifestError, SpecError
from cloudplan.inventory import Inventory
from cloudplan.io import load_model, read_yaml, write_text_atomic
from cloudplan.manifests import ceph, ceph_glue, kolla, services
from cloudplan.manifests.passwords import write_passwords
from cloudplan.manifests.release import DEFAULT_RELEASE, ReleaseData, load_release
from cloudplan.manifests.site import Site, describe_site

log = logging.getLogger(__name__)

PASSWORDS = "passwords.yml"
# Host groups in the order of Kolla-Ansible's sample inventory; [deployment] follows.
HOST_GROUPS = ("control", "network", "compute", "monitoring", "storage")
KOLLA_FILES = {"multinode": "multinode.j2", "globals.yml": "globals.yml.j2"}
CEPH_FILES = {"ceph/hosts.yaml": "hosts.yaml.j2", "ceph/services.yaml": "services.yaml.j2",
              "ceph/osd-specs.yaml": "osd-specs.yaml.j2", "ceph/ceph.conf": "ceph.conf.j2",
              "ceph/pools.sh": "pools.sh.j2", "ceph/kolla-config.sh": "kolla-config.sh.j2"}
EXECUTABLE = {"ceph/pools.sh", "ceph/kolla-config.sh"}
OSD_LATER = "ceph/osd-specs-after-nvme.yaml"


@dataclass
class ManifestResult:
    """What :func:`render_manifests` did: files written (passwords.yml included) and warnings."""

    release: str
    paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passwords_added: int = 0


def templates_dir() -> Path:
    """``templates/`` beside the package (a source checkout or an editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here.parent.parent / "templates"):
        if (candidate / "kolla").is_dir():
            return candidate
    raise ManifestError("cannot find cloudplan's templates/ directory (templates/kolla)")


class _Dumper(yaml.SafeDumper):
    """Double quotes where quoting is needed ("yes", "2026.1"), as Kolla-Ansible's samples write them;
    block sequences indented under their key, as yamllint's default asks."""

    def choose_scalar_style(self):
        style = super().choose_scalar_style()
        return '"' if style == "'" else style

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _dump(value: Any, **kw: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, width=100, **kw)


def _yaml_entry(key: str, value: Any) -> str:
    return _dump({key: value}, default_flow_style=False).rstrip("\n")


def _yaml_scalar(value: Any) -> str:
    # A one-item flow list avoids the document-end marker PyYAML adds to a bare scalar.
    return _dump([value], default_flow_style=True).strip()[1:-1]


def _yaml_block(value: Any, indent: int) -> str:
    text = _dump(value, default_flow_style=False).rstrip("\n")
    return "\n".join(" " * indent + line for line in text.splitlines())


def environment(subdir: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / subdir)),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False)
    env.filters.update(yaml_entry=_yaml_entry, yaml_scalar=_yaml_scalar, yaml_block=_yaml_block)
    return env


def _render(env: jinja2.Environment, name: str, ctx: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(**ctx)
    except jinja2.TemplateNotFound:
        raise ManifestError(f"template {name} is missing from templates/") from None
    except jinja2.UndefinedError as err:
        raise ManifestError(f"template {name}: {err.message}") from None


def _as_mapping(value: Mapping[str, Any] | str | os.PathLike | None, what: str) -> tuple[dict | None, str]:
    """Accept a mapping or a YAML file path; returns (mapping, name used in messages)."""
    if value is None:
        return None, what
    if isinstance(value, Mapping):
        return dict(value), what
    data = read_yaml(value)
    if data is None:
        return {}, str(value)
    if not isinstance(data, Mapping):
        raise SpecError(f"expected a mapping of {what}", path=str(value))
    return dict(data), str(value)


def _inventory(inventory: Inventory | str | os.PathLike) -> Inventory:
    return inventory if isinstance(inventory, Inventory) else load_model(Inventory, inventory)


def _describe(inv: Inventory, inventory: Inventory | str | os.PathLike, bp: dict | None,
              ov: dict | None, ov_name: str) -> Site:
    """The site; an error names the file its field is in (the overrides' VIP, else the inventory)."""
    try:
        return describe_site(inv, blueprint=bp, vip=kolla.overridden_vip(ov))
    except ManifestError as err:
        if str(err).startswith(kolla.VIP_KEY):
            raise ManifestError(f"{ov_name}: {err}") from None
        if isinstance(inventory, Inventory):
            raise
        raise ManifestError(f"{inventory}: {err}") from None


def render_bundle(inventory: Inventory | str | os.PathLike, release: str = DEFAULT_RELEASE, *,
                  blueprint: Mapping[str, Any] | str | os.PathLike | None = None,
                  overrides: Mapping[str, Any] | str | os.PathLike | None = None,
                  ) -> tuple[dict[str, str], list[str]]:
    """Every file except passwords.yml, and the warnings met on the way."""
    data = load_release(release)
    inv = _inventory(inventory)
    bp, _ = _as_mapping(blueprint, "blueprint")
    ov, ov_name = _as_mapping(overrides, "overrides")
    site = _describe(inv, inventory, bp, ov, ov_name)
    try:
        recipe = kolla.recipe_sections(site, data)
    except ManifestError as err:
        raise ManifestError(f"{inventory if not isinstance(inventory, Inventory) else 'inventory'}: {err}") from None
    sections = kolla.apply_overrides(recipe, ov, data, ov_name)
    settings = {k: v for s in sections for k, v in s.settings.items()}
    ceph_ctx, warnings = ceph.context(inv, site, settings)
    files = _render_kolla(data, site, sections)
    files.update(services.config_files(site, services.plan_policy(bp)))
    env = environment("ceph")
    for rel, name in CEPH_FILES.items():
        files[rel] = _render(env, name, {"site": site, "ceph": ceph_ctx, "glue": ceph_glue.context(settings)})
    if ceph_ctx["osd_specs_later"]:
        files[OSD_LATER] = _render(env, "osd-specs-after-nvme.yaml.j2", {"site": site, "ceph": ceph_ctx})
    return files, site.warnings + kolla.image_warnings(site, data) + warnings


def _render_kolla(data: ReleaseData, site: Site, sections: list[kolla.Section]) -> dict[str, str]:
    env = environment(f"kolla/{data.release}")
    ctx = {"release": data, "site": site, "sections": sections, "host_groups": HOST_GROUPS}
    return {rel: _render(env, name, ctx) for rel, name in KOLLA_FILES.items()}


def _site_secrets(inventory: Inventory | str | os.PathLike) -> dict[str, str]:
    """passwords.yml values the site supplies: the registry password, read from its environment variable."""
    cp = _inventory(inventory).control_plane
    reg = cp.registry if cp else None
    if reg is None or not reg.password_env:
        return {}
    value = os.environ.get(reg.password_env)
    if value is None:
        raise ManifestError(f"control_plane.registry.password_env: environment variable {reg.password_env} "
                            "is not set (it holds the registry password)")
    return {"docker_registry_password": value}


def render_all(inventory: Inventory | str | os.PathLike, release: str = DEFAULT_RELEASE, *,
               blueprint: Mapping[str, Any] | str | os.PathLike | None = None,
               overrides: Mapping[str, Any] | str | os.PathLike | None = None) -> dict[str, str]:
    """Relative path -> content of every generated file but passwords.yml (pure, nothing written)."""
    return render_bundle(inventory, release, blueprint=blueprint, overrides=overrides)[0]


def render_manifests(inventory: Inventory | str | os.PathLike, out_dir: str | os.PathLike, *,
                     release: str = DEFAULT_RELEASE,
                     blueprint: Mapping[str, Any] | str | os.PathLike | None = None,
                     overrides: Mapping[str, Any] | str | os.PathLike | None = None) -> ManifestResult:
    """Write the Kolla-Ansible files, passwords.yml (kept across runs) and ceph/ under ``out_dir``."""
    files, warnings = render_bundle(inventory, release, blueprint=blueprint, overrides=overrides)
    secrets = _site_secrets(inventory)  # before anything is written
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ManifestError(f"{out}: exists and is not a directory")
    result = ManifestResult(release=release, warnings=warnings)
    # A spec file an earlier run needed must not linger to be applied by mistake.
    if OSD_LATER not in files:
        (out / OSD_LATER).unlink(missing_ok=True)
    for rel, text in files.items():
        path = write_text_atomic(out / rel, text, mode=0o755 if rel in EXECUTABLE else None)
        result.paths.append(path)
    pw = out / PASSWORDS
    result.passwords_added = len(write_passwords(pw, load_release(release), site_values=secrets))
    result.paths.append(pw)
    for w in warnings:
        log.debug("warning: %s", w)  # returned to the caller, who shows it once
    return result
