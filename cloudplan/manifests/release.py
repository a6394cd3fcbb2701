"""What cloudplan knows about each supported Kolla-Ansible release, as shipped data.

The files under ``cloudplan/data/kolla/<release>/`` are extracted from the
release's kolla-ansible wheel by :mod:`cloudplan.manifests.extract`; nothing
here needs kolla-ansible installed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from cloudplan.errors import ManifestError

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "kolla"
DEFAULT_RELEASE = "2026.2"


@dataclass(frozen=True)
class ReleaseData:
    """One release's Kolla-Ansible facts: series, version, groups, passwords, variables."""

    release: str
    kolla_ansible: str
    password_length: int
    service_groups: str
    password_kinds: dict[str, str]
    variables: frozenset[str]


def supported_releases() -> list[str]:
    """OpenStack series cloudplan can write Kolla-Ansible files for, oldest first."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.name for p in DATA_DIR.iterdir() if (p / "release.yaml").is_file())


def _strip_header(text: str) -> str:
    """Drop the extraction header (leading comment lines) of a data file."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("# "):
        i += 1
    return "".join(lines[i:])


@functools.lru_cache(maxsize=None)
def load_release(release: str) -> ReleaseData:
    """The shipped data of ``release``; an unsupported release is an error listing the supported ones."""
    known = supported_releases()
    if release not in known:
        raise ManifestError(f"release {release!r} is not supported; supported releases: {', '.join(known)}")
    d = DATA_DIR / release
    meta = yaml.safe_load((d / "release.yaml").read_text(encoding="utf-8"))
    kinds = yaml.safe_load((d / "passwords.yaml").read_text(encoding="utf-8"))
    variables = frozenset(line.strip() for line in _strip_header((d / "variables.txt").read_text(encoding="utf-8"))
                          .splitlines() if line.strip())
    return ReleaseData(
        release=str(meta["openstack_release"]),
        kolla_ansible=str(meta["kolla_ansible"]),
        password_length=int(meta["password_length"]),
        service_groups=_strip_header((d / "service-groups.ini").read_text(encoding="utf-8")),
        password_kinds=dict(kinds),
        variables=variables,
    )
