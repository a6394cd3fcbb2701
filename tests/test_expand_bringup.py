"""Bringing an expansion up: the steps are checked by the tools that run them.

The kolla-ansible commands against each supported release's own CLI (read from its wheel);
the cloudplan commands are run (provision as a dry run, manifests for real), and the
regenerated passwords.yml keeps every value of the first one.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

import kolla_fixture

from cloudplan.catalog import load_catalog
from cloudplan.cli import main
from cloudplan.day2.bringup import bring_up_new, new_nodes
from cloudplan.day2.expand_layout import expand_layout
from cloudplan.inventory import Inventory, Role
from cloudplan.io import load_model, write_model
from cloudplan.layout import Site, layout
from cloudplan.manifests import supported_releases
from cloudplan.sizing.expansion import expand_cloud
from cloudplan.sizing.plan import size_cloud
from test_expansion import SSD4
from test_sizing import SPINE, workload, write_catalog
from test_maintenance import segments

ROOT = Path(__file__).resolve().parent.parent


def with_ssd(count: int, usable_tib: float):
    return workload(flavors=[{"name": "big", "vcpus": 16, "ram_gib": 64, "count": count}],
                    storage=[{"tier": "ssd", "usable_tib": usable_tib}])


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    """The standing cloud laid out on the example site (10 VMs, 10 TiB on SSD: Kolla's Ceph needs a
    tier), and its expansion to 25 VMs and 15 TiB."""
    cat = load_catalog(write_catalog(tmp_path_factory.mktemp("cat"), drives=[SSD4], spines=[SPINE]))
    site = load_model(Site, ROOT / "examples" / "site.yaml")
    base = size_cloud(with_ssd(10, 10), cat)
    standing = layout(base, site)
    grown_bp = expand_cloud(with_ssd(25, 15), cat, base)
    return standing, expand_layout(grown_bp, standing, site), grown_bp


def _with_new_controller_and_osds(standing: Inventory, grown: Inventory) -> Inventory:
    """The grown inventory with one new node made a controller and one a Ceph storage host."""
    g = grown.model_copy(deep=True)
    new = [n for n in g.nodes if n.name not in {m.name for m in standing.nodes}]
    new[0].role = Role.control
    new[-1].role, new[-1].drives = Role.storage, {"nvme": 2, "ssd": 4}
    return g


def _kolla(step) -> list[list[str]]:
    return [t for c in step.commands() for t in segments(c) if t[0] == "kolla-ansible"]


def test_new_vm_hosts_are_limited_to_themselves(clouds):
    standing, grown, bp = clouds
    steps = bring_up_new(grown, standing, inventory_file="grown.yaml")
    new = new_nodes(grown, standing)
    assert len(new) == bp.expansion.added_nodes > 0
    assert not any(n.role == Role.control for n in new)
    names = ",".join(n.name for n in new if n.role != Role.storage)
    kolla = _kolla(steps)
    assert [t[1] for t in kolla] == ["bootstrap-servers", "prechecks", "pull", "deploy"]
    assert all(t[t.index("--limit") + 1] == names for t in kolla)
    cmds = steps.commands()
    assert cmds[0] == f"cloudplan provision grown.yaml --state expansion.db --only {','.join(n.name for n in new)}"
    ceph = [n.name for n in new if any(n.drives.values())]
    assert [c.split("@")[1] for c in cmds if c.startswith("ssh-copy-id")] == ceph


def test_a_new_controller_brings_every_controller_and_a_ceph_host_its_specs(clouds):
    standing, grown, _ = clouds
    g = _with_new_controller_and_osds(standing, grown)
    steps = bring_up_new(g, standing, inventory_file="grown.yaml", manifests_dir="/etc/kolla")
    limits = {t[1]: t[t.index("--limit") + 1] for t in _kolla(steps)}
    new = [n for n in new_nodes(g, standing) if n.role != Role.storage]
    assert limits["deploy"].split(",") == ["control"] + [n.name for n in new]
    assert limits["pull"].split(",") == [n.name for n in new]         # pulling needs only the new hosts
    cmds = steps.commands()
    assert "cephadm shell -m /etc/kolla/ceph/hosts.yaml -- ceph orch apply -i /mnt/hosts.yaml" in cmds
    i = cmds.index("cephadm shell -m /etc/kolla/ceph/osd-specs.yaml -- ceph orch apply -i /mnt/osd-specs.yaml")
    assert "osd-specs-after-nvme.yaml" in cmds[i + 1]                  # an NVMe + SSD host: the later specs


@pytest.mark.parametrize("release", supported_releases())
def test_every_kolla_ansible_command_is_in_the_release_cli(clouds, release):
    from test_upgrade_kolla import check_command
    standing, grown, _ = clouds
    for inv in (grown, _with_new_controller_and_osds(standing, grown)):
        for tokens in _kolla(bring_up_new(inv, standing, inventory_file="grown.yaml")):
            check_command(tokens, release)


def test_the_printed_cloudplan_commands_run_and_keep_every_password(clouds, tmp_path, monkeypatch):
    standing, grown, grown_bp = clouds
    monkeypatch.chdir(tmp_path)
    write_model(standing, "standing.yaml")
    assert main(["manifests", "standing.yaml", "-o", "deploy/"]) == 0
    before = yaml.safe_load(Path("deploy/passwords.yml").read_text())
    write_model(grown, "grown.yaml")
    write_model(grown_bp, "grown-bp.yaml")
    steps = bring_up_new(grown, standing, inventory_file="grown.yaml", blueprint_file="grown-bp.yaml")
    provision, manifests = [shlex.split(c) for c in steps.commands()[:2]]
    assert main(provision[1:] + ["--dry-run"]) == 0
    assert main(manifests[1:]) == 0
    after = yaml.safe_load(Path("deploy/passwords.yml").read_text())
    assert before and all(after[k] == v for k, v in before.items())
    # ansible's own reading of the regenerated multinode: every host a --limit names is in it, VM hosts as compute
    inv = kolla_fixture.inventory_list(Path("deploy/multinode"), tmp_path)
    new = new_nodes(grown, standing)
    limit = next(t for t in _kolla(steps) if t[1] == "deploy")
    assert set(limit[limit.index("--limit") + 1].split(",")) <= kolla_fixture.members(inv, "all")
    assert {n.name for n in new if n.role == Role.compute} <= kolla_fixture.members(inv, "compute")
    hosts = [d["hostname"] for d in yaml.safe_load_all(Path("deploy/ceph/hosts.yaml").read_text()) if d]
    assert {n.name for n in new_nodes(grown, standing) if any(n.drives.values())} <= set(hosts)
