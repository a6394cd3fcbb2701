"""Rolling maintenance on the medium example's blueprint, checked without the planner's own rules.

Batches are checked by an independent count of surviving copies over every
placement group a tier can have (``surviving_copies`` of the upgrade's Ceph
test); every command the plan prints is parsed against OpenStackClient's own
command table (its wheel); the durations against a hand count.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import osc_cli_fixture as osc
from cloudplan.blueprint import Blueprint
from cloudplan.cli import main
from cloudplan.day2.maintenance import (DEFAULT_FIRMWARE_REBOOT_SECONDS, DEFAULT_KERNEL_REBOOT_SECONDS,
                                        plan_maintenance)
from cloudplan.day2.maintenance_report import render
from cloudplan.inventory import Inventory, Role
from cloudplan.io import load_model
from cloudplan.spec import Protection
from cloudplan.upgrade import load_cloud
from cloudplan.upgrade.models import UpgradeDefaults
from test_upgrade_ceph import medium, min_size, surviving_copies  # noqa: F401 (medium is a fixture)

ROOT = Path(__file__).resolve().parent.parent


# The medium blueprint packed to its end-of-horizon load cannot be drained host by host (the upgrade's
# Ceph tests say why); maintenance is planned on today's VM counts, spread as Nova's RAM weigher would,
# with batches of up to a third of the hosts so the Ceph rule has several hosts to keep apart.
MEDIUM = ROOT / "examples" / "medium.yaml"
WIDE = UpgradeDefaults(max_batch_fraction=0.3, host_reboot_seconds=DEFAULT_KERNEL_REBOOT_SECONDS)
TODAY_LOAD = ["--flavors", str(MEDIUM), "--max-batch-fraction", "0.3"]


def _today(inventory):
    return load_cloud(inventory, flavors=MEDIUM, defaults=WIDE)


@pytest.fixture(scope="module")
def kernel(medium):
    bp_path, _, blueprint, inventory = medium
    return plan_maintenance(inventory, _today(inventory), reason="kernel",
                            protection=blueprint.workload.policy.protection, defaults=WIDE)


def _batch_steps(m):
    return [s for s in m.plan.children[1].children if s.description.startswith("Batch ")]


def test_every_batch_keeps_every_pool_at_or_above_min_size(medium, kernel):
    _, _, blueprint, inventory = medium
    protection = blueprint.workload.policy.protection
    assert kernel.verdict == "go", kernel.reasons
    for b in kernel.drain.batches:
        for tier, copies in surviving_copies(inventory, protection, b.hosts).items():
            assert copies >= min_size(protection), (b.index, b.hosts, tier, copies)


def test_every_host_is_taken_once_controllers_alone_and_first(medium, kernel):
    _, _, _, inventory = medium
    batched = [h for b in kernel.drain.batches for h in b.hosts]
    alone = kernel.hosts_alone
    assert sorted(batched + alone) == sorted(n.name for n in inventory.nodes)
    assert len(set(batched + alone)) == len(inventory.nodes)
    controllers = sorted(n.name for n in inventory.by_role(Role.control))
    assert sorted(alone[:len(controllers)]) == controllers
    steps = kernel.plan.children[1].children
    assert all(not s.description.startswith("Batch ") for s in steps[:len(alone)])


def test_each_batch_runs_its_commands_in_the_safe_order(medium, kernel):
    _, _, _, inventory = medium
    osd = {n.name for n in inventory.nodes if n.drives}
    for b, step in zip(kernel.drain.batches, _batch_steps(kernel)):
        c = step.commands()
        reboot = c.index("ssh HOST sudo reboot")
        assert any("apt-get -y full-upgrade" in x for x in c[:reboot])
        if b.kind == "compute":
            disable = next(i for i, x in enumerate(c) if "compute service set --disable" in x)
            migrate = next(i for i, x in enumerate(c) if "--live-migration" in x)
            up = next(i for i, x in enumerate(c) if "--service nova-compute" in x)
            enable = next(i for i, x in enumerate(c) if "compute service set --enable" in x)
            assert disable < migrate < reboot < up < enable
        else:
            assert not any("nova-compute" in x for x in c)
        if set(b.hosts) & osd:
            assert c.index("cephadm shell -- ceph osd set noout") < reboot
            assert reboot < c.index("cephadm shell -- ceph osd unset noout") < next(
                i for i, x in enumerate(c) if "HEALTH_OK" in x)
        else:
            assert not any("noout" in x for x in c)


def segments(command: str) -> list[list[str]]:
    """The simple commands of a shell line: split at ; && || | ( ) $( and loop keywords, quotes kept."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.wordchars += "$:,@"
    out, cur = [], []
    for tok in lexer:
        # the lexer joins adjacent operators (");"): any run of them ends a command
        if all(ch in "();|&" for ch in tok) or tok in ("$(", "until", "while", "do", "done", "!"):
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(tok.lstrip("$") if tok == "$" else tok)
    if cur:
        out.append(cur)
    # `xargs -n1 CMD` runs CMD
    out = [c[next(i for i, t in enumerate(c[1:], 1) if not t.startswith("-")):] if c[0] == "xargs" else c
           for c in out]
    return [c for c in out if c and c != ["$"]]


def test_every_openstack_command_is_in_openstackclient(kernel):
    seen = set()
    for command in kernel.plan.commands():
        for tokens in segments(command):
            if tokens[0] == "openstack":
                seen.add(osc.check(tokens))
    assert {"server migrate", "server list", "compute service set", "compute service list",
            "network agent list"} <= seen, seen


def test_the_checker_rejects_commands_openstackclient_does_not_have():
    for bad in ("openstack host evacuate live r1-cmp-01", "openstack server migrate --live r1 --wait-for-it x",
                "openstack compute service set --disabled HOST nova-compute"):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            osc.check(shlex.split(bad))


def test_firmware_reboots_take_longer_by_the_hand_count(medium, kernel):
    bp_path, _, blueprint, inventory = medium
    fw_defaults = WIDE.model_copy(update={"host_reboot_seconds": DEFAULT_FIRMWARE_REBOOT_SECONDS})
    fw = plan_maintenance(inventory, _today(inventory), reason="firmware",
                          protection=blueprint.workload.policy.protection, defaults=fw_defaults)
    assert [b.hosts for b in fw.drain.batches] == [b.hosts for b in kernel.drain.batches]
    reboots = len(fw.drain.batches) + len(fw.hosts_alone)
    extra = reboots * (DEFAULT_FIRMWARE_REBOOT_SECONDS - DEFAULT_KERNEL_REBOOT_SECONDS)
    assert fw.duration_seconds - kernel.duration_seconds == pytest.approx(extra)
    assert not any("apt-get" in c for c in fw.plan.commands())


def test_a_tier_that_cannot_lose_a_domain_is_a_no_go_with_the_reason(medium):
    bp_path, _, _, inventory = medium
    m = plan_maintenance(inventory, _today(inventory), protection=Protection(ec_k=2, ec_m=1), defaults=WIDE)
    assert m.verdict == "no-go"
    assert any(r.startswith("Ceph tier hdd (EC 2+1, min_size 3)") and "stops I/O" in r for r in m.reasons), m.reasons
    osd = {n.name for n in inventory.nodes if n.drives}
    assert not any(set(b.hosts) & osd for b in m.drain.batches)
    assert osd <= set(m.drain.unbatched)
    assert "Hosts no batch can take" in render(m, "md")


def test_cli_json_and_reports(medium, tmp_path, capsys):
    bp, inv, _, _ = medium
    code = main(["maintenance", "plan", str(inv), *TODAY_LOAD, "--reason", "firmware", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["verdict"] == "go" and data["reason"] == "firmware"
    assert {p["tier"]: p["max_domains_down"] for p in data["ceph"]} == {"hdd": 1, "nvme": 1, "ssd": 1}
    for name in ("m.html", "m.md", "m.json"):
        assert main(["maintenance", "plan", str(inv), *TODAY_LOAD, "-o", str(tmp_path / name)]) == 0
    assert "<svg" in (tmp_path / "m.html").read_text()
    md = (tmp_path / "m.md").read_text()
    assert "| batch | kind |" in md
    # Every step of the plan is a list item of its own, indented by its depth.
    lines = md.splitlines()
    m = plan_maintenance(load_model(Inventory, inv), _today(load_model(Inventory, inv)),
                         protection=load_model(Blueprint, bp).workload.policy.protection, defaults=WIDE)
    for depth, step in m.plan.walk():
        assert any(line.startswith("  " * depth + "- " + step.description) for line in lines), step.description
    kernel_batches = json.loads((tmp_path / "m.json").read_text())["batches"]
    assert [b["hosts"] for b in kernel_batches] == [b["hosts"] for b in data["batches"]]


def test_cli_no_go_exits_3_when_a_host_cannot_be_drained(tmp_path, capsys):
    # Three 512 GiB hosts, one 400 GiB VM each: no other host has 400 GiB free for a drained host's VM.
    nodes = [{"name": f"cmp{i}", "role": "compute", "rack": "r1", "expect": {"cores": 64, "ram_gib": 512},
              "bmc": {"address": f"10.0.0.{i}", "username": "a", "password_env": "PW"}} for i in (1, 2, 3)]
    inv = tmp_path / "inv.yaml"
    inv.write_text(json.dumps({"name": "t", "nodes": nodes}))
    flavors = tmp_path / "flavors.json"
    flavors.write_text(json.dumps([{"Name": "big", "VCPUs": 32, "RAM": 400 * 1024, "count": 3}]))
    assert main(["maintenance", "plan", str(inv), "--flavors", str(flavors), "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "no-go" and data["batches"] == []
    assert all(any(r.startswith(f"host cmp{i} cannot be drained") for r in data["reasons"]) for i in (1, 2, 3))
    # Half the VM fits: every host can be emptied, one at a time.
    flavors.write_text(json.dumps([{"Name": "half", "VCPUs": 16, "RAM": 200 * 1024, "count": 3}]))
    assert main(["maintenance", "plan", str(inv), "--flavors", str(flavors), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [b["hosts"] for b in data["batches"]] == [["cmp1"], ["cmp2"], ["cmp3"]]
