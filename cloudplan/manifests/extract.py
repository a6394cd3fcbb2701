"""Regenerate the per-release Kolla-Ansible data cloudplan ships, from a kolla-ansible wheel.

cloudplan never needs kolla-ansible installed to write manifests: what it needs
from a release is extracted once, here, and shipped under
``cloudplan/data/kolla/<release>/``:

- ``service-groups.ini``: the service-group part of the release's sample
  ``multinode`` inventory (every ``[group:children]`` section), verbatim;
- ``passwords.yaml``: every key of the release's ``passwords.yml``, in order,
  with the kind of secret it holds (read from the lists in the release's
  ``genpwd`` tool, so a key the tool treats as a UUID gets a UUID);
- ``variables.txt``: every variable name the release defines (its
  ``globals.yml`` sample, commented keys included; ``group_vars``; the roles'
  ``defaults``), used to reject unknown keys in ``globals.yml``;
- ``release.yaml``: the OpenStack series and the kolla-ansible version.

Usage::

    python -m cloudplan.manifests.extract kolla_ansible-22.2.0-py3-none-any.whl -o cloudplan/data/kolla/2026.1

The output only depends on the wheel's content, so a test can check that the
shipped data equals what this script extracts.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import sys
import zipfile
from pathlib import Path, PurePosixPath

import yaml

from cloudplan.errors import CloudplanError, ManifestError

log = logging.getLogger(__name__)

SHARE = "data/share/kolla-ansible/"
# Names of the lists in genpwd's main() and the kind each one gives its keys.
GENPWD_LISTS = {
    "uuid_keys": "uuid",
    "ssh_keys": "ssh_key",
    "blank_keys": "blank",
    "hmac_md5_keys": "hmac_md5",
    "fernet_keys": "fernet",
    "bcrypt_keys": "bcrypt_salt",
}
# A globals.yml sample line that sets a key, possibly commented out ("#key:" or "# key:").
SAMPLE_KEY_RE = re.compile(r"^#? ?([a-z_][a-z0-9_]*):(\s|$)")
HEADER = ("# Extracted from kolla-ansible {version} ({wheel}), Apache-2.0,\n"
          "# by `python -m cloudplan.manifests.extract`. Do not edit by hand.\n")


class _Wheel:
    """Read the files of a kolla-ansible wheel by their path under share/kolla-ansible/."""

    def __init__(self, path: Path):
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as err:
            raise ManifestError(f"{path}: not a readable wheel ({err})") from None
        self.path = path
        names = self.zip.namelist()
        data = [n for n in names if ".data/" + SHARE in n]
        if not data:
            raise ManifestError(f"{path}: no share/kolla-ansible in this wheel; is it kolla-ansible?")
        self.share = data[0][: data[0].index(SHARE) + len(SHARE)]
        self.names = names
        self.version = self._version()

    def _version(self) -> str:
        meta = next((n for n in self.names if n.endswith(".dist-info/METADATA")), None)
        if meta:
            for line in self.zip.read(meta).decode().splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
        raise ManifestError(f"{self.path}: no version in the wheel metadata")

    def read(self, rel: str) -> str:
        try:
            return self.zip.read(self.share + rel).decode("utf-8")
        except KeyError:
            raise ManifestError(f"{self.path}: missing share/kolla-ansible/{rel}") from None

    def read_pkg(self, rel: str) -> str:
        try:
            return self.zip.read(rel).decode("utf-8")
        except KeyError:
            raise ManifestError(f"{self.path}: missing {rel}") from None

    def glob(self, pattern: str) -> list[str]:
        """Paths (relative to share/kolla-ansible) matching a PurePosixPath pattern, sorted."""
        out = []
        for n in self.names:
            if n.startswith(self.share):
                rel = n[len(self.share):]
                if PurePosixPath(rel).match(pattern):
                    out.append(rel)
        return sorted(out)


class _AnyTagLoader(yaml.SafeLoader):
    """Safe loader that accepts Ansible's custom tags (!unsafe, !vault) as plain values."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def service_groups(multinode: str) -> str:
    """The sample inventory from its first ``[...:children]`` section to the end."""
    lines = multinode.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.match(r"^\[[^\]]+:children\]", line):
            return "".join(lines[i:]).rstrip("\n") + "\n"
    raise ManifestError("the sample multinode inventory has no [group:children] section")


def genpwd_kinds(source: str) -> dict[str, str]:
    """Key -> kind from the list literals genpwd assigns (uuid_keys = [...], ...)."""
    kinds: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            for target in node.targets:
                kind = GENPWD_LISTS.get(getattr(target, "id", ""))
                if kind:
                    for elt in node.value.elts:
                        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                            kinds[elt.value] = kind
    missing = set(GENPWD_LISTS.values()) - set(kinds.values())
    if "uuid" in missing or "ssh_key" in missing:
        raise ManifestError(f"genpwd no longer has the lists {sorted(missing)}; update GENPWD_LISTS")
    return kinds


def genpwd_length(source: str) -> int:
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "length"
                and isinstance(node.value, ast.Constant)):
            return int(node.value.value)
    raise ManifestError("genpwd has no password length")


def password_kinds(passwords_yml: str, kinds: dict[str, str]) -> dict[str, str]:
    """Every key of the sample passwords.yml, in file order, with its kind."""
    data = yaml.safe_load(passwords_yml) or {}
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and {"private_key", "public_key"} <= set(value):
            out[key] = "ssh_key"
        else:
            out[key] = kinds.get(key, "password")
    return out


def _top_keys(text: str, where: str) -> set[str]:
    try:
        data = yaml.load(text, Loader=_AnyTagLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        raise ManifestError(f"{where}: unreadable YAML ({err})") from None
    return set(data) if isinstance(data, dict) else set()


def variable_names(wheel: _Wheel) -> set[str]:
    names: set[str] = set()
    for line in wheel.read("etc_examples/kolla/globals.yml").splitlines():
        m = SAMPLE_KEY_RE.match(line)
        if m:
            names.add(m.group(1))
    sources = (wheel.glob("ansible/group_vars/*.yml") + wheel.glob("ansible/group_vars/*/*.yml")
               + wheel.glob("ansible/roles/*/defaults/*.yml"))
    for rel in sources:
        names |= _top_keys(wheel.read(rel), rel)
    return names


def openstack_series(wheel: _Wheel) -> str:
    """The release's default ``openstack_release`` (its OpenStack series)."""
    for rel in wheel.glob("ansible/group_vars/all.yml") + wheel.glob("ansible/group_vars/all/*.yml"):
        data = yaml.load(wheel.read(rel), Loader=_AnyTagLoader)  # noqa: S506
        if isinstance(data, dict) and "openstack_release" in data:
            return str(data["openstack_release"])
    raise ManifestError(f"{wheel.path}: no openstack_release in group_vars")


def extract(wheel_path: Path) -> dict[str, str]:
    """File name -> content of the release data, from a kolla-ansible wheel."""
    wheel = _Wheel(wheel_path)
    head = HEADER.format(version=wheel.version, wheel=wheel_path.name)
    genpwd = wheel.read_pkg("kolla_ansible/cmd/genpwd.py")
    kinds = password_kinds(wheel.read("etc_examples/kolla/passwords.yml"), genpwd_kinds(genpwd))
    release = {"openstack_release": openstack_series(wheel), "kolla_ansible": wheel.version,
               "password_length": genpwd_length(genpwd)}
    return {
        "release.yaml": head + yaml.safe_dump(release, sort_keys=False),
        "service-groups.ini": head + service_groups(wheel.read("ansible/inventory/multinode")),
        "passwords.yaml": head + yaml.safe_dump(kinds, sort_keys=False),
        "variables.txt": head + "".join(f"{n}\n" for n in sorted(variable_names(wheel))),
    }


def write(files: dict[str, str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        p = out_dir / name
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudplan.manifests.extract",
        description="Extract the per-release data cloudplan ships from a kolla-ansible wheel.",
        epilog="Example: python -m cloudplan.manifests.extract "
               "kolla_ansible-22.2.0-py3-none-any.whl -o cloudplan/data/kolla/2026.1")
    parser.add_argument("wheel", type=Path, help="kolla-ansible wheel (pip download --no-deps kolla-ansible==X)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory to write the data to")
    args = parser.parse_args(argv)
    try:
        for p in write(extract(args.wheel), args.output):
            print(p)
    except CloudplanError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
