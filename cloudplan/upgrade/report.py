"""The rehearsal report: one self-contained HTML file (tables and inline SVG) and Markdown.

Templates live in ``templates/upgrade/`` (``report.html.j2``,
``report.md.j2``) and render with StrictUndefined, so a missing value is an
error rather than a blank in front of the people deciding on the upgrade.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jinja2

from cloudplan import svg
from cloudplan.errors import UpgradeError
from cloudplan.io import write_text_atomic
from cloudplan.upgrade.rehearsal import Rehearsal

log = logging.getLogger(__name__)

# Above this many compute hosts the capacity chart shows racks, not hosts.
MAX_HOST_BARS = 120
OK_COLOR, BAD_COLOR, FREE_COLOR = "#0072B2", "#D55E00", "#BBBBBB"


def _templates_dir() -> Path:
    try:
        from cloudplan.templating import templates_dir
        return templates_dir()
    except ImportError:  # pragma: no cover - templating ships with cloudplan
        import cloudplan
        return Path(cloudplan.__file__).resolve().parent.parent / "templates"


def _environment(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_templates_dir())),
                             undefined=jinja2.StrictUndefined, autoescape=html,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["duration"] = human_duration
    env.filters["md"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def human_duration(seconds: float) -> str:
    """``5400`` -> ``1 h 30 min``; ``95`` -> ``1 min 35 s``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {sec:02d} s" if sec else f"{m} min"


def capacity_chart(r: Rehearsal) -> str:
    """Used and free RAM per compute host (or per rack on big clouds), undrainable ones marked."""
    hosts = r.drain.hosts
    if len(hosts) <= MAX_HOST_BARS:
        labels = [h.name for h in hosts]
        used = [h.used_ram_gib for h in hosts]
        free = [h.free_ram_gib for h in hosts]
        stuck = [h.used_ram_gib if not h.drainable else 0.0 for h in hosts]
        ok = [u - s for u, s in zip(used, stuck)]
        title = "RAM per compute host before the roll: used (drainable / not drainable) and free"
    else:
        racks: dict[str, list] = {}
        for h in hosts:
            racks.setdefault(h.rack, []).append(h)
        labels = sorted(racks)
        ok = [sum(h.used_ram_gib for h in racks[k] if h.drainable) for k in labels]
        stuck = [sum(h.used_ram_gib for h in racks[k] if not h.drainable) for k in labels]
        free = [sum(h.free_ram_gib for h in racks[k]) for k in labels]
        title = "RAM per rack before the roll: used (drainable / not drainable) and free"
    return svg.stacked_bar_chart(labels, {"used, drainable": ok, "used, not drainable": stuck, "free": free},
                                 title=title, x_label="compute host" if len(hosts) <= MAX_HOST_BARS else "rack",
                                 y_label="RAM", y_unit="GiB", colors=[OK_COLOR, BAD_COLOR, FREE_COLOR])


def headroom_chart(r: Rehearsal) -> str:
    """Free capacity left on the other hosts while each batch is drained, in % of the cloud's capacity."""
    d = r.drain
    total_ram = sum(h.used_ram_gib + h.free_ram_gib for h in d.hosts) or 1.0
    total_cpu = sum(h.used_vcpus + h.free_vcpus for h in d.hosts) or 1
    free_ram_now = sum(h.free_ram_gib for h in d.hosts)
    free_cpu_now = sum(h.free_vcpus for h in d.hosts)
    xs: list[str] = ["before"] + [str(b.index) for b in d.batches]
    ram = [100.0 * free_ram_now / total_ram] + [100.0 * b.free_ram_gib_after / total_ram for b in d.batches]
    cpu = [100.0 * free_cpu_now / total_cpu] + [100.0 * b.free_vcpus_after / total_cpu for b in d.batches]
    return svg.line_chart(xs, {"free RAM": [round(v, 1) for v in ram], "free vCPUs": [round(v, 1) for v in cpu]},
                          title="Free capacity on the other hosts while each batch is drained",
                          x_label="batch", y_label="free capacity", y_unit="% of cloud")


def timeline_tasks(r: Rehearsal) -> list[dict[str, Any]]:
    """Plan phases laid end to end: each pre-check, service and batch is one row."""
    tasks: list[dict[str, Any]] = []
    t = 0.0
    for phase in r.plan.children:
        group = next((g for prefix, g in _PHASE_GROUPS if phase.description.startswith(prefix)), phase.description)
        for step in phase.children:
            dur = step.total_seconds
            if dur <= 0:
                continue
            label = step.description.split(":")[0] if group == "host batches" else step.description
            tasks.append({"label": label, "start": t, "end": t + dur, "group": group})
            t += dur
    return tasks


_PHASE_GROUPS = [("Checks and backups", "pre-checks"), ("New tools", "new tools"), ("Control plane", "control plane"),
                 ("Hosts in batches", "host batches"), ("Post", "post-upgrade")]


def timeline_chart(r: Rehearsal) -> str:
    tasks = timeline_tasks(r)
    return svg.gantt_chart(tasks, title=f"Timeline of the upgrade ({human_duration(r.duration_seconds)} in total)",
                           x_label="elapsed time")


def context(r: Rehearsal, charts: bool = True) -> dict[str, Any]:
    plan_rows = [] if r.plan is None else [{"depth": d, "step": s} for d, s in r.plan.walk()]
    ctx: dict[str, Any] = {
        "r": r, "d": r.drain, "plan_rows": plan_rows, "plan_text": r.plan.render_text() if r.plan else "",
        "charts": {}, "defaults": r.defaults.model_dump(), "json_summary": json.dumps(r.summary_json(), indent=2),
        "stuck_hosts": [] if r.drain is None else [h for h in r.drain.hosts if not h.drainable],
    }
    if charts and r.drain is not None and r.plan is not None:
        ctx["charts"] = {"capacity": capacity_chart(r), "headroom": headroom_chart(r), "timeline": timeline_chart(r)}
    return ctx


def render_html(r: Rehearsal) -> str:
    try:
        return _environment(html=True).get_template("upgrade/report.html.j2").render(**context(r))
    except jinja2.TemplateError as err:
        raise UpgradeError(f"template upgrade/report.html.j2: {err}") from None


def render_markdown(r: Rehearsal) -> str:
    try:
        return _environment(html=False).get_template("upgrade/report.md.j2").render(**context(r, charts=False))
    except jinja2.TemplateError as err:
        raise UpgradeError(f"template upgrade/report.md.j2: {err}") from None


def write_reports(r: Rehearsal, html: str | Path | None = None, markdown: str | Path | None = None) -> list[Path]:
    out = []
    if html is not None:
        out.append(write_text_atomic(Path(html), render_html(r)))
    if markdown is not None:
        out.append(write_text_atomic(Path(markdown), render_markdown(r)))
    return out
