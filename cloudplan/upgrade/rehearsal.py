"""One rehearsal of an upgrade hop: release rules, drain check, plan, config diff, verdict.

This is the library call behind ``cloudplan upgrade rehearse``; a notebook
calls :func:`rehearse` the same way and renders with
:mod:`cloudplan.upgrade.report`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pydantic import BaseModel, Field

from cloudplan.inventory import Inventory, Role
from cloudplan.spec import Protection
from cloudplan.upgrade.ceph import PoolProtection
from cloudplan.upgrade.configdiff import ConfigDiff, config_diff
from cloudplan.upgrade.kolla import KOLLA_RELEASES, UPGRADE_NOTES
from cloudplan.upgrade.models import Cloud, DrainReport, UpgradeDefaults
from cloudplan.upgrade.plan import DEFAULT_ENABLED_SERVICES, KOLLA_UPGRADE_ORDER, PlanInputs, PlanStep, build_plan
from cloudplan.upgrade.releases import Catalog, Hop, Release, format_chain, load_catalog
from cloudplan.upgrade.roll import plan_roll

log = logging.getLogger(__name__)

# Kolla-Ansible switches whose name differs from the plan's service name.
_ENABLE_ALIASES = {"haproxy": "loadbalancer", "keepalived": "loadbalancer", "ovn": "ovn"}


class Rehearsal(BaseModel):
    """Everything the report shows, and what ``--json`` prints."""

    cloud: str = Field(description="inventory / cloud name")
    from_release: str = Field(description="release running now")
    to_release: str = Field(description="release to upgrade to")
    supported: bool = Field(description="the hop is supported as asked")
    path: list[dict[str, Any]] = Field(description="the hops: the asked one, or the shortest supported chain")
    verdict: str = Field(description="go or no-go")
    reasons: list[str] = Field(description="every reason for a no-go")
    warnings: list[str] = Field(default_factory=list, description="findings that do not block the upgrade")
    placement_source: str = Field(default="", description="where the VM placement came from")
    compute_hosts: int = Field(default=0, description="compute hosts in the inventory")
    vms: int = Field(default=0, description="VMs in the placement")
    drain: DrainReport | None = Field(default=None, description="drain check results")
    plan: PlanStep | None = Field(default=None, description="the ordered plan")
    config: ConfigDiff | None = Field(default=None, description="Kolla-Ansible configuration diff")
    duration_seconds: float = Field(default=0.0, description="estimated wall time of the whole plan, seconds")
    ceph: list[PoolProtection] = Field(default_factory=list, description="protection of each Ceph tier")
    catalog_day: str = Field(default="", description="the day release statuses were derived for")
    defaults: UpgradeDefaults = Field(default_factory=UpgradeDefaults, description="the figures assumed")
    generated_at: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              description="when the rehearsal ran")

    def summary_json(self) -> dict[str, Any]:
        """The machine-readable answer: verdict, path, reasons, hosts, batches, duration."""
        hosts = [] if self.drain is None else [
            {"name": h.name, "rack": h.rack, "drainable": h.drainable, "batch": h.batch, "vms": h.vms,
             "reason": h.reason} for h in self.drain.hosts]
        return {
            "verdict": self.verdict,
            "from": self.from_release,
            "to": self.to_release,
            "supported": self.supported,
            "path": self.path,
            "reasons": self.reasons,
            "warnings": self.warnings,
            "hosts": hosts,
            "racks": [] if self.drain is None else [r.model_dump() for r in self.drain.racks],
            "batches": [] if self.drain is None else [
                {"index": b.index, "kind": b.kind, "hosts": b.hosts, "vms": b.vms, "seconds": b.seconds,
                 "ceph_domains_down": b.ceph_domains_down} for b in self.drain.batches],
            "ceph": [{**p.model_dump(), "max_domains_down": p.max_domains_down} for p in self.ceph],
            "duration_seconds": round(self.duration_seconds, 1),
            "placement_source": self.placement_source,
        }


def _services(config: ConfigDiff | None) -> set[str]:
    services = set(DEFAULT_ENABLED_SERVICES)
    if config is not None and config.enabled_services:
        for s in config.enabled_services:
            s = _ENABLE_ALIASES.get(s, s)
            if s in KOLLA_UPGRADE_ORDER:
                services.add(s)
    return services


def hop_warnings(hops: list[Hop], services: set[str]) -> list[str]:
    """The upgrade notes of each hop's target release that concern the enabled services."""
    out = []
    for hop in hops:
        for note in UPGRADE_NOTES.get(hop.to_release.key, []):
            if not note.services or set(note.services) & services:
                out.append(f"{hop.label}: {note.text} ({note.source})")
    return out


def release_reasons(src: Release, dst: Release, catalog: Catalog) -> tuple[list[str], list[str]]:
    """(no-go reasons, warnings) from the releases' status on the catalog's day."""
    reasons, warnings = [], []
    day = catalog.today.isoformat()
    if not dst.released:
        planned = f", first release planned {dst.initial_release}" if dst.initial_release else ""
        newer = (" (the catalog's own next phase is past: a newer series_status.yaml, --catalog FILE, may say "
                 "otherwise)" if dst.next_phase_date is not None and catalog.today >= dst.next_phase_date
                 and dst.initial_release is not None and catalog.today >= dst.initial_release else "")
        reasons.append(f"{dst.key} ({dst.name}) is not released on {day} (status '{dst.status}'{planned}): "
                       f"there is nothing to upgrade to yet{newer}")
    if src.status == "end of life":
        warnings.append(f"{src.key} is end of life on {day}: no more fixes for the release you run")
    elif src.status == "unmaintained":
        warnings.append(f"{src.key} is unmaintained on {day}: fixes only from the community, upgrade soon")
    return reasons, warnings


def migration_note(inventory: Inventory, defaults: UpgradeDefaults, globals_text: str = "") -> str:
    """Which network live migrations use: Kolla's migration_interface, api_interface unless set."""
    rate = (f"estimated at {defaults.migration_bandwidth_gbps:g} Gbit/s per stream, "
            f"{defaults.parallel_migrations_per_host} at a time per host")
    if "migration_interface:" in globals_text:
        return f"live migrations use the migration_interface the globals.yml sets; {rate}"
    site = inventory.networks.get("migration")
    hint = (f"; the site has a migration network ({site.cidr}): set migration_interface to use it"
            if site is not None else "")
    return ("live-migration traffic shares the API network (Kolla's migration_interface defaults to "
            f"api_interface, and the generated globals.yml does not set it): the batches' RAM copies compete "
            f"with API traffic{hint}; {rate}")


def _globals(config: ConfigDiff | None) -> str:
    return "" if config is None else config.new_globals


def _manifest_releases() -> set[str]:
    try:
        from cloudplan.manifests import supported_releases
    except ImportError:  # pragma: no cover - the manifests ship with cloudplan
        return set()
    return set(supported_releases())


def rehearse(inventory: Inventory, from_release: str, to_release: str, cloud: Cloud, *,
             catalog: Catalog | None = None, defaults: UpgradeDefaults | None = None,
             with_config_diff: bool = True, protection: Protection | None = None,
             inventory_file: str = "inventory.yaml", failure_domain: str | None = None) -> Rehearsal:
    """Rehearse the hop ``from_release`` -> ``to_release`` for ``inventory`` running ``cloud``.

    An unsupported hop is refused: the result is a no-go whose ``path`` is the
    shortest chain of supported hops (with each hop's notes) and nothing else
    is computed. ``protection`` is the Ceph pools' scheme (the blueprint's;
    3x replication when not given), ``failure_domain`` their CRUSH domain (the blueprint
    policy's; by the racks each tier spans when not given).
    """
    catalog = catalog or load_catalog()
    defaults = defaults or UpgradeDefaults()
    src, dst = catalog.get(from_release), catalog.get(to_release)
    chain = catalog.shortest_chain(src, dst)
    hops = catalog.hops(chain)
    name = inventory.name or "cloud"
    compute = len(inventory.by_role(Role.compute))
    rel_reasons, rel_warnings = release_reasons(src, dst, catalog)
    day = catalog.today.isoformat()
    if len(hops) != 1:
        return Rehearsal(cloud=name, from_release=src.key, to_release=dst.key, supported=False,
                         path=[h.as_dict() for h in hops], verdict="no-go",
                         reasons=[f"{src.key} -> {dst.key} is not a supported upgrade hop (supported: N -> N+1 and "
                                  f"SLURP -> SLURP); upgrade along the shortest supported chain: "
                                  f"{format_chain(chain)}"] + rel_reasons,
                         warnings=rel_warnings + hop_warnings(hops, set(DEFAULT_ENABLED_SERVICES)),
                         compute_hosts=compute, vms=cloud.vm_count, placement_source=cloud.source, defaults=defaults,
                         catalog_day=day)
    hop = hops[0]
    config = config_diff(inventory, src.key, dst.key) if with_config_diff else None
    services = _services(config)
    roll = plan_roll(inventory, cloud, protection, defaults, failure_domain)
    drain, pools = roll.drain, roll.pools
    inputs = PlanInputs(services=services, osd_hosts=roll.osd_hosts,
                        manifests_render=dst.key in _manifest_releases())
    if config is not None and config.available:
        inputs.moves, inputs.cinder_backends = config.service_moves, config.cinder_backends
        inputs.cinder_cluster = config.cinder_cluster
    plan = build_plan(hop, inventory, drain, defaults=defaults, inputs=inputs, inventory_file=inventory_file)
    reasons = rel_reasons + list(drain.reasons) + roll.blocked
    warnings = list(cloud.notes) + rel_warnings + hop_warnings(hops, services) + [migration_note(inventory, defaults, _globals(config))]
    warnings += [r.reason for r in drain.racks if r.reason]
    if dst.key not in KOLLA_RELEASES:
        newest = max(KOLLA_RELEASES.values(), key=lambda k: k.major)
        warnings.append(f"cloudplan has no Kolla-Ansible facts for {dst.key}: the service order and tags are "
                        f"those of {newest.major}.x ({newest.openstack}); check them against {dst.key}'s "
                        "upgrade notes")
    if config is not None and config.note:
        warnings.append(config.note)
    return Rehearsal(cloud=name, from_release=src.key, to_release=dst.key, supported=True, path=[hop.as_dict()],
                     verdict="go" if not reasons else "no-go", reasons=reasons, warnings=warnings,
                     placement_source=cloud.source, compute_hosts=compute, vms=cloud.vm_count, drain=drain,
                     plan=plan, config=config, duration_seconds=plan.total_seconds, defaults=defaults, ceph=pools,
                     catalog_day=day)


def rehearse_chain(inventory: Inventory, from_release: str, to_release: str, cloud: Cloud, *,
                   catalog: Catalog | None = None, **kwargs: Any) -> list[Rehearsal]:
    """One rehearsal per hop of the shortest supported chain (2025.2 -> 2026.1 -> 2026.2), each on the
    same cloud: the VMs stay where they are between hops, so every hop is checked against them."""
    catalog = catalog or load_catalog()
    chain = catalog.shortest_chain(catalog.get(from_release), catalog.get(to_release))
    return [rehearse(inventory, a.key, b.key, cloud, catalog=catalog, **kwargs) for a, b in zip(chain, chain[1:])]
