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


def min_size(protection: Protection) -> int:
    return protection.replicas - protection.replicas // 2 if protection.replicas else protection.ec_k + 1


def test_medium_blueprint_batches_keep_every_pool_at_or_above_min_size(medium):
    bp_path, _, blueprint, inventory = medium
    protection = blueprint.workload.policy.protection
    cloud = load_cloud(inventory, blueprint=bp_path)
    r = rehearse(inventory, "2026.1", "2026.2", cloud, catalog=load_catalog(today=TODAY), protection=protection)
    assert r.verdict == "go", r.reasons
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


def test_without_the_ceph_guard_the_same_cloud_would_lose_min_size(medium):
    # The check above can fail: batching by VM room alone puts OSD hosts of one tier together.
    bp_path, _, blueprint, inventory = medium
    protection = blueprint.workload.policy.protection
    report = drain_check(load_cloud(inventory, blueprint=bp_path))
    worst = min(min(surviving_copies(inventory, protection, b.hosts).values()) for b in report.batches)
    assert worst < min_size(protection)


def test_a_tier_that_cannot_lose_a_domain_is_a_no_go_with_the_reason(medium):
    bp_path, _, _, inventory = medium
    cloud = load_cloud(inventory, blueprint=bp_path)
    r = rehearse(inventory, "2026.1", "2026.2", cloud, catalog=load_catalog(today=TODAY),
                 protection=Protection(ec_k=2, ec_m=1), with_config_diff=False)
    assert r.verdict == "no-go"
    assert any(reason.startswith("Ceph tier hdd (EC 2+1, min_size 3)") and "stops I/O" in reason
               for reason in r.reasons), r.reasons
    # No batch takes an OSD host down; those hosts are listed as left out.
    osd = {n.name for n in inventory.nodes if n.drives}
    assert not any(set(b.hosts) & osd for b in r.drain.batches)
    assert osd <= set(r.drain.unbatched)


def test_cli_medium_rehearsal_reports_ceph_and_storage_batches(medium, capsys):
    bp, inv, _, inventory = medium
    code = main(["upgrade", "rehearse", str(inv), "--from", "2026.1", "--to", "2026.2", "--blueprint", str(bp),
                 "--today", "2026-12-01", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["verdict"] == "go"
    assert {p["tier"]: p["max_domains_down"] for p in data["ceph"]} == {"hdd": 1, "nvme": 1, "ssd": 1}
    storage = {n.name for n in inventory.nodes if n.role.value == "storage"}
    assert storage == {h for b in data["batches"] if b["kind"] == "storage" for h in b["hosts"]}
    assert any("Magnum's Heat driver is removed in 2026.2" in w for w in data["warnings"])
    assert any("shares the API network" in w for w in data["warnings"])
