"""Ceph-safe batches on the medium example's blueprint, checked by counting surviving copies.

The check below does not use the rehearsal's rule ("at most size - min_size
failure domains down per tier"): it enumerates every set of ``size`` distinct
failure domains a placement group of the tier can sit on, and counts the
copies each batch leaves it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import pytest

from cloudplan.blueprint import Blueprint
from cloudplan.cli import main
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.spec import Protection
from cloudplan.upgrade import drain_check, load_cloud, rehearse
from cloudplan.upgrade.models import UpgradeDefaults
from cloudplan.upgrade.releases import load_catalog

ROOT = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 12, 1)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """`cloudplan size examples/medium.yaml` then `cloudplan layout`, as a user runs them."""
    tmp = tmp_path_factory.mktemp("medium")
    bp, inv = tmp / "bp.yaml", tmp / "inv.yaml"
    assert main(["size", str(ROOT / "examples" / "medium.yaml"), "-o", str(bp)]) == 0
    assert main(["layout", str(bp), "--site", str(ROOT / "examples" / "site.yaml"), "-o", str(inv)]) == 0
    return bp, inv, load_model(Blueprint, bp), load_model(Inventory, inv)


def surviving_copies(inventory: Inventory, protection: Protection, batch: list[str]) -> dict[str, int]:
    """The fewest copies (chunks) any possible placement group of each tier keeps with ``batch`` down."""
    size = protection.replicas if protection.replicas else protection.ec_k + protection.ec_m
    worst = {}
    tiers = {t for n in inventory.nodes for t, c in n.drives.items() if c}
    for tier in tiers:
        hosts = [n for n in inventory.nodes if n.drives.get(tier, 0)]
        by_rack = len({n.rack for n in hosts}) >= 3       # the manifests' CRUSH rule: rack from 3 racks on
        domain = {n.name: (n.rack if by_rack else n.name) for n in hosts}
        domains = sorted(set(domain.values()))
        down = {domain[h] for h in batch if h in domain}
        copies = min(size, len(domains))
        worst[tier.value] = min(copies - len(set(pg) & down) for pg in itertools.combinations(domains, copies))
    return worst


# The medium blueprint has 17 compute and hyperconverged hosts: at the default 10 % a batch is one
# host and no batch could ever take two OSD hosts down. A third lets batches hold several.
WIDE = UpgradeDefaults(max_batch_fraction=0.3)
MEDIUM = ROOT / "examples" / "medium.yaml"


def _today_cloud(inventory: Inventory):
    """The workload's VM counts today, spread over the hosts as Nova's RAM weigher would."""
    return load_cloud(inventory, flavors=MEDIUM, defaults=WIDE)


def min_size(protection: Protection) -> int:
    return protection.replicas - protection.replicas // 2 if protection.replicas else protection.ec_k + 1


def test_medium_blueprint_batches_keep_every_pool_at_or_above_min_size(medium):
    bp_path, _, blueprint, inventory = medium
    protection = blueprint.workload.policy.protection
    r = rehearse(inventory, "2026.1", "2026.2", _today_cloud(inventory), catalog=load_catalog(today=TODAY),
                 protection=protection, defaults=WIDE)
    assert r.verdict == "go", r.reasons
    assert r.drain.largest_batch > 1  # so the Ceph rule below has something to keep apart
    batches = r.drain.batches
    for b in batches:
        for tier, copies in surviving_copies(inventory, protection, b.hosts).items():
            assert copies >= min_size(protection), (b.index, b.hosts, tier, copies)
    # Every compute and storage host is in exactly one batch, every other host has a step of its own.
    batched = [h for b in batches for h in b.hosts]
    assert sorted(batched) == sorted(n.name for n in inventory.nodes if n.role.value in ("compute", "storage"))
    alone = [s.description.split()[2] for s in r.plan.children[3].children if not s.description.startswith("Batch ")]
    assert sorted(alone) == sorted(n.name for n in inventory.nodes if n.role.value in ("control", "network"))
    # Batches with OSD hosts set noout, and the next batch waits for HEALTH_OK.
    host_steps = [s for s in r.plan.children[3].children if s.description.startswith("Batch ")]
    osd = {n.name for n in inventory.nodes if n.drives}
    for b, step in zip(batches, host_steps):
        commands = step.commands()
        if set(b.hosts) & osd:
            assert commands.index("cephadm shell -- ceph osd set noout") < commands.index("ssh HOST sudo reboot")
            assert commands.index("cephadm shell -- ceph osd unset noout") < next(
                i for i, c in enumerate(commands) if "HEALTH_OK" in c)
        else:
            assert not any("noout" in c for c in commands)


def test_the_copy_counter_catches_a_batch_that_would_stop_io(medium):
    # The check above can fail: two OSD hosts of one tier in two racks (two CRUSH domains) down together
    # leave some placement group with one copy of three, below min_size 2.
    _, _, blueprint, inventory = medium
    protection = blueprint.workload.policy.protection
    tier = next(t for n in inventory.nodes for t, c in n.drives.items() if c)
    hosts = [n for n in inventory.nodes if n.drives.get(tier, 0)]
    pair = [hosts[0].name, next(n.name for n in hosts if n.rack != hosts[0].rack)]
    assert surviving_copies(inventory, protection, pair)[tier.value] < min_size(protection)


def test_the_blueprint_at_its_end_of_horizon_load_drains_host_by_host(medium):
    """Sizing's N+1 re-places every VM with a host lost; a live-migration drain may only use the room
    the other hosts have left. The medium plan (its hosts' NICs sized for their recovery traffic, so
    more and smaller storage hosts than a plan without that rule) has that room at its full planned
    load: the rehearsal proves every batch drainable with the packing engine and says go. Sizing
    does not plan for draining as such: a plan without this room is a no-go with the reason
    (test_upgrade's undrainable cases)."""
    bp_path, _, blueprint, inventory = medium
    r = rehearse(inventory, "2026.1", "2026.2", load_cloud(inventory, blueprint=bp_path),
                 catalog=load_catalog(today=TODAY), protection=blueprint.workload.policy.protection,
                 with_config_diff=False)
    assert r.verdict == "go", r.reasons
    assert not any("cannot be drained" in reason for reason in r.reasons), r.reasons


def test_a_tier_that_cannot_lose_a_domain_is_a_no_go_with_the_reason(medium):
    _, _, _, inventory = medium
    r = rehearse(inventory, "2026.1", "2026.2", _today_cloud(inventory), catalog=load_catalog(today=TODAY),
                 protection=Protection(ec_k=2, ec_m=1), with_config_diff=False, defaults=WIDE)
    assert r.verdict == "no-go"
    assert any(reason.startswith("Ceph tier hdd (EC 2+1, min_size 3)") and "stops I/O" in reason
               for reason in r.reasons), r.reasons
    # No batch takes an OSD host down; those hosts are listed as left out.
    osd = {n.name for n in inventory.nodes if n.drives}
    assert not any(set(b.hosts) & osd for b in r.drain.batches)
    assert osd <= set(r.drain.unbatched)


def test_cli_medium_rehearsal_reports_ceph_and_storage_batches(medium, capsys):
    bp, inv, _, inventory = medium
    code = main(["upgrade", "rehearse", str(inv), "--from", "2026.1", "--to", "2026.2", "--flavors", str(MEDIUM),
                 "--max-batch-fraction", "0.3", "--today", "2026-12-01", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["verdict"] == "go"
    assert {p["tier"]: p["max_domains_down"] for p in data["ceph"]} == {"hdd": 1, "nvme": 1, "ssd": 1}
    storage = {n.name for n in inventory.nodes if n.role.value == "storage"}
    assert storage == {h for b in data["batches"] if b["kind"] == "storage" for h in b["hosts"]}
    assert any("Magnum's Heat driver is removed in 2026.2" in w for w in data["warnings"])
    assert any("shares the API network" in w for w in data["warnings"])


def _hci_cloud(racks: list[str], per_rack: int):
    """Hyperconverged hosts (2 NVMe OSDs each), lightly loaded, and the inventory that holds them."""
    from cloudplan.upgrade.models import Cloud, FlavorSize, Host
    nodes = [{"name": f"ctl{i}", "role": "control", "rack": racks[0],
              "bmc": {"address": f"10.0.0.{i}", "username": "a", "password_env": "PW"}} for i in (1, 2, 3)]
    hosts, m = [], FlavorSize("m", 2, 4096)
    for r in racks:
        for i in range(per_rack):
            name = f"{r}-hci-{i}"
            nodes.append({"name": name, "role": "compute", "rack": r, "drives": {"nvme": 2},
                          "bmc": {"address": f"10.1.{len(nodes)}.1", "username": "a", "password_env": "PW"}})
            h = Host(name=name, rack=r, vcpu_capacity=64, ram_mib_capacity=262144)
            h.add(m, 2)
            hosts.append(h)
    return Inventory.model_validate({"name": "hci", "nodes": nodes}), Cloud(hosts=hosts, flavors={"m": m}, source="t")


@pytest.mark.parametrize("racks,per_rack,protection,most", [
    (["ra", "rb", "rc"], 3, Protection(replicas=3), 3),      # rack domain: a whole rack may go at once
    (["ra", "rb"], 6, Protection(replicas=3), 1),            # host domain: one host at a time
    (["ra", "rb"], 6, Protection(ec_k=8, ec_m=3), 2),        # EC 8+3, min_size 9: two hosts
    (["ra", "rb"], 6, Protection(ec_k=4, ec_m=2), 1),        # EC 4+2, min_size 5: one host
])
def test_batches_take_what_each_protection_allows_and_no_more(racks, per_rack, protection, most):
    from cloudplan.upgrade.ceph import CephGuard, pool_protections
    from cloudplan.upgrade.models import UpgradeDefaults
    inventory, cloud = _hci_cloud(racks, per_rack)
    guard = CephGuard.build(inventory, pool_protections(inventory, protection, rack_domain_min=3))
    report = drain_check(cloud, UpgradeDefaults(max_batch_fraction=0.5), guard=guard)
    assert sorted(h for b in report.batches for h in b.hosts) == sorted(h.name for h in cloud.hosts)
    for b in report.batches:
        assert min(surviving_copies(inventory, protection, b.hosts).values()) >= min_size(protection), b.hosts
    assert max(len(b.hosts) for b in report.batches) == most
