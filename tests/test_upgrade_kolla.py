"""The plan against each release's real Kolla-Ansible: its CLI, its playbooks, its defaults.

For every hop between the releases cloudplan deploys, each command the plan
prints is parsed: a ``kolla-ansible`` subcommand must be in that release's
command table with options its parser accepts (and the ones it requires), a
``kolla-genpwd``/``kolla-mergepwd`` call must use that tool's options, and
each control-plane ``--tags`` must select, in ``ansible-playbook site.yml
--list-tasks``, exactly the plays the step claims, in site.yml's order.
Checks and backups run with the release being left; the rest with the new one.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import upgrade_cli_fixture as kolla
from cloudplan.inventory import Inventory
from cloudplan.manifests import supported_releases
from cloudplan.upgrade import drain_check, load_catalog
from cloudplan.upgrade.groups import ServiceMove
from cloudplan.upgrade.kolla import KOLLA_RELEASES, PASSWORDS_TEMPLATE, RABBITMQ_ALLOWED_UPGRADES
from cloudplan.upgrade.models import Cloud, FlavorSize, Host
from cloudplan.upgrade.plan import PlanInputs, SERVICE_TAGS, build_plan

TODAY = dt.date(2026, 12, 1)
HOPS = [("2025.2", "2026.1"), ("2026.1", "2026.2")]
ALL_SERVICES = {t.key for t in SERVICE_TAGS}


def _inventory() -> Inventory:
    nodes = [{"name": f"ctl{i}", "role": "control", "rack": f"r{i}",
              "bmc": {"address": f"10.0.0.{i}", "username": "a", "password_env": "PW"}} for i in (1, 2, 3)]
    nodes += [{"name": f"cmp{i}", "role": "compute", "rack": f"r{i}", "drives": {"nvme": 2},
               "bmc": {"address": f"10.0.1.{i}", "username": "a", "password_env": "PW"}} for i in (1, 2, 3)]
    return Inventory.model_validate({"name": "t", "nodes": nodes})


def _plan(src: str, dst: str):
    cat = load_catalog(today=TODAY)
    m = FlavorSize("m", 2, 4096)
    hosts = [Host(name=f"cmp{i}", rack=f"r{i}", vcpu_capacity=32, ram_mib_capacity=65536) for i in (1, 2, 3)]
    hosts[0].add(m)
    inputs = PlanInputs(services=set(ALL_SERVICES), osd_hosts={"cmp1", "cmp2", "cmp3"},
                        moves=[ServiceMove(group="cinder-volume", old_hosts=["stor1"], new_hosts=["ctl1"])],
                        cinder_backends=["rbd-nvme"])
    return build_plan(cat.hop(cat.get(src), cat.get(dst)), _inventory(),
                      drain_check(Cloud(hosts=hosts, flavors={"m": m}, source="t")), inputs=inputs)


def _segments(command: str) -> list[list[str]]:
    return [shlex.split(part) for part in re.split(r"&&|;|\|", command) if part.strip()]


def check_command(tokens: list[str], release: str) -> None:
    tool = tokens[0]
    if tool == "kolla-ansible":
        sub = tokens[1]
        assert sub in kolla.subcommands(release), f"kolla-ansible {sub} is not a {release} command"
        accepted, required = kolla.command_options(release, sub)
        used = {t.split("=")[0] for t in tokens[2:] if t.startswith("-")}
        assert used <= accepted, (release, tokens, used - accepted)
        assert required <= used, (release, tokens, required - used)
    elif tool in ("kolla-genpwd", "kolla-mergepwd"):
        assert tool in kolla.console_scripts(release)
        used = {t for t in tokens[1:] if t.startswith("-")}
        assert used <= kolla.tool_options(release, tool), (release, tokens)


@pytest.mark.parametrize("src,dst", HOPS)
def test_every_kolla_command_exists_in_the_release_that_runs_it(src, dst):
    plan = _plan(src, dst)
    seen = set()
    for i, phase in enumerate(plan.children):
        release = src if i == 0 else dst
        for command in phase.commands():
            for tokens in _segments(command):
                if tokens[0].startswith("kolla-"):
                    check_command(tokens, release)
                    seen.add(" ".join(tokens[:2]))
    # the steps the issue names are all there
    for needed in ("kolla-ansible mariadb-backup", "kolla-ansible install-deps", "kolla-ansible pull",
                   "kolla-ansible prechecks", "kolla-ansible upgrade", "kolla-ansible prune-images",
                   "kolla-genpwd -p", "kolla-mergepwd --old"):
        assert needed in seen, needed


@pytest.mark.parametrize("src,dst", HOPS)
def test_no_manage_command_runs_on_the_host(src, dst):
    # nova-manage and cinder-manage live in the containers (and Kolla's upgrade runs the migrations).
    for command in _plan(src, dst).commands():
        for tokens in _segments(command):
            if any(t.endswith("-manage") for t in tokens):
                assert tokens[:2] == ["docker", "exec"] and tokens[2] in ("nova_api", "cinder_api"), tokens


def test_durable_queue_migration_commands_against_the_earliest_wheel_read(listing_dir):
    """The procedure runs with the 2024.x tools, whose wheels these tests do not read: its commands and
    tags are checked against 2025.2's (21.x), the earliest release cloudplan deploys, whose docs give it."""
    cat = load_catalog(today=TODAY)
    m = FlavorSize("m", 2, 4096)
    cloud = Cloud(hosts=[Host(name="cmp1", rack="r1", vcpu_capacity=32, ram_mib_capacity=65536)], flavors={"m": m},
                  source="t")
    plan = build_plan(cat.hop(cat.get("2024.2"), cat.get("2025.1")), _inventory(), drain_check(cloud),
                      inputs=PlanInputs(services=set(ALL_SERVICES)))
    commands = [c for c in plan.children[0].commands() if c.startswith("kolla-ansible")]
    assert len(commands) == 6   # mariadb-backup, then genconfig, stop, reconfigure, rabbitmq-reset-state, deploy
    for command in commands:
        check_command(shlex.split(command), "2025.2")
        if "--tags" in command:
            for tag in command.split("--tags ")[1].split()[0].split(","):
                assert kolla.selected_from_full_listing("2025.2", tag, listing_dir), tag


def test_the_printed_cloudplan_manifests_command_runs(tmp_path, monkeypatch):
    from pathlib import Path

    from cloudplan.cli import main
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    cat = load_catalog(today=TODAY)
    m = FlavorSize("m", 2, 4096)
    cloud = Cloud(hosts=[Host(name="cmp1", rack="r1", vcpu_capacity=32, ram_mib_capacity=65536)], flavors={"m": m},
                  source="t")
    plan = build_plan(cat.hop(cat.get("2026.1"), cat.get("2026.2")), _inventory(), drain_check(cloud),
                      inventory_file=str(root / "examples" / "inventory.yaml"))
    command = next(c for c in plan.commands() if c.startswith("cloudplan manifests"))
    assert main(shlex.split(command)[1:]) == 0
    assert (tmp_path / "deploy-2026.2" / "multinode").is_file()


def test_the_checker_rejects_what_the_old_plan_printed():
    # The commands the issue found: each must fail the check above.
    for bad in ("kolla-ansible mariadb_backup", "kolla-ansible rabbitmq-upgrade 4.2",
                "kolla-ansible prune-images", "kolla-ansible stop --tags nova"):
        with pytest.raises(AssertionError):
            check_command(shlex.split(bad), "2026.1")


@pytest.mark.parametrize("src,dst", HOPS)
def test_tool_versions_and_paths_match_the_wheel(src, dst):
    new = KOLLA_RELEASES[dst]
    assert Version(kolla.wheel_version(dst)) in SpecifierSet(new.pip_spec.split("kolla-ansible", 1)[1])
    assert new.ansible_core == kolla.docs_ansible_core(dst)
    assert (kolla.share(dst) / PASSWORDS_TEMPLATE.split("share/kolla-ansible/", 1)[1]).is_file()
    text = " ".join(_plan(src, dst).commands())
    assert f"pip install --upgrade '{new.ansible_core_spec}'" in text and f"$VIRTUAL_ENV/{PASSWORDS_TEMPLATE}" in text
    # the template is copied before kolla-genpwd fills it
    assert text.index("passwords.yml.new &&") < text.index("kolla-genpwd -p passwords.yml.new")


def test_every_release_table_entry_agrees_with_its_wheel():
    for release in supported_releases():
        assert KOLLA_RELEASES[release].major == Version(kolla.wheel_version(release)).major
        assert KOLLA_RELEASES[release].ansible_core == kolla.docs_ansible_core(release)
        defaults = yaml.safe_load((kolla.share(release) / "ansible" / "roles" / "rabbitmq" / "defaults" /
                                   "main.yml").read_text())
        if "rabbitmq_allowed_upgrades" in defaults:
            assert {k: tuple(v) for k, v in defaults["rabbitmq_allowed_upgrades"].items()} == RABBITMQ_ALLOWED_UPGRADES


@pytest.fixture(scope="module")
def listing_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ansible")


@pytest.mark.parametrize("src,dst", [("2025.1", "2025.2")] + HOPS)
def test_every_tag_selects_the_plays_it_claims_in_site_yml_order(src, dst, listing_dir):
    steps = [s for s in _plan(src, dst).children[2].children if s.command and "--tags" in s.command]
    assert sorted(s.command.split("--tags ")[1].split(",")[0] for s in steps) == sorted(t.key for t in SERVICE_TAGS)
    order = kolla.play_order(dst, listing_dir)
    last = -1
    for step in steps:
        tags = step.command.split("--tags ")[1].split()[0]
        assert "--limit" not in step.command
        assert sorted(kolla.selected_from_full_listing(dst, tags, listing_dir)) == sorted(step.plays), tags
        own = min(order.index(p) for p in step.plays if p != "Apply role loadbalancer" or tags == "loadbalancer")
        assert own > last, f"{tags} runs before the step above it in site.yml"
        last = own


@pytest.mark.parametrize("release,tags", [("2026.1", "common,cron,fluentd"), ("2026.2", "nova")])
def test_the_full_listing_answers_as_a_tags_run_does(release, tags, listing_dir):
    # The shortcut above, checked against ansible-playbook --tags itself.
    assert kolla.selected_plays(release, tags, listing_dir) == kolla.selected_from_full_listing(
        release, tags, listing_dir)


def test_the_hop_notes_facts_are_in_the_wheels():
    # 2026.1: the test-images precheck is new in 22.x
    def prechecks(release):
        return " ".join(p.read_text() for p in (kolla.share(release) / "ansible" / "roles" / "prechecks").rglob("*.yml"))
    assert "--use-test-images" in prechecks("2026.1") and "--use-test-images" not in prechecks("2025.2")
    # 2026.2: 23.x needs Python 3.12
    assert "Requires-Python: >=3.12" in kolla._read("2026.2", "METADATA")
    assert "Requires-Python: >=3.12" not in kolla._read("2026.1", "METADATA")
