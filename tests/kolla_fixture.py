"""Real Kolla-Ansible releases and tools for the manifest tests.

Each supported release's kolla-ansible wheel (the exact version cloudplan's
shipped data was extracted from) is fetched once with pip into
``.cache/kolla-wheels/`` and its ``share/kolla-ansible`` unpacked beside it.
Two releases cannot share one virtualenv, so the wheels are never installed:
ansible-core from the project's own virtualenv reads the unpacked files.
A missing tool or an unreachable package index fails the test with the fix.
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

from cloudplan.manifests import load_release

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
WHEELS = CACHE / "kolla-wheels"


def wheel(release: str) -> Path:
    version = load_release(release).kolla_ansible
    path = WHEELS / f"kolla_ansible-{version}-py3-none-any.whl"
    if not path.exists():
        WHEELS.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                               # 23.x (2026.2) needs Python >= 3.12; the wheel itself is pure data and playbooks.
                               "--only-binary=:all:", "--python-version", "3.12",
                               f"kolla-ansible=={version}", "-d", str(WHEELS)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not path.exists():
            pytest.fail(f"cannot download kolla-ansible=={version} for OpenStack {release} "
                        f"(pip download --no-deps): {proc.stderr.strip()[-500:]}")
    return path


def share(release: str) -> Path:
    """The release's unpacked share/kolla-ansible directory."""
    w = wheel(release)
    dest = CACHE / "kolla" / w.stem
    marker = dest / ".complete"
    if not marker.exists():
        with zipfile.ZipFile(w) as z:
            members = [n for n in z.namelist() if "/data/share/kolla-ansible/" in n]
            z.extractall(dest, members)
        marker.touch()
    found = next(dest.glob("*.data/data/share/kolla-ansible"), None)
    assert found is not None, f"{w.name} has no share/kolla-ansible"
    return found


def tool(name: str, fix: str) -> str:
    """A command-line tool from the project's virtualenv (or PATH); fails with ``fix`` when missing."""
    candidate = Path(sys.executable).parent / name
    path = str(candidate) if candidate.exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing: {fix}")
    return path


ANSIBLE_FIX = "install ansible-core>=2.19,<2.20 into the virtualenv (pip install -e '.[test]')"


def ansible_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ANSIBLE_TRANSFORM_INVALID_GROUP_CHARS="ignore", ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
               ANSIBLE_HOME=str(tmp / "ansible-home"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_LOCALHOST_WARNING="0")
    return env


def inventory_list(path: Path, tmp: Path) -> dict:
    """``ansible-inventory -i PATH --list`` as JSON."""
    proc = subprocess.run([tool("ansible-inventory", ANSIBLE_FIX), "-i", str(path), "--list"],
                          capture_output=True, text=True, env=ansible_env(tmp), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def members(inv: dict, group: str) -> set[str]:
    """Hosts of ``group``, through its children."""
    entry = inv.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= members(inv, child)
    return hosts


def debug(release: str, out_dir: Path, expr: str, tmp: Path, host: str = "localhost"):
    """Evaluate ``expr`` (a Jinja2 expression) for ``host`` with the release's group_vars,
    the generated inventory, globals.yml and passwords.yml, as ``ansible -m debug`` does."""
    playbooks = share(release) / "ansible"
    cmd = [tool("ansible", ANSIBLE_FIX), "-i", str(out_dir / "multinode"), host,
           "--playbook-dir", str(playbooks), "-m", "debug", "-a", "msg={{ %s }}" % expr,
           "-e", f"@{out_dir / 'globals.yml'}", "-e", f"@{out_dir / 'passwords.yml'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ansible_env(tmp), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Ad-hoc output is "HOST | SUCCESS => {json}".
    head, sep, body = proc.stdout.partition(" => ")
    assert sep and "SUCCESS" in head, proc.stdout[-3000:]
    return json.loads(body)["msg"]
