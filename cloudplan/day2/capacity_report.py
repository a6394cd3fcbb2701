"""The capacity report: Markdown (tables) or one self-contained HTML file (tables and plots), or JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2

from cloudplan.day2.capacity import DAYS_PER_YEAR, CapacityReport, ResourceForecast
from cloudplan.errors import CloudplanError
from cloudplan.io import write_text_atomic
from cloudplan.report import ReportFormat, _environment, format_for
from cloudplan.svg import line_chart

TEMPLATES = {ReportFormat.html: "capacity/report.html.j2", ReportFormat.md: "capacity/report.md.j2"}
# The plot projects the use this far past the newest snapshot, a point a quarter.
PROJECTION_QUARTERS = 8


def _chart(r: ResourceForecast, snapshots: list[str]) -> str:
    last = datetime.fromisoformat(snapshots[-1])
    labels = [s[:10] for s in snapshots]
    used = list(r.history)
    for q in range(1, PROJECTION_QUARTERS + 1):
        years = q / 4
        labels.append((last + timedelta(days=years * DAYS_PER_YEAR)).date().isoformat() + " (projected)")
        used.append(r.used * (1 + r.growth_per_year) ** years)
    n = len(labels)
    return line_chart(labels, {"use": used, "offered, largest domain lost": [r.offered_n1] * n,
                               "offered, all up": [r.offered] * n},
                      title=f"{r.resource}: use and what is offered", y_unit=r.unit,
                      colors=["#1f77b4", "#d62728", "#7f7f7f"])


def context(report: CapacityReport, *, with_charts: bool) -> dict[str, Any]:
    return {"r": report, "charts": {x.resource: _chart(x, report.snapshots) for x in report.resources}
            if with_charts else {}}


def render(report: CapacityReport, fmt: ReportFormat | str) -> str:
    fmt = ReportFormat(fmt)
    name = TEMPLATES[fmt]
    try:
        return _environment(html=fmt == ReportFormat.html).get_template(name).render(
            **context(report, with_charts=fmt == ReportFormat.html))
    except jinja2.TemplateError as err:
        raise CloudplanError(f"template {name}: {err}") from None


def to_json(report: CapacityReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2) + "\n"


def write(report: CapacityReport, path: str | Path, fmt: ReportFormat | str | None = None) -> Path:
    """Write the report atomically: JSON for a *.json path, else HTML or Markdown as :func:`format_for` says."""
    p = Path(path)
    if fmt is None and p.suffix.lower() == ".json":
        return write_text_atomic(p, to_json(report))
    return write_text_atomic(p, render(report, format_for(p, fmt)))
