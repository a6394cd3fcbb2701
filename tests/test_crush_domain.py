"""The CRUSH failure domain of every tier follows the blueprint's sizing policy, in the
manifests' rules and in the replace, maintenance and upgrade Ceph checks; without a
blueprint it is chosen by the racks a tier spans.
"""

from __future__ import annotations

import pytest

from cloudplan.day2.replace import check_replacement
from cloudplan.errors import ManifestError
from cloudplan.manifests import render_all, render_bundle
from cloudplan.spec import Protection
from cloudplan.day2.maintenance import plan_maintenance
from cloudplan.upgrade.models import Cloud
from cloudplan.upgrade.roll import ceph_pools, plan_roll
from tests.test_manifests import site
from tests.test_replace import NEW_BMC, NEW_MAC, _inventory


def _rules(files: dict[str, str]) -> dict[str, str]:
    """tier -> domain of the `ceph osd crush rule create-replicated NAME default DOMAIN TIER` lines."""
    out = {}
    for ln in files["ceph/pools.sh"].splitlines():
        if ln.startswith("ceph osd crush rule create-replicated"):
            *_, domain, tier = ln.split()
            out[tier] = domain
    return out


def _bp(domain: str | None) -> dict:
    bp = {"name": "acme", "storage": [{"tier": "ssd"}, {"tier": "hdd"}]}
    return {**bp, "workload": {"policy": {"failure_domain": domain}}} if domain else bp


def test_manifests_rules_follow_the_blueprint_policy():
    """Three storage hosts on three racks: without a blueprint the rule spreads over racks; a blueprint
    sized for host losses gets host rules (the plan never promised a rack's loss), one sized for
    racks gets rack rules."""
    inv = site(drives={"ssd": 4, "hdd": 8})
    assert _rules(render_all(inv)) == {"ssd": "rack", "hdd": "rack"}
    assert _rules(render_all(inv, blueprint=_bp("host"))) == {"ssd": "host", "hdd": "host"}
    files, warnings = render_bundle(inv, blueprint=_bp("rack"))
    assert _rules(files) == {"ssd": "rack", "hdd": "rack"}
    assert "osd pool set volumes-ssd crush_rule replicated-ssd-rack" in files["ceph/pools.sh"]
    assert not any("failure domain is rack" in w for w in warnings)
    with pytest.raises(ManifestError, match="failure_domain 'row' is not host or rack"):
        render_all(inv, blueprint=_bp("row"))


def test_a_rack_policy_on_too_few_racks_is_warned_about():
    inv = site(controls=(("c1", "r1"), ("c2", "r1"), ("c3", "r2")), drives={"ssd": 4, "hdd": 8})
    for n in inv.nodes:
        n.rack = "r1" if n.rack == "r3" else n.rack
    files, warnings = render_bundle(inv, blueprint=_bp("rack"))
    assert _rules(files)["ssd"] == "rack"
    assert any("failure domain is rack but the ssd tier's hosts span 2 rack(s)" in w for w in warnings), warnings


def test_day2_checks_use_the_same_domain():
    """Four SSD hosts on three racks (r2 holds two): by racks spanned, a rack domain of three racks;
    with a host policy, four host domains, and taking one host down leaves three."""
    inv = _inventory(4, racks=3)
    (by_racks,) = ceph_pools(inv, Protection(replicas=3))
    assert (by_racks.failure_domain, by_racks.domains) == ("rack", 3)
    (host,) = ceph_pools(inv, Protection(replicas=3), "host")
    assert (host.failure_domain, host.domains) == ("host", 4)

    empty = Cloud(hosts=[], flavors={}, source="no VMs")
    roll = plan_roll(inv, empty, Protection(replicas=3), failure_domain="host")
    assert [(p.failure_domain, p.domains) for p in roll.pools] == [("host", 4)]
    # 3x on four host domains, min_size 2: one host down at a time.
    assert roll.guard.pools[0].max_domains_down == 1
    plan = plan_maintenance(inv, empty, protection=Protection(replicas=3), failure_domain="host")
    assert [(p.failure_domain, p.domains) for p in plan.ceph] == [("host", 4)]
    r = check_replacement(inv, "sto2", bmc_address=NEW_BMC, mac=NEW_MAC, protection=Protection(replicas=3))
    assert (r.osds[0].failure_domain, r.osds[0].domains_after) == ("rack", 2)   # no blueprint: by racks
