"""A release's own Kolla-Ansible and ansible-core, installed from PyPI for the tests.

Kolla-Ansible's playbooks import its Python package (the address and service
filters) and each release pins its own ansible-core (23.x: >=2.20,<2.22, on
Python >= 3.12), so every supported release gets a virtualenv of its own
under ``.cache/kolla-venv/<kolla-ansible version>/``, made with Python 3.12
(``KOLLA_PYTHON``, else ``python3.12`` on PATH, else a version pyenv installed).

``kolla-ansible install-deps`` fetches its collections from Ansible Galaxy;
here they come from PyPI instead: the ``ansible`` package carries the same
collections, and only those the release lists in ``requirements-core.yml``
are unpacked from its wheel into ``.cache/ansible-collections/<version>/``,
after checking each one's version against the release's pin.

Nothing is skipped: a missing interpreter or an unreachable index fails the
test with the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import kolla_fixture as kf
from cloudplan.manifests import load_release

# The `ansible` package whose collections fit each release's pins (checked below):
# 12.x goes with ansible-core 2.19, 13.x with 2.20.
ANSIBLE_PACKAGE = {"2025.2": "12.3.0", "2026.1": "12.3.0", "2026.2": "13.8.0"}
PYTHON = "python3.12"
PYTHON_FIX = ("install Python 3.12 (Debian/Ubuntu: apt-get install python3.12 python3.12-venv; or pyenv "
              "install 3.12 and put it on PATH), or set KOLLA_PYTHON to a Python >= 3.12")


def _runs_312(exe: str) -> bool:
    probe = subprocess.run([exe, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
                           capture_output=True, text=True, timeout=60)
    return probe.returncode == 0 and probe.stdout.strip() == "True"


def _pyenv_pythons() -> list[str]:
    """Interpreters >= 3.12 that pyenv installed (its shim only runs the version pyenv selects)."""
    pyenv = shutil.which("pyenv")
    if not pyenv:
        return []
    proc = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=60)
    versions = Path(proc.stdout.strip()) / "versions"
    found = []
    for d in sorted(versions.glob("3.1[2-9]*")) if proc.returncode == 0 else []:
        exe = d / "bin" / "python3"
        if exe.exists():
            found.append(str(exe))
    return found


def python312() -> str:
    """A working Python >= 3.12: KOLLA_PYTHON, else python3.12 on PATH, else one pyenv installed."""
    candidates = [os.environ.get("KOLLA_PYTHON"), shutil.which(PYTHON), *_pyenv_pythons()]
    for exe in (c for c in candidates if c):
        if _runs_312(exe):
            return exe
    pytest.fail(f"no Python >= 3.12 found (tried {', '.join(c for c in candidates if c) or PYTHON}): {PYTHON_FIX}")


def _pip(args: list[str], what: str, python: str = sys.executable) -> None:
    proc = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        pytest.fail(f"cannot {what} (pip {' '.join(args[:3])} ...): {proc.stderr.strip()[-800:]}")


def ansible_wheel(version: str) -> Path:
    path = kf.WHEELS / f"ansible-{version}-py3-none-any.whl"
    if not path.exists():
        _pip(["download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
              f"ansible=={version}", "-d", str(kf.WHEELS)], f"download ansible=={version}")
    return path


def _core_requirement(wheel: Path) -> str:
    """The ansible-core requirement of an ``ansible`` wheel (e.g. ``ansible-core~=2.19.5``)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist: ansible-core"):
                return line.split(":", 1)[1].strip().replace(" ", "")
    raise AssertionError(f"{wheel.name} names no ansible-core")


def venv(release: str) -> Path:
    """The release's virtualenv (kolla-ansible and the ansible-core its collections need); its bin/."""
    version = load_release(release).kolla_ansible
    dest = kf.CACHE / "kolla-venv" / version
    marker = dest / ".complete"
    if not marker.exists():
        shutil.rmtree(dest, ignore_errors=True)
        proc = subprocess.run([python312(), "-m", "venv", str(dest)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"cannot create a virtualenv with {PYTHON}: {proc.stderr.strip()[-300:]}: {PYTHON_FIX}")
        core = _core_requirement(ansible_wheel(ANSIBLE_PACKAGE[release]))
        _pip(["install", "-q", "--only-binary=:all:", str(kf.wheel(release)), core],
             f"install kolla-ansible=={version} with {core}", python=str(dest / "bin" / "python"))
        marker.touch()
    return dest / "bin"


def _pins(release: str) -> dict[str, str]:
    """Collection name -> version pin, from the release's requirements-core.yml."""
    data = yaml.safe_load((kf.share(release) / "requirements-core.yml").read_text())
    return {c["name"]: str(c.get("version", "")) for c in data["collections"]}


def collections(release: str) -> Path:
    """A collections path holding the collections the release pins, from the `ansible` package's wheel."""
    from packaging.specifiers import SpecifierSet

    version = ANSIBLE_PACKAGE[release]
    dest = kf.CACHE / "ansible-collections" / version
    wheel = ansible_wheel(version)
    pins = _pins(release)
    with zipfile.ZipFile(wheel) as z:
        for name, pin in pins.items():
            ns, coll = name.split(".")
            prefix = f"ansible_collections/{ns}/{coll}/"
            manifest = json.loads(z.read(prefix + "MANIFEST.json"))
            got = manifest["collection_info"]["version"]
            if pin and got not in SpecifierSet(pin):
                pytest.fail(f"ansible=={version} carries {name} {got}, outside kolla-ansible's pin {pin} "
                            f"for {release}: pick another `ansible` version in ANSIBLE_PACKAGE")
            marker = dest / f".{ns}.{coll}-{got}"
            if not marker.exists():
                z.extractall(dest, [n for n in z.namelist() if n.startswith(prefix)])
                marker.touch()
    return dest


def env(release: str, tmp: Path) -> dict[str, str]:
    """Environment for the release's ansible-playbook: its collections, a private temp and home."""
    e = kf.ansible_env(tmp)
    e["ANSIBLE_COLLECTIONS_PATH"] = str(collections(release))
    e["ANSIBLE_REMOTE_TEMP"] = str(tmp / "ansible-remote-tmp")  # connection local: keep it out of $HOME
    e["PATH"] = f"{venv(release)}{os.pathsep}{e.get('PATH', '')}"
    e.pop("PYTHONPATH", None)
    return e
