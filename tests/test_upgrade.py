"""Upgrade rehearsal: release rules, placement input, drain check, plan, CLI.

The drain cases are small enough to check on paper; they run the real
packing engine. Hosts have 8 threads and 64.5 GiB, so with Nova's defaults
(CPU ratio 4.0, RAM ratio 1.0, 512 MiB reserved) each schedules 32 vCPUs and
exactly 64 GiB.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cloudplan.blueprint import Blueprint
from cloudplan.cli import main
from cloudplan.errors import SpecError, UpgradeError
from cloudplan.inventory import Inventory, Network, Role
from cloudplan.io import load_model
from cloudplan.upgrade import drain_check, load_catalog, load_cloud, rehearse
from cloudplan.upgrade.drain import DrainChecker, _largest_prefix, host_migration_seconds
from cloudplan.upgrade.models import Cloud, FlavorSize, Host, UpgradeDefaults
from cloudplan.upgrade.placement import read_flavors, read_hypervisors, read_servers
from cloudplan.upgrade.plan import KOLLA_UPGRADE_ORDER, build_plan
from cloudplan.upgrade.releases import parse_catalog
from cloudplan.upgrade.synthetic import synthetic_cloud

GIB = 1024
TODAY = dt.date(2026, 12, 1)
FLAVORS = [{"Name": "m.16", "VCPUs": 4, "RAM": 16 * GIB, "Disk": 20},
           {"Name": "m.20", "VCPUs": 4, "RAM": 20 * GIB, "Disk": 20},
           {"Name": "r.48", "VCPUs": 8, "RAM": 48 * GIB, "Disk": 40}]


def _inventory(tmp_path, racks=("r1", "r2", "r3")):
    nodes = [{"name": f"ctl{i}", "role": "control", "rack": r, "bmc": {"address": f"10.0.0.{i}", "username": "a",
              "password_env": "BMC_PW"}} for i, r in enumerate(("r1", "r2", "r3"), 1)]
    nodes += [{"name": f"cmp{i}", "role": "compute", "rack": r, "expect": {"cores": 8, "ram_gib": 64.5},
               "bmc": {"address": f"10.0.1.{i}", "username": "a", "password_env": "BMC_PW"}}
              for i, r in enumerate(racks, 1)]
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"name": "test-cloud", "nodes": nodes}))
    return path, Inventory.model_validate({"name": "test-cloud", "nodes": nodes})


def _servers(tmp_path, layout, key="Flavor"):
    rows = []
    for host, flavors in layout.items():
        for f in flavors:
            rows.append({"ID": f"id-{len(rows)}", "Name": f"vm{len(rows)}", "Status": "ACTIVE", key: f,
                         "Host": host, "Availability Zone": "nova"})
    path = tmp_path / "servers.json"
    path.write_text(json.dumps(rows))
    return path


def _flavors(tmp_path):
    path = tmp_path / "flavors.json"
    path.write_text(json.dumps(FLAVORS))
    return path


def _cloud(tmp_path, layout, racks=("r1", "r2", "r3")):
    _, inv = _inventory(tmp_path, racks)
    return inv, load_cloud(inv, placement=_servers(tmp_path, layout), flavors=_flavors(tmp_path))


# --- releases -------------------------------------------------------------------------------

def test_packaged_catalog_marks_every_dot_one_release_since_2023_as_slurp():
    cat = load_catalog()
    ids = [r.key for r in cat]
    assert ids[-5:] == ["2025.1", "2025.2", "2026.1", "2026.2", "2027.1"]
    assert cat.get("indri").key == "2027.1" and cat.get("Gazpacho").key == "2026.1"
    for r in cat:
        if r.release_id:
            assert r.slurp == r.release_id.endswith(".1"), r.key


@pytest.mark.parametrize("src,dst,chain", [
    ("2025.2", "2026.1", ["2025.2", "2026.1"]),             # N -> N+1
    ("2025.1", "2026.1", ["2025.1", "2026.1"]),             # SLURP -> SLURP
    ("2024.2", "2026.1", ["2024.2", "2025.1", "2026.1"]),   # the example
    ("2025.2", "2027.1", ["2025.2", "2026.1", "2027.1"]),
    ("zed", "2024.1", ["zed", "2023.1", "2024.1"]),
])
def test_shortest_chain_of_supported_hops(src, dst, chain):
    cat = load_catalog()
    assert [r.key for r in cat.shortest_chain(cat.get(src), cat.get(dst))] == chain


def test_hop_rules_and_errors():
    cat = load_catalog()
    assert cat.is_supported_hop(cat.get("2024.1"), cat.get("2025.1"))
    assert not cat.is_supported_hop(cat.get("2024.2"), cat.get("2026.1"))
    assert not cat.is_supported_hop(cat.get("2025.2"), cat.get("2026.2"))   # .2 -> .2 skips a release
    with pytest.raises(UpgradeError, match="downgrade"):
        cat.shortest_chain(cat.get("2026.1"), cat.get("2025.1"))
    with pytest.raises(UpgradeError, match="unknown release 'kumquat'"):
        cat.get("kumquat")


def test_newer_upstream_catalog_in_its_real_format(tmp_path):
    # Upstream lists newest first; YAML reads 2028.1 as a float.
    path = tmp_path / "series_status.yaml"
    path.write_text("---\n- name: jabuticaba\n  release-id: 2027.2\n  status: future\n  initial-release: 2027-09-29\n"
                    "- name: kumquat\n  release-id: 2028.1\n  status: future\n  initial-release: 2028-03-29\n"
                    "  slurp: true\n- name: indri\n  release-id: 2027.1\n  status: development\n"
                    "  initial-release: 2027-03-31\n  slurp: true\n")
    cat = load_catalog(path)
    assert [r.key for r in cat] == ["2027.1", "2027.2", "2028.1"]
    assert [r.key for r in cat.successors(cat.get("2027.1"))] == ["2027.2", "2028.1"]
    with pytest.raises(SpecError, match=r"\[0\]"):
        parse_catalog([{"release-id": 2025.1}], path="bad.yaml")


def test_undated_series_sort_by_their_id_and_dot_one_is_slurp_by_default():
    rel = parse_catalog([{"name": "indri", "release-id": 2027.1, "status": "future"},
                         {"name": "hibiscus", "release-id": "2026.2", "status": "development",
                          "initial-release": "2026-10-01"},
                         {"name": "gazpacho", "release-id": 2026.1, "status": "maintained",
                          "initial-release": "2026-04-01"}])
    assert [(r.key, r.slurp) for r in rel] == [("2026.1", True), ("2026.2", False), ("2027.1", True)]


# --- placement input ------------------------------------------------------------------------

def test_reads_openstack_cli_json_old_and_new_flavor_field_and_csv(tmp_path):
    old = _servers(tmp_path, {"cmp1": ["m.16"]}, key="Flavor Name")
    assert read_servers(old) == [("vm0", "m.16", "cmp1", "ACTIVE")]
    csv_path = tmp_path / "servers.csv"
    csv_path.write_text("vm,flavor,host\nweb1,m.16,cmp2.example.org\n")
    assert read_servers(csv_path) == [("web1", "m.16", "cmp2", "ACTIVE")]
    sizes, counts = read_flavors(_flavors(tmp_path))
    assert sizes["r.48"] == FlavorSize("r.48", 8, 48 * GIB, 40.0) and counts == {}
    hyp = tmp_path / "hyp.json"
    hyp.write_text(json.dumps([{"ID": 1, "Hypervisor Hostname": "cmp1.example.org", "Hypervisor Type": "QEMU",
                                "Host IP": "10.0.1.1", "State": "up", "vCPUs Used": 4, "vCPUs": 16,
                                "Memory MB Used": 2048, "Memory MB": 131072}]))
    assert read_hypervisors(hyp) == {"cmp1": (16.0, 131072.0)}


def test_hypervisor_sizes_override_the_inventory(tmp_path):
    _, inv = _inventory(tmp_path)
    hyp = tmp_path / "hyp.json"
    hyp.write_text(json.dumps([{"Hypervisor Hostname": "cmp1", "vCPUs": 16, "Memory MB": 131072}]))
    cloud = load_cloud(inv, placement=_servers(tmp_path, {}), flavors=_flavors(tmp_path), hypervisors=hyp)
    sizes = {h.name: (h.vcpu_capacity, h.ram_mib_capacity) for h in cloud.hosts}
    assert sizes == {"cmp1": (64, 131072 - 512), "cmp2": (32, 64 * GIB), "cmp3": (32, 64 * GIB)}


def test_placement_errors_name_the_server_and_host(tmp_path):
    _, inv = _inventory(tmp_path)
    with pytest.raises(SpecError, match="server vm0: flavor 'x.huge' is not in the flavor table"):
        load_cloud(inv, placement=_servers(tmp_path, {"cmp1": ["x.huge"]}), flavors=_flavors(tmp_path))
    with pytest.raises(SpecError, match="server vm0 runs on host ctl1, which is a control node"):
        load_cloud(inv, placement=_servers(tmp_path, {"ctl1": ["m.16"]}), flavors=_flavors(tmp_path))
    with pytest.raises(UpgradeError, match="--flavors is needed"):
        load_cloud(inv, placement=_servers(tmp_path, {}))


def test_fill_from_flavor_counts_spreads_like_nova(tmp_path):
    _, inv = _inventory(tmp_path)
    table = tmp_path / "flavors.yaml"
    table.write_text("flavors:\n  - {name: m.16, vcpus: 4, ram_gib: 16, count: 6}\n")
    cloud = load_cloud(inv, flavors=table)
    assert [h.vms for h in cloud.hosts] == [{"m.16": 2}] * 3


# --- drain check (hand-checkable, real packing engine) --------------------------------------

def test_every_host_drains_when_the_others_have_room(tmp_path):
    # Each host: 2 x 16 GiB used, 32 GiB free. Draining one puts one VM on each other host.
    _, cloud = _cloud(tmp_path, {"cmp1": ["m.16", "m.16"], "cmp2": ["m.16", "m.16"], "cmp3": ["m.16", "m.16"]})
    report = drain_check(cloud, UpgradeDefaults())
    assert [h.drainable for h in report.hosts] == [True, True, True]
    assert report.reasons == []
    # 3 hosts x 10 % rounds down to the minimum batch of one host.
    assert report.max_batch_hosts == 1 and [b.hosts for b in report.batches] == [["cmp1"], ["cmp2"], ["cmp3"]]
    # Each rack holds one host: 32 GiB onto 64 GiB free elsewhere.
    assert all(r.drainable for r in report.racks)


def test_a_vm_larger_than_any_free_space_blocks_its_host_with_the_reason(tmp_path):
    # cmp1 runs a 48 GiB VM; cmp2 has 24 GiB free, cmp3 44 GiB: neither takes 48 GiB, while
    # cmp2's two 20 GiB VMs fit on cmp3 and cmp3's one fits on cmp2.
    _, cloud = _cloud(tmp_path, {"cmp1": ["r.48"], "cmp2": ["m.20", "m.20"], "cmp3": ["m.20"]})
    report = drain_check(cloud)
    by = {h.name: h for h in report.hosts}
    assert not by["cmp1"].drainable and by["cmp1"].batch is None
    assert by["cmp1"].reason == ("host cmp1 cannot be drained: 1 x r.48 need 48 GiB (48 GiB each), "
                                 "the largest free space elsewhere is 44 GiB")
    assert by["cmp2"].drainable and by["cmp3"].drainable
    assert report.reasons == [by["cmp1"].reason]


def test_fragmented_free_space_is_proven_infeasible_by_the_exact_engine(tmp_path):
    # cmp1: 3 x 20 GiB = 60 GiB. cmp2 and cmp3: 2 x m.16 = 32 GiB used, 32 GiB free each:
    # 64 GiB free >= 60 needed, each VM fits
    # somewhere, but a host takes one 20 GiB VM only (2 x 20 > 32): room for 2 of the 3.
    _, cloud = _cloud(tmp_path, {"cmp1": ["m.20"] * 3, "cmp2": ["m.16", "m.16"], "cmp3": ["m.16", "m.16"]})
    checker = DrainChecker(cloud, UpgradeDefaults())
    verdict = checker.fits([cloud.hosts[0]])
    assert not verdict.fits and verdict.decided_by == "exact"
    assert "3 x m.20 need 60 GiB" in verdict.reason and "room for 2 of them" in verdict.reason


def test_batches_grow_to_the_cap_and_stop_where_capacity_ends():
    # 10 hosts in 2 racks, 64 GiB each, 16 GiB used on each: 480 GiB free in total.
    defaults = UpgradeDefaults(max_batch_fraction=0.5)
    m16 = FlavorSize("m.16", 4, 16 * GIB)
    hosts = []
    for i in range(10):
        h = Host(name=f"h{i:02d}", rack="ra" if i < 5 else "rb", vcpu_capacity=32, ram_mib_capacity=64 * GIB)
        h.add(m16)
        hosts.append(h)
    report = drain_check(Cloud(hosts=hosts, flavors={"m.16": m16}, source="test"), defaults)
    assert report.max_batch_hosts == 5
    assert [len(b.hosts) for b in report.batches] == [5, 5]
    assert report.batches[0].racks == ["ra"] and report.batches[0].free_ram_gib_after == 5 * 48 - 5 * 16
    # With 3 VMs (48 GiB) per host, 16 GiB free each: draining k hosts needs 3k slots of
    # 16 GiB on the 10 - k others, one slot each: 3k <= 10 - k, so k <= 2.
    for h in hosts:
        h.add(m16, 2)
    report = drain_check(Cloud(hosts=hosts, flavors={"m.16": m16}, source="test"), defaults)
    assert [len(b.hosts) for b in report.batches] == [2, 2, 2, 2, 2]


@pytest.mark.parametrize("answer", [1, 2, 7, 31, 32, 33, 64, 100])
@pytest.mark.parametrize("guess", [1, 5, 32, 100])
def test_batch_search_finds_the_largest_prefix_from_any_guess(answer, guess):
    calls = []

    def fits(k):
        calls.append(k)
        return k <= answer
    assert _largest_prefix(fits, guess, 100) == answer
    assert len(calls) <= 2 * 7 + 2          # galloping then bisection: O(log) probes
    if guess == answer and answer < 100:
        assert calls == [answer, answer + 1]  # the usual case: the last batch's size again


def test_migration_time_from_ram_bandwidth_dirty_factor_and_parallelism():
    h = Host(name="h", rack="r", vcpu_capacity=32, ram_mib_capacity=64 * GIB)
    h.add(FlavorSize("m.16", 4, 16 * GIB), 2)
    one = 16 * 8 / 10.0 * 1.3      # 16 GiB at 10 Gbit/s, 30 % resent
    # Nova's max_concurrent_live_migrations is 1 unless raised: one after the other.
    assert host_migration_seconds(h, UpgradeDefaults()) == pytest.approx(2 * one)
    assert host_migration_seconds(h, UpgradeDefaults(parallel_migrations_per_host=2)) == pytest.approx(one)


def test_synthetic_cloud_is_deterministic_and_drains_at_scale():
    _, a = synthetic_cloud(60, 1200, seed=7)
    _, b = synthetic_cloud(60, 1200, seed=7)
    assert [h.vms for h in a.hosts] == [h.vms for h in b.hosts] and a.vm_count == 1200
    report = drain_check(a)
    assert all(h.drainable for h in report.hosts)
    assert sum(len(b.hosts) for b in report.batches) == 60 and report.largest_batch <= 6


# --- plan -----------------------------------------------------------------------------------

def test_plan_tree_follows_kolla_order_and_adds_slurp_steps(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    cat = load_catalog(today=TODAY)
    report = drain_check(cloud)
    plan = build_plan(cat.hops([cat.get("2025.1"), cat.get("2026.1")])[0], inv, report)
    text = plan.render_text()
    assert text.splitlines()[0] == "Upgrade cloud from '2025.1' (epoxy) to '2026.1' (gazpacho)"
    phases = [c.description for c in plan.children]
    assert phases[0].startswith("Checks and backups") and phases[1] == "New tools and configuration for 2026.1"
    assert phases[2].startswith("Control plane") and phases[3].startswith("Hosts in batches")
    commands = plan.commands()
    assert any(c.startswith("kolla-ansible install-deps") for c in commands)
    assert "online_data_migrations" in " ".join(c for c in plan.children[0].commands())   # skip-level only
    cp = [s.command.split("--tags ")[1].split()[0].split(",")[0] for s in plan.children[2].children]
    assert cp == [s for s in KOLLA_UPGRADE_ORDER if s in cp]
    assert cp.index("mariadb") < cp.index("rabbitmq") < cp.index("keystone")
    assert cp.index("openvswitch") < cp.index("nova") < cp.index("neutron")     # site.yml: openvswitch, ovn, nova
    assert all("--limit" not in s.command for s in plan.children[2].children)
    # 4.0 -> 4.2 is allowed by rabbitmq_allowed_upgrades: no intermediate RabbitMQ step
    assert "rabbitmq-upgrade" not in " ".join(commands) and "nova-manage db" not in " ".join(
        c for c in commands if not c.startswith("docker exec"))
    assert plan.total_seconds > 0
    n1 = build_plan(cat.hops([cat.get("2025.2"), cat.get("2026.1")])[0], inv, report)
    assert "online_data_migrations" not in " ".join(n1.commands())


def test_the_only_intermediate_rabbitmq_steps_run_with_the_old_kolla_ansible(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    cat = load_catalog(today=TODAY)
    commands = build_plan(cat.hop(cat.get("2023.1"), cat.get("2024.1")), inv, drain_check(cloud)).commands()
    steps = [i for i, c in enumerate(commands) if c.startswith("kolla-ansible rabbitmq-upgrade")]
    assert [commands[i] for i in steps] == ["kolla-ansible rabbitmq-upgrade 3.12", "kolla-ansible rabbitmq-upgrade 3.13"]
    assert steps[-1] < next(i for i, c in enumerate(commands) if c.startswith("pip install --upgrade 'kolla-ansible"))
    for src, dst in (("2024.1", "2025.1"), ("2025.1", "2026.1"), ("2025.2", "2026.1"), ("2026.1", "2026.2")):
        assert not any("rabbitmq-upgrade" in c for c in build_plan(cat.hop(cat.get(src), cat.get(dst)), inv,
                                                                   drain_check(cloud)).commands())


def test_durable_queue_migration_comes_before_any_upgrade_to_epoxy(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    cat = load_catalog(today=TODAY)
    report = drain_check(cloud)
    for src in ("2024.1", "2024.2"):
        commands = build_plan(cat.hop(cat.get(src), cat.get("2025.1")), inv, report).commands()
        reset = commands.index("kolla-ansible rabbitmq-reset-state")
        assert commands[reset - 1] == "kolla-ansible reconfigure --tags rabbitmq"
        assert commands[reset - 2].startswith("kolla-ansible stop --tags ")
        assert commands[reset + 1].startswith("kolla-ansible deploy --tags ")
        assert reset < commands.index("kolla-ansible pull")
    later = build_plan(cat.hop(cat.get("2025.2"), cat.get("2026.1")), inv, report).commands()
    assert "kolla-ansible rabbitmq-reset-state" not in later


def test_rehearse_refuses_an_unsupported_hop_with_the_chain(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    r = rehearse(inv, "2024.2", "2026.1", cloud)
    assert r.verdict == "no-go" and not r.supported and r.drain is None
    assert [(h["from"], h["to"]) for h in r.path] == [("2024.2", "2025.1"), ("2025.1", "2026.1")]
    assert "2024.2 -> 2025.1 -> 2026.1" in r.reasons[0]


# --- CLI ------------------------------------------------------------------------------------

def test_cli_rehearse_json_go(tmp_path, capsys):
    inv, _ = _inventory(tmp_path)
    servers = _servers(tmp_path, {"cmp1": ["m.16"], "cmp2": ["m.16"], "cmp3": ["m.16"]})
    code = main(["upgrade", "rehearse", str(inv), "--from", "2025.2", "--to", "2026.1", "--placement", str(servers),
                 "--flavors", str(_flavors(tmp_path)), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["verdict"] == "go" and data["reasons"] == []
    assert data["path"] == [{"from": "2025.2", "to": "2026.1", "from_name": "flamingo", "to_name": "gazpacho",
                             "skip_level": False}]
    assert [(h["name"], h["drainable"], h["batch"]) for h in data["hosts"]] == [
        ("cmp1", True, 1), ("cmp2", True, 2), ("cmp3", True, 3)]


def test_cli_rehearse_the_blueprints_planned_placement(tmp_path, capsys):
    """No placement: size -> layout -> rehearse on the planned placement (grown counts) at full load."""
    root = Path(__file__).resolve().parent.parent
    bp, inv = tmp_path / "bp.yaml", tmp_path / "inv.yaml"
    assert main(["size", str(root / "examples" / "small.yaml"), "-o", str(bp)]) == 0
    assert main(["layout", str(bp), "--site", str(root / "examples" / "site.yaml"), "-o", str(inv)]) == 0
    capsys.readouterr()
    code = main(["upgrade", "rehearse", str(inv), "--from", "2025.2", "--to", "2026.1", "--blueprint", str(bp),
                 "--json"])
    data = json.loads(capsys.readouterr().out)
    blueprint = load_model(Blueprint, bp)
    cloud = load_cloud(load_model(Inventory, inv), blueprint=bp)
    grown = sum(blueprint.workload.grown_count(f) for f in blueprint.workload.flavors)
    assert sum(h.vm_count for h in cloud.hosts) == grown and "planned placement" in cloud.source
    # N+1 by host: every host's VMs fit on the others, as the exact placement proved
    assert code == 0 and data["verdict"] == "go" and all(h["drainable"] for h in data["hosts"]), data


def test_cli_no_go_exits_3_and_unsupported_hop_exits_1_with_chain(tmp_path, capsys):
    inv, _ = _inventory(tmp_path)
    servers = _servers(tmp_path, {"cmp1": ["r.48"], "cmp2": ["m.20", "m.20"], "cmp3": ["m.20"]})
    code = main(["upgrade", "rehearse", str(inv), "--from", "flamingo", "--to", "gazpacho", "--placement",
                 str(servers), "--flavors", str(_flavors(tmp_path)), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 3 and data["verdict"] == "no-go"
    assert data["reasons"] == ["host cmp1 cannot be drained: 1 x r.48 need 48 GiB (48 GiB each), "
                               "the largest free space elsewhere is 44 GiB"]
    code = main(["upgrade", "rehearse", str(inv), "--from", "2024.2", "--to", "2026.1"])
    assert code == 1
    assert "shortest supported chain: 2024.2 -> 2025.1 -> 2026.1" in capsys.readouterr().err
    code = main(["upgrade", "rehearse", str(inv), "--from", "2025.2", "--to", "2026.1", "--placement",
                 str(tmp_path / "missing.json"), "--flavors", str(_flavors(tmp_path))])
    assert code == 1 and "missing.json: file not found" in capsys.readouterr().err


def test_cli_releases_lists_the_catalog(tmp_path, capsys):
    assert main(["upgrade", "releases", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["2026.1"]["slurp"] and rows["2025.1"]["upgrades_to"] == ["2025.2", "2026.1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x}\n")
    assert main(["upgrade", "releases", "--catalog", str(bad)]) == 1
    assert "bad.yaml: [0]" in capsys.readouterr().err


def test_bench_upgrade_prints_its_figure():
    # A real process: the console script as users run it (small cloud, the figure itself is the benchmark's).
    proc = subprocess.run([sys.executable, "-m", "cloudplan.cli", "bench", "upgrade", "--hosts", "40", "--vms", "800"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "40 compute hosts in 2 racks, 800 VMs" in proc.stdout and "drain check + plan:" in proc.stdout


def test_help_texts_have_examples(capsys):
    for cmd in (["upgrade", "rehearse", "--help"], ["upgrade", "releases", "--help"], ["bench", "upgrade", "--help"]):
        assert main(cmd) == 0
        assert "Example: cloudplan" in capsys.readouterr().out


def test_counter_demand_is_what_the_hosts_hold(tmp_path):
    _, cloud = _cloud(tmp_path, {"cmp1": ["m.16", "m.20"], "cmp2": ["m.16"]})
    assert Counter(cloud.hosts[0].vms) == Counter({"m.16": 1, "m.20": 1})
    assert cloud.hosts[0].used_ram_mib == 36 * GIB and cloud.hosts[0].free == (32 - 8, 28 * GIB)


# --- the release catalog: upstream's file, statuses derived for a day ---------------------------

def test_packaged_catalog_is_upstreams_file_byte_for_byte():
    root = Path(__file__).resolve().parent.parent
    upstream = Path(__file__).resolve().parent / "data" / "series_status.upstream.yaml"
    assert (root / "cloudplan" / "data" / "series_status.yaml").read_bytes() == upstream.read_bytes()


def test_statuses_follow_next_phase_and_eol_dates():
    on = {r.key: (r.status, r.released) for r in load_catalog(today=TODAY)}
    # listed 'development' with next-phase maintained on 2026-09-30; 'future' -> development on 2026-10-01
    assert on["2026.2"] == ("maintained", True) and on["2027.1"] == ("development", False)
    assert on["2025.1"] == ("unmaintained", True)        # next-phase unmaintained 2026-10-02
    assert on["2024.1"] == ("unmaintained", True)        # next-phase without a date: not moved
    assert on["2024.2"] == ("end of life", True) and on["2026.1"] == ("maintained", True)
    before = {r.key: (r.status, r.released) for r in load_catalog(today=dt.date(2026, 9, 1))}
    assert before["2026.2"] == ("development", False) and before["2025.1"] == ("maintained", True)


def test_an_unreleased_target_is_a_no_go(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    r = rehearse(inv, "2026.1", "2026.2", cloud, catalog=load_catalog(today=dt.date(2026, 9, 1)),
                 with_config_diff=False)
    assert r.verdict == "no-go" and r.reasons == [
        "2026.2 (hibiscus) is not released on 2026-09-01 (status 'development', first release planned "
        "2026-09-30): there is nothing to upgrade to yet"]
    assert rehearse(inv, "2026.1", "2026.2", cloud, catalog=load_catalog(today=TODAY),
                    with_config_diff=False).verdict == "go"
    later = rehearse(inv, "2026.2", "2027.1", cloud, catalog=load_catalog(today=TODAY), with_config_diff=False)
    assert later.verdict == "no-go" and "2027.1 (indri) is not released on 2026-12-01" in later.reasons[0]


def test_the_two_hop_chain_to_2026_2_carries_each_hops_notes(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    r = rehearse(inv, "2025.2", "2026.2", cloud, catalog=load_catalog(today=TODAY))
    assert not r.supported and [(h["from"], h["to"]) for h in r.path] == [("2025.2", "2026.1"), ("2026.1", "2026.2")]
    assert any(w.startswith("2026.1 -> 2026.2: Magnum's Heat driver is removed") for w in r.warnings)
    assert any(w.startswith("2025.2 -> 2026.1: ") for w in r.warnings)


def test_cli_releases_on_a_given_day(capsys):
    assert main(["upgrade", "releases", "--json", "--today", "2026-09-01"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["2026.2"]["status"] == "development" and not rows["2026.2"]["released"]
    assert rows["2026.2"]["listed_status"] == "development"
    assert main(["upgrade", "releases", "--today", "2026-13-01"]) == 1
    assert "--today" in capsys.readouterr().err


def test_cinder_volume_move_and_storage_hosts_from_the_inventory_groups(tmp_path):
    root = Path(__file__).resolve().parent.parent
    data = yaml.safe_load((root / "examples" / "inventory.yaml").read_text())
    for node in data["nodes"]:
        if node["role"] == "compute":
            node["expect"] = {"cores": 8, "ram_gib": 64.5}
    inv = Inventory.model_validate(data)
    cloud = load_cloud(inv, flavors=_flavors(tmp_path), load_fraction=0.3)
    r = rehearse(inv, "2025.2", "2026.1", cloud, catalog=load_catalog(today=TODAY))
    moves = {m.group: (m.old_hosts, m.new_hosts) for m in r.config.service_moves}
    storage = sorted(n.name for n in inv.by_role(Role.storage))
    # what the generated inventories say, resolved through their :children groups
    assert moves["cinder-volume"][0] == storage and moves["cinder-volume"][1] != storage
    steps = [s.description for s in r.plan.children[2].children]
    cinder = next(i for i, s in enumerate(steps) if s.startswith("Upgrade Cinder"))
    assert steps[cinder + 1].startswith("Move Cinder's services to their new hosts")
    move = r.plan.children[2].children[cinder + 1]
    commands = move.commands()
    # The generated globals.yml names a cinder_cluster_name (several cinder-volume hosts, as Kolla's
    # precheck demands): the volumes belong to the cluster, so none changes host; without one,
    # each host@backend's volumes are given to a new host.
    assert r.config.cinder_cluster and f"belong to cluster {r.config.cinder_cluster}" in move.description
    assert not any("update_host" in c for c in commands)
    from cloudplan.upgrade.plan import PlanInputs, cinder_move
    plain = cinder_move(r.config.service_moves, PlanInputs(cinder_backends=["rbd-nvme"]), UpgradeDefaults())
    new = moves["cinder-volume"][1][0]
    assert f"docker exec cinder_api cinder-manage volume update_host --currenthost {storage[0]}@rbd-nvme " \
           f"--newhost {new}@rbd-nvme" in plain.commands()
    assert "ssh HOST sudo docker rm -f cinder_volume cinder_backup" in commands
    batched = {h for b in r.drain.batches for h in b.hosts}
    assert set(storage) <= batched
    # 2026.1 -> 2026.2 moves nothing: no Cinder step
    r2 = rehearse(inv, "2026.1", "2026.2", cloud, catalog=load_catalog(today=TODAY))
    assert r2.config.service_moves == [] and not any(
        s.description.startswith("Move Cinder") for s in r2.plan.children[2].children)



def test_a_newer_catalog_and_a_release_cloudplan_does_not_know(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    old = load_catalog(today=dt.date(2027, 5, 1))
    r = rehearse(inv, "2026.2", "2027.1", cloud, catalog=old, with_config_diff=False)
    assert r.verdict == "no-go" and "--catalog FILE" in r.reasons[0]      # the packaged file is a year old then
    newer = tmp_path / "series_status.yaml"
    newer.write_text("---\n- name: indri\n  release-id: 2027.1\n  status: maintained\n  slurp: yes\n"
                     "  initial-release: 2027-03-24\n- name: hibiscus\n  release-id: 2026.2\n  status: maintained\n"
                     "  initial-release: 2026-09-30\n")
    r = rehearse(inv, "2026.2", "2027.1", cloud, catalog=load_catalog(newer, today=dt.date(2027, 5, 1)),
                 with_config_diff=False)
    assert r.verdict == "go", r.reasons
    assert any("no Kolla-Ansible facts for 2027.1" in w for w in r.warnings)
    tools = r.plan.children[1]
    # nothing invented: the version and the ansible-core range are left to the release's docs
    assert [s.command for s in tools.children[:2]] == [None, None]
    assert not any("cloudplan manifests" in c for c in tools.commands())


def test_the_migration_network_note_says_what_the_manifests_configure(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    r = rehearse(inv, "2025.2", "2026.1", cloud, catalog=load_catalog(today=TODAY), with_config_diff=False)
    assert any(w.startswith("live-migration traffic shares the API network") and "1 at a time per host" in w
               for w in r.warnings)
    site = inv.model_copy(update={"networks": {"migration": Network(cidr="10.50.0.0/24")}})
    r = rehearse(site, "2025.2", "2026.1", cloud, catalog=load_catalog(today=TODAY), with_config_diff=False)
    assert any("the site has a migration network (10.50.0.0/24): set migration_interface" in w for w in r.warnings)


def test_the_steps_come_in_the_order_kolla_documents(tmp_path):
    inv, cloud = _cloud(tmp_path, {"cmp1": ["m.16"]})
    cat = load_catalog(today=TODAY)
    commands = build_plan(cat.hop(cat.get("2026.1"), cat.get("2026.2")), inv, drain_check(cloud)).commands()

    def first(prefix):
        return next(i for i, c in enumerate(commands) if c.startswith(prefix))
    order = [first(p) for p in (
        "openstack compute service list", "cp -a /etc/kolla", "kolla-ansible mariadb-backup",
        "pip install --upgrade 'kolla-ansible>=23", "pip install --upgrade 'ansible-core>=2.20",
        "kolla-ansible install-deps", "cloudplan manifests", "cp /etc/kolla/passwords.yml", "kolla-ansible pull",
        "kolla-ansible prechecks", "kolla-ansible upgrade --tags", "openstack compute service set --disable",
        "kolla-ansible prune-images")]
    assert order == sorted(order), order


def test_cli_rehearses_every_hop_of_the_chain_to_2026_2(tmp_path, capsys):
    inv, _ = _inventory(tmp_path)
    servers = _servers(tmp_path, {"cmp1": ["m.16"], "cmp2": ["m.16"], "cmp3": ["m.16"]})
    code = main(["upgrade", "rehearse", str(inv), "--from", "2025.2", "--to", "2026.2", "--chain", "--today",
                 "2026-12-01", "--placement", str(servers), "--flavors", str(_flavors(tmp_path)), "--json",
                 "--markdown", str(tmp_path / "report.md")])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert code == 0 and [(d["from"], d["to"], d["verdict"]) for d in data] == [
        ("2025.2", "2026.1", "go"), ("2026.1", "2026.2", "go")]
    assert any("Magnum's Heat driver is removed" in w for w in data[1]["warnings"])
    assert not any("Magnum's Heat driver is removed" in w for w in data[0]["warnings"])
    assert (tmp_path / "report-2025.2-2026.1.md").is_file() and (tmp_path / "report-2026.1-2026.2.md").is_file()
    # without --chain the same hop is refused
    assert main(["upgrade", "rehearse", str(inv), "--from", "2025.2", "--to", "2026.2"]) == 1
