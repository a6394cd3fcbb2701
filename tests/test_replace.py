"""Replacing a node: hand-checkable refusals and acceptances, the inventory written, the commands real.

The Ceph cases are small enough to check on paper: a 3x replicated tier on 3
hosts keeps 2 host domains without one of them, fewer than its 3 copies; on
4 hosts it keeps 3. The data case uses the CRUSH bound by hand: hosts of 10,
10, 10 and 4 TB without a 10 TB one leave 10, 10 and 4, which hold
min(24/3, 14/2, 4/1) = 4 TB a copy, 3.6 TB below the backfillfull ratio 0.90.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path

import pytest

import osc_cli_fixture as osc
import upgrade_cli_fixture as kolla
from cloudplan.cli import main
from cloudplan.day2.replace import CEPH_BACKFILLFULL_RATIO, TB, check_replacement
from cloudplan.day2.snapshot import CephHost, Snapshot
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.manifests import supported_releases
from cloudplan.spec import Protection, Tier
from cloudplan.upgrade.models import Cloud, FlavorSize, Host
from test_maintenance import medium, segments  # noqa: F401 (medium is a fixture)

ROOT = Path(__file__).resolve().parent.parent
NEW_BMC, NEW_MAC = "10.30.9.99", "52:54:00:aa:bb:cc"


def _inventory(osd_hosts: int, racks: int = 1, drives: int = 2) -> Inventory:
    nodes = [{"name": f"ctl{i}", "role": "control", "rack": "r1",
              "bmc": {"address": f"10.0.0.{i}", "username": "admin", "password_env": "PW"}} for i in (1, 2, 3)]
    nodes += [{"name": f"sto{i}", "role": "storage", "rack": f"r{1 + i % racks}", "drives": {"ssd": drives},
               "mac": f"52:54:00:00:00:{i:02x}", "uuid": f"00000000-0000-0000-0000-0000000000{i:02x}",
               "nics": {"eno1": f"52:54:00:00:01:{i:02x}"},
               "bmc": {"address": f"10.0.1.{i}", "username": "admin", "password_env": "PW"}}
              for i in range(1, osd_hosts + 1)]
    return Inventory.model_validate({"name": "t", "nodes": nodes})


def _check(inv: Inventory, name: str, **kw):
    return check_replacement(inv, name, bmc_address=NEW_BMC, mac=NEW_MAC, **kw)


def test_a_3_host_replicated_tier_refuses_the_replacement_with_the_reason():
    r = _check(_inventory(3), "sto2", protection=Protection(replicas=3))
    assert r.verdict == "no-go"
    (o,) = r.osds
    assert (o.domains_before, o.domains_after, o.size, o.min_size) == (3, 2, 3, 2)
    assert len(r.reasons) == 1 and r.reasons[0].startswith(
        "Ceph tier ssd (3x replication, min_size 2) keeps 2 host failure domain(s) without sto2, fewer than its 3 "
        "copies")
    assert "safe-to-destroy` never passes" in r.reasons[0]


def test_the_same_tier_on_4_hosts_accepts_it():
    r = _check(_inventory(4), "sto2", protection=Protection(replicas=3))
    assert r.verdict == "go", r.reasons
    assert (r.osds[0].domains_after, r.osds[0].ok) == (3, True)
    # No capacities were given: the report says the data was not checked rather than passing it silently.
    assert any("only its failure domains were checked" in w for w in r.warnings)


def test_a_tier_left_below_min_size_says_io_stops():
    r = _check(_inventory(2), "sto1", protection=Protection(replicas=3))
    assert r.verdict == "no-go" and "fall below min_size and stop I/O" in r.reasons[0]


def test_ec_4_2_needs_six_domains_after_the_loss():
    six = _check(_inventory(6), "sto1", protection=Protection(ec_k=4, ec_m=2))
    assert six.verdict == "no-go" and "stay at 5 copies" in six.reasons[0]
    assert _check(_inventory(7), "sto1", protection=Protection(ec_k=4, ec_m=2)).verdict == "go"


def _snapshot(tb: list[float], raw_used_tb: float) -> Snapshot:
    return Snapshot(path="snap", taken_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc), source="placement",
                    hosts=[], vms=0, vms_by_flavor={},
                    ceph_hosts=[CephHost(name=f"sto{i}", bytes_by_class={"ssd": int(c * TB)})
                                for i, c in enumerate(tb, 1)],
                    ceph_raw_used_bytes={"ssd": int(raw_used_tb * TB)})


@pytest.mark.parametrize("per_copy_tb,node,ok", [
    (3.5, "sto1", True),     # 3.5 <= 3.6 TB a copy on 10, 10, 4
    (3.7, "sto1", False),    # 3.7 >  3.6
    (3.7, "sto4", True),     # without the 4 TB host: 10, 10, 10 hold 9 TB a copy
])
def test_the_data_must_fit_the_survivors_by_the_crush_bound(per_copy_tb, node, ok):
    assert CEPH_BACKFILLFULL_RATIO == 0.90
    r = _check(_inventory(4), node, protection=Protection(replicas=3),
               snapshot=_snapshot([10, 10, 10, 4], raw_used_tb=3 * per_copy_tb))
    o = r.osds[0]
    assert o.data_per_copy_tib == pytest.approx(per_copy_tb * TB / 1024 ** 4, abs=1e-3)
    assert o.ok is ok and (r.verdict == "go") is ok
    if not ok:
        assert "cannot hold its data without sto1" in r.reasons[0] and "CRUSH bound" in r.reasons[0]
        assert o.per_copy_tib_after == pytest.approx(3.6 * TB / 1024 ** 4, abs=1e-3)


def _compute_inventory() -> tuple[Inventory, Cloud]:
    nodes = [{"name": f"cmp{i}", "role": "compute", "rack": "r1",
              "bmc": {"address": f"10.0.2.{i}", "username": "admin", "password_env": "PW"}} for i in (1, 2, 3)]
    big = FlavorSize("big", 32, 400 * 1024)
    hosts = [Host(name=f"cmp{i}", rack="r1", vcpu_capacity=256, ram_mib_capacity=512 * 1024) for i in (1, 2, 3)]
    for h in hosts:
        h.add(big)
    return Inventory.model_validate({"name": "t", "nodes": nodes}), Cloud(hosts=hosts, flavors={"big": big},
                                                                          source="t")


def test_a_node_whose_vms_fit_nowhere_is_refused():
    inv, cloud = _compute_inventory()
    r = _check(inv, "cmp1", cloud=cloud)
    assert r.verdict == "no-go" and r.drainable is False
    assert r.reasons[0].startswith("cmp1's VMs cannot be live-migrated away: 1 x big need 400 GiB")
    cloud.hosts[1].vms.clear(), cloud.hosts[1].vm_ram_mib.clear()
    cloud.hosts[1].used_vcpus = cloud.hosts[1].used_ram_mib = 0
    again = _check(inv, "cmp1", cloud=Cloud(hosts=cloud.hosts, flavors=cloud.flavors, source="t"))
    assert again.verdict == "go" and again.drainable is True and again.vms == 1


def test_cli_refusal_exits_3_and_leaves_the_inventory_alone(tmp_path, capsys):
    inv = tmp_path / "inv.yaml"
    inv.write_text(json.dumps(_inventory(3).model_dump(mode="json", exclude_none=True)))
    before = inv.read_bytes()
    code = main(["replace", "sto2", "--inventory", str(inv), "--bmc-address", NEW_BMC, "--mac", NEW_MAC])
    out = capsys.readouterr().out
    assert code == 3 and "Nothing written." in out and "keeps 2 host failure domain(s)" in out
    assert inv.read_bytes() == before


def test_cli_acceptance_writes_the_successor_under_the_same_name(tmp_path, capsys):
    inv = tmp_path / "inv.yaml"
    original = _inventory(4)
    inv.write_text(json.dumps(original.model_dump(mode="json", exclude_none=True)))
    assert main(["replace", "sto2", "--inventory", str(inv), "--bmc-address", NEW_BMC, "--mac",
                 NEW_MAC.upper(), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "go"
    new = load_model(Inventory, inv)
    assert [n.name for n in new.nodes] == [n.name for n in original.nodes]
    node = new.node("sto2")
    assert (node.bmc.address, node.mac, node.uuid, node.nics) == (NEW_BMC, NEW_MAC, None, {})
    assert (node.bmc.username, node.bmc.password_env) == ("admin", "PW")
    assert node.drives == original.node("sto2").drives
    assert [n for n in new.nodes if n.name != "sto2"] == [n for n in original.nodes if n.name != "sto2"]
    assert not list(tmp_path.glob(".*.tmp"))
    # The printed next commands: provision only the successor, then the manifests.
    commands = [s["command"] for s in data["bring_up"]["children"]]
    assert commands[0] == f"cloudplan provision {inv} --state replace-sto2.db --only sto2"
    assert commands[1] == f"cloudplan manifests {inv} -o deploy/"


def test_a_mac_already_in_use_is_refused_naming_the_field(tmp_path, capsys):
    inv = tmp_path / "inv.yaml"
    inv.write_text(json.dumps(_inventory(4).model_dump(mode="json", exclude_none=True)))
    assert main(["replace", "sto2", "--inventory", str(inv), "--bmc-address", NEW_BMC, "--mac",
                 "52:54:00:00:00:01"]) == 1
    assert "nodes sto1 and sto2 have the same MAC 52:54:00:00:00:01" in capsys.readouterr().err


def _all_commands(r) -> list[list[str]]:
    return [tokens for step in (r.decommission, r.bring_up) for c in step.commands() for tokens in segments(c)]


@pytest.mark.parametrize("release", supported_releases())
def test_every_kolla_ansible_command_is_in_the_release_cli(release):
    from test_upgrade_kolla import check_command
    inv, cloud = _compute_inventory()
    for r in (_check(inv, "cmp1"), _check(_inventory(4), "ctl1"), _check(_inventory(4), "sto1")):
        seen = set()
        for tokens in _all_commands(r):
            if tokens[0] == "kolla-ansible":
                check_command(tokens, release)
                seen.add(tokens[1])
        if r.role.value != "storage":
            assert seen == {"stop", "bootstrap-servers", "pull", "deploy"}, seen
        else:
            assert seen == set()
    assert "stop" in kolla.subcommands(release)


def test_every_openstack_command_is_in_openstackclient():
    inv, cloud = _compute_inventory()
    seen = set()
    for r in (_check(inv, "cmp1", cloud=cloud), _check(_inventory(4), "ctl1")):
        for tokens in _all_commands(r):
            if tokens[0] == "openstack":
                seen.add(osc.check(tokens))
    assert {"compute service set", "server migrate", "compute service delete", "network agent delete",
            "network agent remove router", "network agent add network", "router list"} <= seen, seen


def test_the_printed_cloudplan_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inv = ROOT / "examples" / "inventory.yaml"
    node = load_model(Inventory, inv).nodes[0]
    copy = tmp_path / "inv.yaml"
    copy.write_text(inv.read_text())
    r = check_replacement(load_model(Inventory, copy), node.name, bmc_address=NEW_BMC, mac=NEW_MAC,
                          inventory_file=str(copy))
    provision, manifests = [shlex.split(c) for c in r.bring_up.commands()[:2]]
    assert main(provision[1:] + ["--dry-run"]) == 0
    assert main(manifests[1:]) == 0 and (tmp_path / "deploy" / "multinode").is_file()


def test_on_the_medium_blueprint_the_nvme_verdict_follows_the_bound_by_hand_and_an_ssd_host_goes(medium):
    """Without the nvme tier's largest host, each copy may hold the CRUSH bound of the remaining failure
    domains below the backfillfull ratio, found here by bisection on the bound's definition; the
    verdict follows the data."""
    from cloudplan.upgrade import load_cloud
    bp_path, _, blueprint, inventory = medium
    cloud = load_cloud(inventory, blueprint=bp_path)
    nvme = [n for n in inventory.nodes if n.drives.get(Tier.nvme)]
    big = max(nvme, key=lambda n: n.drives[Tier.nvme])
    tb = {g.chassis: d.capacity_tb for g in blueprint.nodes for d in g.drives if d.tier == Tier.nvme}
    # The manifests' CRUSH rule puts copies on the failure domain the blueprint was sized for.
    by_rack = blueprint.workload.policy.failure_domain.value == "rack"
    domains: dict[str, float] = {}
    for n in nvme:
        if n.name != big.name:
            key = n.rack if by_rack else n.name
            domains[key] = domains.get(key, 0.0) + n.drives[Tier.nvme] * tb[n.chassis]
    left = list(domains.values())
    r = check_replacement(inventory, big.name, bmc_address=NEW_BMC, mac=NEW_MAC, cloud=cloud, blueprint=blueprint)
    (o,) = r.osds
    lo, hi = 0.0, sum(left)
    for _ in range(100):   # the largest S with 3 * S <= sum(min(c, S)), by its definition
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 3 * mid <= sum(min(c, mid) for c in left) else (lo, mid)
    assert o.per_copy_tib_after == pytest.approx(lo * TB * CEPH_BACKFILLFULL_RATIO / 1024 ** 4, abs=1e-3)
    demand = next(t.demanded_usable_tib for t in blueprint.capacity.tiers if t.tier == Tier.nvme)
    assert o.data_per_copy_tib == pytest.approx(demand, abs=1e-3)
    assert r.drainable is (True if big.role.value == "compute" else None)   # a storage host runs no VMs
    assert (r.verdict == "no-go") is (demand > o.per_copy_tib_after)
    if r.verdict == "no-go":
        assert r.reasons == [o.reason] and f"cannot hold its data without {big.name}" in o.reason
    ssd = next(n for n in inventory.nodes if n.drives.get(Tier.ssd) and n.role.value == "compute")  # hyperconverged
    ok = check_replacement(inventory, ssd.name, bmc_address=NEW_BMC, mac=NEW_MAC, cloud=cloud, blueprint=blueprint)
    assert ok.verdict == "go", ok.reasons
    o = ok.osds[0]
    same_domain = [n for n in inventory.nodes if n.drives.get(Tier.ssd) and n.name != ssd.name
                   and (n.rack == ssd.rack if o.failure_domain == "rack" else False)]
    assert ok.drainable is True and ok.vms > 0
    assert o.domains_after == o.domains_before - (0 if same_domain else 1)


def test_cli_with_a_live_snapshot_uses_ceph_s_own_figures(tmp_path, capsys):
    """The capacity tests' snapshot (real `ceph osd df tree` / `ceph df` formats): nvme OSD hosts of 100,
    100, 100 and 10 TiB holding 30 TiB raw under 3x, 10 TiB a copy. Without a 100 TiB host the survivors
    hold min(210/3, 110/2, 10/1) = 10 TiB a copy, 9 below backfillfull: refused. Without the 10 TiB host,
    300/3 = 100, 90 below backfillfull: accepted."""
    snap = ROOT / "tests" / "data" / "capacity" / "cloud" / "2026-12-01"
    nodes = [{"name": name, "role": "storage", "rack": "r1" if "r1" in name else "r2", "drives": {"nvme": 1},
              "bmc": {"address": f"10.0.3.{i}", "username": "admin", "password_env": "PW"}}
             for i, name in enumerate(("stor-r1-01", "stor-r1-02", "stor-r2-01", "stor-r2-02"), 1)]
    inv = tmp_path / "inv.yaml"
    inv.write_text(json.dumps({"name": "cloud-a", "nodes": nodes}))
    base = ["--inventory", str(inv), "--bmc-address", NEW_BMC, "--mac", NEW_MAC, "--snapshot", str(snap), "--json"]
    assert main(["replace", "stor-r1-01", *base]) == 3
    (o,) = json.loads(capsys.readouterr().out)["osds"]
    assert (o["data_per_copy_tib"], o["per_copy_tib_after"], o["ok"]) == (10.0, 9.0, False)
    assert "cannot hold its data without stor-r1-01" in o["reason"]
    assert main(["replace", "stor-r2-02", *base, "--dry-run"]) == 0
    (o,) = json.loads(capsys.readouterr().out)["osds"]
    assert (o["data_per_copy_tib"], o["per_copy_tib_after"], o["ok"]) == (10.0, 90.0, True)
    assert "mac" not in inv.read_text()      # --dry-run: nothing written


def test_a_controller_is_redeployed_with_every_controller_and_keeps_the_monitors_in_mind():
    r = _check(_inventory(4), "ctl2")
    assert r.verdict == "go" and r.osds == []
    bring_up = r.bring_up.commands()
    # Kolla's guide: bootstrap and deploy of a new controller include all of them; the pull only the new one.
    assert "kolla-ansible bootstrap-servers -i deploy/multinode --limit control" in bring_up
    assert "kolla-ansible deploy -i deploy/multinode --limit control" in bring_up
    assert "kolla-ansible pull -i deploy/multinode --limit ctl2" in bring_up
    # Four storage hosts carry the monitors: the controller is no Ceph host, nothing to drain there.
    assert not any("ceph orch host drain" in c for c in r.decommission.commands())
    # With two storage hosts the monitors are on the controllers (the manifests' rule).
    small = _check(_inventory(2), "ctl2")
    assert any(c == "cephadm shell -- ceph orch host drain ctl2" for c in small.decommission.commands())
    assert any("runs a Ceph monitor" in w for w in small.warnings)


def test_a_host_the_snapshot_does_not_name_is_not_counted_as_empty():
    # sto4 is not in `ceph osd df tree` (another name in CRUSH): its capacity is unknown, not zero.
    snap = _snapshot([10, 10, 10], raw_used_tb=3 * 3.0)
    r = _check(_inventory(4), "sto1", protection=Protection(replicas=3), snapshot=snap)
    assert r.verdict == "go" and r.osds[0].per_copy_tib_after is None
    assert "tier ssd: no ssd capacity for sto4: only its failure domains were checked" in r.warnings
