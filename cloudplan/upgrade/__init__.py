"""N+1 upgrade rehearsal: release catalog, ordered plan, drain-capacity check, report.

Library entry points::

    from cloudplan.upgrade import load_catalog, load_cloud, rehearse, write_reports
    cloud = load_cloud(inventory, placement="servers.json", flavors="flavors.json")
    result = rehearse(inventory, "2025.2", "2026.1", cloud)
    write_reports(result, html="report.html", markdown="report.md")
"""

from cloudplan.upgrade.drain import drain_check
from cloudplan.upgrade.placement import load_cloud
from cloudplan.upgrade.models import Cloud, DrainReport, UpgradeDefaults
from cloudplan.upgrade.plan import PlanStep, build_plan
from cloudplan.upgrade.rehearsal import Rehearsal, rehearse, rehearse_chain
from cloudplan.upgrade.releases import Catalog, Release, load_catalog
from cloudplan.upgrade.report import render_html, render_markdown, write_reports

__all__ = ["Catalog", "Cloud", "DrainReport", "PlanStep", "Rehearsal", "Release", "UpgradeDefaults", "build_plan",
           "drain_check", "load_catalog", "load_cloud", "rehearse", "rehearse_chain", "render_html", "render_markdown",
           "write_reports"]
