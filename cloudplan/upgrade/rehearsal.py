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
from cloudplan.upgrade.configdiff import ConfigDiff, config_diff
from cloudplan.upgrade.drain import drain_check
from cloudplan.upgrade.models import Cloud, DrainReport, UpgradeDefaults
from cloudplan.upgrade.plan import DEFAULT_ENABLED_SERVICES, KOLLA_UPGRADE_ORDER, PlanStep, build_plan
from cloudplan.upgrade.releases import Catalog, format_chain, load_catalog

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
                {"index": b.index, "hosts": b.hosts, "vms": b.vms, "seconds": b.seconds} for b in self.drain.batches],
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


def rehearse(inventory: Inventory, from_release: str, to_release: str, cloud: Cloud, *,
             catalog: Catalog | None = None, defaults: UpgradeDefaults | None = None,
             with_config_diff: bool = True) -> Rehearsal:
    """Rehearse the hop ``from_release`` -> ``to_release`` for ``inventory`` running ``cloud``.

    An unsupported hop is refused: the result is a no-go whose ``path`` is the
    shortest chain of supported hops and nothing else is computed.
    """
    catalog = catalog or load_catalog()
    defaults = defaults or UpgradeDefaults()
    src, dst = catalog.get(from_release), catalog.get(to_release)
    chain = catalog.shortest_chain(src, dst)
    hops = catalog.hops(chain)
    name = inventory.name or "cloud"
    compute = len(inventory.by_role(Role.compute))
    if len(hops) != 1:
        return Rehearsal(cloud=name, from_release=src.key, to_release=dst.key, supported=False,
                         path=[h.as_dict() for h in hops], verdict="no-go",
                         reasons=[f"{src.key} -> {dst.key} is not a supported upgrade hop (supported: N -> N+1 and "
                                  f"SLURP -> SLURP); upgrade along the shortest supported chain: "
                                  f"{format_chain(chain)}"],
                         compute_hosts=compute, vms=cloud.vm_count, placement_source=cloud.source, defaults=defaults)
    hop = hops[0]
    drain = drain_check(cloud, defaults)
    config = config_diff(inventory, src.key, dst.key) if with_config_diff else None
    plan = build_plan(hop, inventory, drain, services=_services(config), defaults=defaults)
    reasons = list(drain.reasons)
    warnings = list(cloud.notes)
    warnings += [r.reason for r in drain.racks if r.reason]
    if config is not None and config.note:
        warnings.append(config.note)
    for status, label in ((dst.status, dst.key),):
        if status in ("future", "development"):
            warnings.append(f"{label} is in status '{status}' in the release catalog: not released yet")
    if src.status == "end of life":
        warnings.append(f"{src.key} is end of life: no more fixes for the release you run")
    return Rehearsal(cloud=name, from_release=src.key, to_release=dst.key, supported=True, path=[hop.as_dict()],
                     verdict="go" if not reasons else "no-go", reasons=reasons, warnings=warnings,
                     placement_source=cloud.source, compute_hosts=compute, vms=cloud.vm_count, drain=drain,
                     plan=plan, config=config, duration_seconds=plan.total_seconds, defaults=defaults)
