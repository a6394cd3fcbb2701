"""The rolling-maintenance report: Markdown (tables and the steps), self-contained HTML (with the
timeline), or JSON (the summary ``--json`` prints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from cloudplan.day2.maintenance import MaintenancePlan
from cloudplan.errors import CloudplanError
from cloudplan.io import write_text_atomic
from cloudplan.report import ReportFormat, _environment, format_for
from cloudplan.svg import gantt_chart
from cloudplan.upgrade.report import human_duration

TEMPLATES = {ReportFormat.html: "maintenance/report.html.j2", ReportFormat.md: "maintenance/report.md.j2"}


def timeline_tasks(m: MaintenancePlan) -> list[dict[str, Any]]:
    """The checks, each host taken alone and each batch, laid end to end."""
    tasks: list[dict[str, Any]] = []
    t = 0.0
    for phase in m.plan.children:
        steps = phase.children or [phase]
        for step in steps:
            dur = step.total_seconds
            if dur <= 0:
                continue
            group = ("storage batches" if "(storage)" in step.description else "compute batches"
                     if step.description.startswith("Batch ") else "hosts alone" if phase.children else "checks")
            tasks.append({"label": step.description.split(" [")[0].split(":")[0], "start": t, "end": t + dur,
                          "group": group})
            t += dur
    return tasks


def context(m: MaintenancePlan, *, with_charts: bool) -> dict[str, Any]:
    charts = {}
    if with_charts:
        charts["timeline"] = gantt_chart(timeline_tasks(m), x_label="elapsed time",
                                         title=f"Rolling {m.reason.value} maintenance "
                                               f"({human_duration(m.duration_seconds)} in total)")
    return {"m": m, "d": m.drain, "plan_rows": [{"depth": dp, "step": s} for dp, s in m.plan.walk()],
            "charts": charts, "stuck_hosts": [h for h in m.drain.hosts if not h.drainable]}


def render(m: MaintenancePlan, fmt: ReportFormat | str) -> str:
    fmt = ReportFormat(fmt)
    name = TEMPLATES[fmt]
    env = _environment(html=fmt == ReportFormat.html)
    env.filters["duration"] = human_duration
    try:
        return env.get_template(name).render(**context(m, with_charts=fmt == ReportFormat.html))
    except jinja2.TemplateError as err:
        raise CloudplanError(f"template {name}: {err}") from None


def to_json(m: MaintenancePlan) -> str:
    return json.dumps(m.summary_json(), indent=2) + "\n"


def write(m: MaintenancePlan, path: str | Path, fmt: ReportFormat | str | None = None) -> Path:
    """Write the report atomically: JSON for a *.json path, else HTML or Markdown as :func:`format_for` says."""
    p = Path(path)
    if fmt is None and p.suffix.lower() == ".json":
        return write_text_atomic(p, to_json(m))
    return write_text_atomic(p, render(m, format_for(p, fmt)))
