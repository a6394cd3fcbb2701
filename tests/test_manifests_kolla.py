"""The generated files run through Kolla-Ansible's own code, for every supported release.

Each release's kolla-ansible and ansible-core are installed from PyPI
(:mod:`kolla_tools`). On the example site, with the operator's steps done as
the README gives them:

- ``kolla-ansible certificates`` and ``octavia-certificates``: Kolla's own
  playbooks, run for real on this machine (they only touch the deploy host);
- ``ceph/kolla-config.sh``: run for real, against a stand-in ``ceph`` CLI
  (there is no Ceph cluster here) that answers ``config
  generate-minimal-conf`` and ``auth get`` in the formats Ceph prints;

then Kolla's precheck run (:mod:`kolla_precheck`: no target host contacted,
the host-only modules removed), Kolla's ``external_ceph`` tasks of the nova,
glance and cinder roles, and its ``nova.conf``/``cinder.conf`` merge, each
run unmodified on this machine with ``ansible_connection=local`` and the
per-host config directories under a temporary directory.
"""

from __future__ import annotations

import configparser
import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import kolla_fixture as kf
import kolla_precheck as kp
import kolla_tools as kt
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.manifests import render_manifests
from cloudplan.spec import Tier

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "inventory.yaml"
RELEASES = ["2025.2", "2026.1", "2026.2"]
FSID = "9a5c1f7e-6d0b-4c7e-9d3f-2b1e0a4c8d61"
# The stand-in for a bootstrapped cluster: what `ceph config generate-minimal-conf` and
# `ceph auth get client.X` print (Ceph's own formats); anything else is refused.
CEPH_CLI = f"""#!/bin/sh
case "$1 $2" in
  "config generate-minimal-conf")
    printf '# minimal ceph.conf for {FSID}\\n[global]\\n\\tfsid = {FSID}\\n'
    printf '\\tmon_host = [v2:10.40.0.21:3300/0,v1:10.40.0.21:6789/0] [v2:10.40.0.22:3300/0,v1:10.40.0.22:6789/0]\\n' ;;
  "auth get")
    key=$(printf '%s' "$3" | sha256sum | cut -c1-40 | base64 -w0)
    printf '[%s]\\n\\tkey = %s\\n\\tcaps mon = "profile rbd"\\n\\tcaps osd = "profile rbd"\\n' "$3" "$key" ;;
  *) echo "unexpected: ceph $*" >&2; exit 22 ;;
esac
"""


HCI_DRIVES = 2


def example_for(release: str) -> Inventory:
    """The example site with its registry tag pinned for ``release`` (a tag names its release),
    and cmp01 made hyperconverged (HCI_DRIVES SSD OSDs)."""
    inv = load_model(Inventory, EXAMPLE)
    reg = inv.control_plane.registry
    reg.openstack_tag = f"{release}-ubuntu-noble-20261115"
    inv.node("cmp01").drives = {Tier.ssd: HCI_DRIVES}
    return inv


def playbook(release: str, tree: Path, out: Path, tmp: Path, play: Path, *extra: str) -> subprocess.CompletedProcess:
    bin_dir = kt.venv(release)
    env = kt.env(release, tmp)
    # The fact cache written beside the generated directory (see `deployed`).
    env.update(ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(out.parent / "facts"),
               ANSIBLE_CACHE_PLUGIN_TIMEOUT="0")
    cmd = [str(bin_dir / "ansible-playbook"), "-i", str(out / "multinode"), "-e", f"@{out / 'globals.yml'}",
           "-e", f"@{out / 'passwords.yml'}", "-e", f"CONFIG_DIR={out}",
           "-e", f"ansible_python_interpreter={bin_dir / 'python'}", *extra, str(play)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp)


# What `kolla-ansible certificates` and `octavia-certificates` write under /etc/kolla.
CERT_DIRS = ("certificates", "config/octavia")
_certs_made: dict[str, Path] = {}


def certificates(release: str, out: Path, tmp: Path) -> None:
    """The operator's `kolla-ansible certificates` and `octavia-certificates`: Kolla's playbooks, for real.

    Made once per release for the example site (same VIPs) and copied into later directories.
    """
    made = _certs_made.get(release)
    if made is None:
        tree = kf.share(release) / "ansible"
        for name in ("certificates.yml", "octavia-certificates.yml"):
            proc = playbook(release, tree, out, tmp, tree / name, "-e", "kolla_action=certificates")
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        _certs_made[release] = out
        return
    for d in CERT_DIRS:
        shutil.copytree(made / d, out / d, dirs_exist_ok=True)


def ceph_glue(out: Path, tmp: Path) -> None:
    """The operator's `sh ceph/kolla-config.sh /etc/kolla/config`, with the stand-in ceph CLI on PATH."""
    bin_dir = tmp / "ceph-bin"
    bin_dir.mkdir()
    (bin_dir / "ceph").write_text(CEPH_CLI)
    (bin_dir / "ceph").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["sh", str(out / "ceph" / "kolla-config.sh"), str(out / "config")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module", params=RELEASES)
def deployed(request, tmp_path_factory):
    """The example site's files for one release, after the operator's steps."""
    release = request.param
    tmp = tmp_path_factory.mktemp(f"kolla-{release}")
    inv = example_for(release)
    out = tmp / "etc-kolla"
    render_manifests(inv, out, release=release)
    kp.write_fact_cache(inv, tmp / "facts")
    certificates(release, out, tmp)
    ceph_glue(out, tmp)
    return release, inv, out, tmp


def test_kolla_prechecks_pass(deployed):
    release, inv, out, tmp = deployed
    run = kp.run(release, out, inv, tmp / "precheck")
    assert run.failures == [], "\n".join(f"{f['host']}: {f['task']}: {f['msg']}" for f in run.failures)
    assert run.returncode == 0, run.output
    passed = set(run.held)
    # Checks that read the generated files ran and held (not skipped):
    assert "cinder : Check if cinder_cluster_name is configured for HA configurations" in passed
    assert "octavia : Checking certificate files exist for octavia" in passed
    assert any(c.startswith("loadbalancer : Assert that external haproxy certificate exists") for c in passed)
    if release != "2025.2":  # the test-images check came with 2026.1
        assert "prechecks : Check if using quay.io/openstack.kolla images" in passed
    assert "prechecks : Checking empty passwords in passwords.yml. Run kolla-genpwd if this task fails" in passed


def _precheck_variant(tmp: Path, release: str, inv: Inventory, overrides: dict | None = None,
                      extra: dict | None = None) -> kp.Run:
    """Prechecks of a variant of the example site, on the controllers and the deploy host only."""
    out = tmp / "etc-kolla"
    render_manifests(inv, out, release=release, overrides=overrides)
    kp.write_fact_cache(inv, tmp / "facts")
    certificates(release, out, tmp)
    ceph_glue(out, tmp)
    return kp.run(release, out, inv, tmp / "precheck", extra=extra, limit="control:deployment")


@pytest.mark.parametrize("overrides, message", [
    ({"cinder_coordination_backend": ""}, "Please enable valkey or etcd when using Cinder Ceph backend"),
    ({"cinder_cluster_name": ""}, "Multiple cinder-volume instances detected but cinder_cluster_name is not set"),
])
def test_prechecks_reject_what_the_generator_used_to_write(tmp_path, overrides, message):
    """The same run fails, with Kolla's own message, when coordination or the cluster name is taken away."""
    run = _precheck_variant(tmp_path, "2026.2", example_for("2026.2"), overrides=overrides)
    assert message in " ".join(f["msg"] for f in run.failures), run.failures
    assert run.returncode != 0


def test_test_images_need_the_explicit_flag(tmp_path):
    """control_plane.test_images keeps quay.io's images: Kolla 2026.2 refuses them unless
    prechecks run with --use-test-images (kolla_test_images=yes), as the README says."""
    release = "2026.2"
    inv = example_for(release)
    inv.control_plane.registry, inv.control_plane.test_images = None, True
    refused = _precheck_variant(tmp_path / "refused", release, inv)
    assert {f["task"] for f in refused.failures} == {"prechecks : Check if using quay.io/openstack.kolla images"}
    accepted = _precheck_variant(tmp_path / "accepted", release, inv, extra={"kolla_test_images": "yes"})
    assert accepted.failures == [], accepted.failures


def _tree(release: str, tmp: Path) -> Path:
    """A copy of the release's ansible/ tree: plays written beside site.yml find its roles and plugins."""
    tree = tmp / "ansible"
    if not tree.exists():
        shutil.copytree(kf.share(release) / "ansible", tree)
    return tree


def _role_play(tree: Path, name: str, plays: list[dict]) -> Path:
    path = tree / f"cloudplan-{name}.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def _local_vars(tmp: Path) -> list[str]:
    """Run Kolla's file tasks here: per-host config directories under ``tmp``, owned by this user."""
    return ["-e", "ansible_connection=local", "-e", "ansible_become=false",
            "-e", f"node_config_directory={tmp}/nodes/{{{{ inventory_hostname }}}}",
            "-e", f"config_owner_user={pwd.getpwuid(os.getuid()).pw_name}",
            "-e", f"config_owner_group={grp.getgrgid(os.getgid()).gr_name}"]


def _service_dir(nodes: Path, service: str) -> Path:
    """The config directory Kolla wrote for ``service`` on the one host the play ran it on."""
    found = sorted(nodes.glob(f"*/{service}"))
    assert len(found) == 1, (service, found)
    return found[0]


def _task_file(tree: Path, role: str, names: list[str], dest: str) -> None:
    """Kolla's own tasks, by name, from the role's config.yml into a task file of the same role."""
    tasks = yaml.safe_load((tree / "roles" / role / "tasks" / "config.yml").read_text())
    picked = [t for t in tasks if t.get("name") in names]
    assert [t["name"] for t in picked] == names, f"{role}/tasks/config.yml changed: {names}"
    (tree / "roles" / role / "tasks" / dest).write_text(yaml.safe_dump(picked, sort_keys=False))


@pytest.fixture(scope="module")
def configured(deployed):
    """One run of Kolla's deploy-time tasks on this machine: the nova-cell, glance and cinder roles'
    external_ceph tasks unmodified, and their config.yml tasks that write nova.conf and cinder.conf
    (Kolla's template merged with config/ by its merge_configs plugin), each on the first host of the
    group that runs the service."""
    release, inv, out, tmp = deployed
    tree = _tree(release, tmp)
    work = tmp / "configured"
    work.mkdir()
    _task_file(tree, "nova-cell", ["Ensuring config directories exist", "Copying over nova.conf"], "plan.yml")
    _task_file(tree, "cinder", ["Ensuring config directories exist", "Copying over cinder.conf"], "plan.yml")
    steps = (("compute[0]", "nova-cell", "external_ceph"), ("glance-api[0]", "glance", "external_ceph"),
             ("cinder-volume[0]", "cinder", "external_ceph"), ("compute[0]", "nova-cell", "plan"),
             ("cinder-volume[0]", "cinder", "plan"))
    plays = [{"hosts": hosts, "gather_facts": False,
              "tasks": [{"ansible.builtin.include_role": {"name": role, "tasks_from": tasks}}]}
             for hosts, role, tasks in steps]
    proc = playbook(release, tree, out, work, _role_play(tree, "configured", plays), *_local_vars(work))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out, work / "nodes"


def test_external_ceph_tasks_find_their_files(configured):
    """Kolla's external_ceph tasks found the glue's conf and keyrings and copied them for each service."""
    out, nodes = configured
    compute = _service_dir(nodes, "nova-compute").parent
    glance = _service_dir(nodes, "glance-api")
    volume, backup = _service_dir(nodes, "cinder-volume"), _service_dir(nodes, "cinder-backup")
    key = (out / "config" / "nova" / "ceph.client.cinder.keyring").read_text()
    assert (compute / "nova-compute" / "ceph.client.cinder.keyring").read_text() == key
    assert "mon_host" in (compute / "nova-compute" / "ceph.conf").read_text()
    assert "mon_host" in (glance / "ceph" / "ceph.conf").read_text()
    assert (glance / "ceph" / "ceph.client.glance.keyring").read_text().startswith("[client.glance]")
    assert "mon_host" in (volume / "ceph" / "ceph.conf").read_text()
    assert (volume / "ceph" / "ceph.client.cinder.keyring").read_text().startswith("[client.cinder]")
    assert (backup / "ceph" / "ceph.client.cinder-backup.keyring").read_text().startswith("[client.cinder-backup]")
    # libvirt gets the Cinder key as its secret, read from the keyring by Kolla's own regex.
    secrets = list((compute / "nova-libvirt" / "secrets").glob("*.base64"))
    assert secrets and all(s.read_text().strip() in key for s in secrets)


def test_kolla_templates_carry_the_plan(configured, deployed):
    """nova.conf has the ratios and cmp01's OSD reservation; cinder.conf the cluster and Valkey coordination."""
    _, inv, _, _ = deployed
    _, nodes = configured
    nova = configparser.ConfigParser(interpolation=None, strict=False)
    nova.read(nodes / "cmp01" / "nova-compute" / "nova.conf")
    assert nova["DEFAULT"]["cpu_allocation_ratio"] == "4"
    assert nova["DEFAULT"]["ram_allocation_ratio"] == "1"
    assert nova["DEFAULT"]["disk_allocation_ratio"] == "1"
    # cmp01 runs HCI_DRIVES SSD OSDs: the host's 512 MiB plus 8 GiB and 1 core (its 2 threads) per SSD OSD
    # (sizing's defaults).
    assert nova["DEFAULT"]["reserved_host_memory_mb"] == str(512 + HCI_DRIVES * 8 * 1024)
    assert nova["DEFAULT"]["reserved_host_cpus"] == str(2 * HCI_DRIVES)
    assert nova["libvirt"]["images_type"] == "rbd"
    cinder = configparser.ConfigParser(interpolation=None, strict=False)
    cinder.read(_service_dir(nodes, "cinder-volume") / "cinder.conf")
    assert cinder["DEFAULT"]["cluster"] == "example-cloud-volumes"
    assert cinder["DEFAULT"]["enabled_backends"] == "rbd-nvme,rbd-ssd,rbd-hdd"
    # Kolla's valkey branch: a Redis-protocol URL through the sentinels of the Valkey hosts (the controllers).
    url = cinder["coordination"]["backend_url"]
    assert url.startswith("redis://") and "sentinel=" in url
    assert all(inv.node(c).addresses["api"] in url for c in ("ctl01", "ctl02", "ctl03"))
