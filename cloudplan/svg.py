"""Small, dependency-free inline-SVG charts for self-contained HTML reports.

Each function takes plain lists/dicts and returns one ``<svg>`` element as a
string: a chart title, axis labels, tick labels, and a ``<title>`` on every
bar, point and task so a reader hovering over it sees the exact value. The
markup has no script and no external reference, so a report stays one file
that renders anywhere (and in headless Chromium for the tests).

    bar_chart(["a", "b"], [3, 5], title="Free RAM", y_label="GiB")
    stacked_bar_chart(["h1", "h2"], {"used": [4, 2], "free": [1, 3]}, title="RAM")
    line_chart([1, 2, 3], {"free GiB": [10, 8, 9]}, title="Headroom", x_label="batch")
    gantt_chart([{"label": "backup", "start": 0, "end": 1800, "group": "pre"}], title="Timeline")
    hbar_chart(["servers", "energy"], [9e5, 2e5], title="TCO by category", value_labels=["$900k", "$200k"])
    target_chart([{"label": "vCPU", "target": 90, "value": 120, "degraded": 100}], title="Capacity")
    rack_elevation("r1", 42, [{"name": "r1-cmp-01", "role": "compute", "u": 1, "height_u": 2}])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

# Colour-blind-safe palette (Okabe-Ito), in the order series get them.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
FONT = "font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"
MARGIN = {"left": 64, "right": 16, "top": 50, "bottom": 56}


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value - round(value)) < 1e-9:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^n steps)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while len(ticks) < 50:
        ticks.append(round(v, 10))
        if v >= hi - 1e-9 * step:
            break
        v += step
    return ticks


class _Frame:
    """Plot area geometry and the shared chrome (title, axes, grid, labels)."""

    def __init__(self, width: int, height: int, y_max: float, y_min: float = 0.0):
        self.w, self.h = width, height
        self.x0, self.y0 = MARGIN["left"], MARGIN["top"]
        self.pw = width - MARGIN["left"] - MARGIN["right"]
        self.ph = height - MARGIN["top"] - MARGIN["bottom"]
        self.ticks = nice_ticks(min(0.0, y_min), max(y_max, 1e-9))
        self.lo, self.hi = self.ticks[0], self.ticks[-1]

    def y(self, value: float) -> float:
        return self.y0 + self.ph - (value - self.lo) / (self.hi - self.lo) * self.ph

    def open(self, title: str, css_class: str) -> list[str]:
        return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {_e(css_class)}" role="img" '
                f'aria-label="{_e(title)}" width="{self.w}" height="{self.h}" viewBox="0 0 {self.w} {self.h}" '
                f'style="{FONT};font-size:11px;background:#fff">',
                f"<title>{_e(title)}</title>",
                f'<text x="{self.w / 2:.1f}" y="20" text-anchor="middle" style="font-size:14px;font-weight:600">'
                f"{_e(title)}</text>"]

    def axes(self, x_label: str, y_label: str, y_unit: str = "") -> list[str]:
        out = []
        for t in self.ticks:
            yy = self.y(t)
            out.append(f'<line x1="{self.x0}" x2="{self.x0 + self.pw}" y1="{yy:.1f}" y2="{yy:.1f}" '
                       f'stroke="#e5e5e5"/>')
            out.append(f'<text x="{self.x0 - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#444">'
                       f"{_e(_fmt(t))}</text>")
        out.append(f'<line x1="{self.x0}" x2="{self.x0}" y1="{self.y0}" y2="{self.y0 + self.ph}" stroke="#333"/>')
        out.append(f'<line x1="{self.x0}" x2="{self.x0 + self.pw}" y1="{self.y(max(self.lo, 0)):.1f}" '
                   f'y2="{self.y(max(self.lo, 0)):.1f}" stroke="#333"/>')
        out.append(f'<text class="x-label" x="{self.x0 + self.pw / 2:.1f}" y="{self.h - 8}" text-anchor="middle">'
                   f"{_e(x_label)}</text>")
        label = f"{y_label} ({y_unit})" if y_unit else y_label
        cy = self.y0 + self.ph / 2
        out.append(f'<text class="y-label" x="14" y="{cy:.1f}" text-anchor="middle" '
                   f'transform="rotate(-90 14 {cy:.1f})">{_e(label)}</text>')
        return out

    def x_labels(self, labels: Sequence[str], centers: Sequence[float]) -> list[str]:
        # Thin out labels so they never overlap: about one per 40 px.
        every = max(1, math.ceil(len(labels) * 40 / max(self.pw, 1)))
        out = []
        base = self.y0 + self.ph + 14
        rotate = len(labels) > 8
        for i, (lab, cx) in enumerate(zip(labels, centers)):
            if i % every:
                continue
            attrs = f'transform="rotate(-30 {cx:.1f} {base:.1f})" text-anchor="end"' if rotate else \
                'text-anchor="middle"'
            out.append(f'<text x="{cx:.1f}" y="{base:.1f}" {attrs} fill="#444">{_e(lab)}</text>')
        return out


def _text_width(text: str, size: float = 11) -> float:
    """Rough rendered width of ``text`` (sans-serif averages ~0.58 em per character)."""
    return len(text) * size * 0.58


def _legend(names: Sequence[str], colors: Sequence[str], x: float, y: float) -> list[str]:
    # Each entry takes the room its name needs, so six categories fit where six fixed slots would not.
    out = []
    xx = x
    for name, color in zip(names, colors):
        out.append(f'<rect x="{xx:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{xx + 14:.1f}" y="{y:.1f}">{_e(name)}</text>')
        xx += max(60.0, 14 + _text_width(str(name)) + 18)
    return out


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, x_label: str = "",
              y_label: str = "", y_unit: str = "", colors: Sequence[str] | None = None,
              width: int = 760, height: int = 320) -> str:
    """One bar per label; ``colors`` (one per bar) can mark a category, e.g. red for a problem."""
    frame = _Frame(width, height, max(values, default=0.0), min(values, default=0.0))
    n = max(1, len(values))
    slot = frame.pw / n
    bw = max(1.0, slot * 0.8)
    out = frame.open(title, "bar-chart") + frame.axes(x_label, y_label, y_unit)
    centers = []
    for i, (lab, v) in enumerate(zip(labels, values)):
        color = colors[i] if colors else PALETTE[0]
        x = frame.x0 + i * slot + (slot - bw) / 2
        top, base = frame.y(max(v, 0)), frame.y(min(v, 0))
        centers.append(x + bw / 2)
        out.append(f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{bw:.1f}" height="{max(base - top, 0.5):.1f}" '
                   f'fill="{color}"><title>{_e(lab)}: {_e(_fmt(v))}{(" " + _e(y_unit)) if y_unit else ""}</title></rect>')
    out += frame.x_labels(labels, centers)
    out.append("</svg>")
    return "\n".join(out)


def stacked_bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str, x_label: str = "",
                      y_label: str = "", y_unit: str = "", colors: Sequence[str] | None = None,
                      width: int = 760, height: int = 320) -> str:
    """Bars made of one segment per series (e.g. used and free RAM per host), with a legend."""
    names = list(series)
    colors = list(colors or PALETTE)
    totals = [sum(series[s][i] for s in names) for i in range(len(labels))]
    frame = _Frame(width, height, max(totals, default=0.0))
    slot = frame.pw / max(1, len(labels))
    bw = max(1.0, slot * 0.8)
    out = frame.open(title, "stacked-bar-chart") + frame.axes(x_label, y_label, y_unit)
    out += _legend(names, colors, frame.x0 + 8, MARGIN["top"] - 6)
    centers = []
    for i, lab in enumerate(labels):
        x = frame.x0 + i * slot + (slot - bw) / 2
        centers.append(x + bw / 2)
        acc = 0.0
        for k, name in enumerate(names):
            v = max(0.0, series[name][i])
            top, base = frame.y(acc + v), frame.y(acc)
            out.append(f'<rect class="bar segment" x="{x:.1f}" y="{top:.1f}" width="{bw:.1f}" '
                       f'height="{max(base - top, 0):.1f}" fill="{colors[k % len(colors)]}"><title>{_e(lab)} '
                       f'{_e(name)}: {_e(_fmt(v))}{(" " + _e(y_unit)) if y_unit else ""}</title></rect>')
            acc += v
    out += frame.x_labels(labels, centers)
    out.append("</svg>")
    return "\n".join(out)


def line_chart(x: Sequence[float | str], series: dict[str, Sequence[float]], *, title: str, x_label: str = "",
               y_label: str = "", y_unit: str = "", colors: Sequence[str] | None = None,
               width: int = 760, height: int = 320) -> str:
    """One polyline per series over the same x positions (labels or numbers, evenly spaced)."""
    names = list(series)
    colors = list(colors or PALETTE)
    all_values = [v for s in series.values() for v in s] or [0.0]
    frame = _Frame(width, height, max(all_values), min(all_values))
    n = len(x)
    step = frame.pw / max(1, n - 1) if n > 1 else 0.0
    xs = [frame.x0 + (i * step if n > 1 else frame.pw / 2) for i in range(n)]
    out = frame.open(title, "line-chart") + frame.axes(x_label, y_label, y_unit)
    out += _legend(names, colors, frame.x0 + 8, MARGIN["top"] - 6)
    for k, name in enumerate(names):
        color = colors[k % len(colors)]
        pts = " ".join(f"{xs[i]:.1f},{frame.y(v):.1f}" for i, v in enumerate(series[name]))
        out.append(f'<polyline class="line" fill="none" stroke="{color}" stroke-width="2" points="{pts}">'
                   f"<title>{_e(name)}</title></polyline>")
        for i, v in enumerate(series[name]):
            out.append(f'<circle class="point" cx="{xs[i]:.1f}" cy="{frame.y(v):.1f}" r="3" fill="{color}">'
                       f'<title>{_e(name)} at {_e(x[i])}: {_e(_fmt(v))}{(" " + _e(y_unit)) if y_unit else ""}'
                       f"</title></circle>")
    out += frame.x_labels([str(v) for v in x], xs)
    out.append("</svg>")
    return "\n".join(out)


def gantt_chart(tasks: Sequence[dict], *, title: str, x_label: str = "time", unit_seconds: float = 3600.0,
                unit: str = "h", colors: dict[str, str] | None = None, width: int = 760,
                row_height: int = 18) -> str:
    """A timeline: one row per task (``label``, ``start``, ``end`` in seconds, optional ``group``).

    Time is shown in ``unit`` (hours by default); groups get a colour each and a legend.
    """
    groups: list[str] = []
    for t in tasks:
        g = t.get("group", "")
        if g not in groups:
            groups.append(g)
    colors = dict(colors or {})
    for i, g in enumerate(groups):
        colors.setdefault(g, PALETTE[i % len(PALETTE)])
    label_w = 200
    height = MARGIN["top"] + len(tasks) * row_height + MARGIN["bottom"]
    end = max((t["end"] for t in tasks), default=1.0) / unit_seconds
    ticks = nice_ticks(0.0, max(end, 1e-6))
    x0, pw = label_w, width - label_w - MARGIN["right"]

    def xs(seconds: float) -> float:
        return x0 + seconds / unit_seconds / ticks[-1] * pw

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart gantt-chart" role="img" aria-label="{_e(title)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT};font-size:11px;'
           f'background:#fff">', f"<title>{_e(title)}</title>",
           f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" style="font-size:14px;font-weight:600">'
           f"{_e(title)}</text>"]
    out += _legend([g for g in groups if g], [colors[g] for g in groups if g], x0, MARGIN["top"] - 8)
    bottom = MARGIN["top"] + len(tasks) * row_height
    for t in ticks:
        xx = x0 + t / ticks[-1] * pw
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{MARGIN["top"]}" y2="{bottom}" stroke="#e5e5e5"/>'
                   f'<text x="{xx:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#444">{_e(_fmt(t))}</text>')
    out.append(f'<text class="x-label" x="{x0 + pw / 2:.1f}" y="{height - 10}" text-anchor="middle">'
               f"{_e(x_label)} ({_e(unit)})</text>")
    for i, t in enumerate(tasks):
        y = MARGIN["top"] + i * row_height
        a, b = xs(t["start"]), xs(t["end"])
        dur = (t["end"] - t["start"]) / unit_seconds
        label = str(t["label"])
        short = label if len(label) <= 28 else label[:27] + "…"
        out.append(f'<text x="{x0 - 6}" y="{y + row_height * 0.7:.1f}" text-anchor="end">{_e(short)}</text>')
        out.append(f'<rect class="task" x="{a:.1f}" y="{y + 2}" width="{max(b - a, 1.0):.1f}" '
                   f'height="{row_height - 4}" fill="{colors[t.get("group", "")]}"><title>{_e(label)}: '
                   f'{_e(_fmt(t["start"] / unit_seconds))}-{_e(_fmt(t["end"] / unit_seconds))} {_e(unit)} '
                   f'({_e(_fmt(dur))} {_e(unit)})</title></rect>')
    out.append("</svg>")
    return "\n".join(out)


def legend(names: Sequence[str], colors: Sequence[str], *, width: int = 760, title: str = "Legend") -> str:
    """A legend on its own, for a set of drawings that share colours (e.g. several racks)."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart legend" role="img" aria-label="{_e(title)}" '
           f'width="{width}" height="22" viewBox="0 0 {width} 22" style="{FONT};font-size:11px;background:#fff">',
           f"<title>{_e(title)}</title>"]
    out += _legend(names, colors, 4, 15)
    out.append("</svg>")
    return "\n".join(out)


def _hframe_ticks(x0: float, pw: float, top: float, bottom: float, hi: float, suffix: str = "") -> tuple[list[str], float]:
    """Vertical grid lines and their labels under a horizontal chart; returns (markup, axis maximum)."""
    ticks = nice_ticks(0.0, max(hi, 1e-9))
    out = []
    for t in ticks:
        xx = x0 + t / ticks[-1] * pw
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{xx:.1f}" y="{bottom + 14:.1f}" text-anchor="middle" fill="#444">'
                   f"{_e(_fmt(t))}{_e(suffix)}</text>")
    return out, ticks[-1]


def hbar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, value_labels: Sequence[str] | None = None,
               x_label: str = "", x_unit: str = "", colors: Sequence[str] | None = None, width: int = 760,
               bar_height: int = 24, label_width: int = 170) -> str:
    """One horizontal bar per label, its value written at the bar's end: reads well with long labels
    (cost categories, line items). ``value_labels`` replaces the plain numbers, e.g. ``$120,000 (41 %)``."""
    texts = list(value_labels) if value_labels is not None else [
        f"{_fmt(v)}{(' ' + x_unit) if x_unit else ''}" for v in values]
    right = max([60.0] + [_text_width(t) + 16 for t in texts])
    x0, top = label_width, 34
    pw = max(40.0, width - x0 - right)
    bottom = top + len(values) * bar_height
    height = int(bottom + 44)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart hbar-chart" role="img" aria-label="{_e(title)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT};font-size:11px;'
           f'background:#fff">', f"<title>{_e(title)}</title>",
           f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" style="font-size:14px;font-weight:600">'
           f"{_e(title)}</text>"]
    grid, hi = _hframe_ticks(x0, pw, top, bottom, max(values, default=0.0))
    out += grid
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = top + i * bar_height
        w = max(0.0, v) / hi * pw
        color = colors[i % len(colors)] if colors else PALETTE[0]
        out.append(f'<text x="{x0 - 8}" y="{y + bar_height * 0.65:.1f}" text-anchor="end">{_e(lab)}</text>')
        out.append(f'<rect class="bar" x="{x0}" y="{y + 3:.1f}" width="{max(w, 0.5):.1f}" height="{bar_height - 6}" '
                   f'fill="{color}"><title>{_e(lab)}: {_e(texts[i])}</title></rect>')
        out.append(f'<text x="{x0 + w + 6:.1f}" y="{y + bar_height * 0.65:.1f}" fill="#222">{_e(texts[i])}</text>')
    out.append(f'<line x1="{x0}" x2="{x0}" y1="{top}" y2="{bottom}" stroke="#333"/>')
    label = f"{x_label} ({x_unit})" if x_label and x_unit else x_label
    out.append(f'<text class="x-label" x="{x0 + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{_e(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def target_chart(rows: Sequence[dict], *, title: str, width: int = 760, bar_height: int = 30,
                 label_width: int = 150, max_pct: float = 400.0,
                 colors: Sequence[str] = ("#56B4E9", "#0072B2", "#D55E00")) -> str:
    """Offered against asked, one row per resource, in % of what is asked (so vCPUs, GiB and TiB share an axis).

    Each row (``label``, ``target``, ``value``, optional ``degraded`` and ``unit``) draws ``value`` as a wide
    bar, ``degraded`` (capacity with a failure domain lost) as a narrow bar inside it, and the target as a
    line at 100 %; a row whose degraded or offered capacity falls short is drawn in the alarm colour.
    The axis stops at ``max_pct``: one resource with a huge surplus must not squash the tight ones, so
    longer bars are cut (marked with a white break) and their figures written out.
    """
    rows = [r for r in rows if r.get("target", 0) > 0]
    offered_c, degraded_c, alarm_c = colors
    texts = []
    for r in rows:
        unit = f" {r['unit']}" if r.get("unit") else ""
        texts.append(f"{_fmt(r['value'])} / {_fmt(r['target'])}{unit} ({(r['value'] / r['target'] - 1) * 100:+.0f} %)")
    right = max([80.0] + [_text_width(t) + 16 for t in texts])
    x0, top = label_width, 52
    pw = max(40.0, width - x0 - right)
    bottom = top + len(rows) * bar_height
    height = int(bottom + 44)
    pct = [100.0 * max(r["value"], r.get("degraded", 0.0)) / r["target"] for r in rows] or [100.0]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart target-chart" role="img" aria-label="{_e(title)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT};font-size:11px;'
           f'background:#fff">', f"<title>{_e(title)}</title>",
           f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" style="font-size:14px;font-weight:600">'
           f"{_e(title)}</text>"]
    out += _legend(["offered, all up", "offered, failure domain lost", "asked (100 %)"],
                   [offered_c, degraded_c, alarm_c], x0, 40)
    grid, hi = _hframe_ticks(x0, pw, top, bottom, min(max(max(pct), 100.0), max_pct), suffix=" %")
    out += grid

    def bar_w(v: float, target: float) -> tuple[float, bool]:
        share = 100.0 * v / target
        return min(share, hi) / hi * pw, share > hi

    for i, r in enumerate(rows):
        y = top + i * bar_height
        short = r["value"] < r["target"] or r.get("degraded", r["value"]) < r["target"]
        unit = f" {r['unit']}" if r.get("unit") else ""
        w, cut = bar_w(r["value"], r["target"])
        out.append(f'<text x="{x0 - 8}" y="{y + bar_height * 0.62:.1f}" text-anchor="end">{_e(r["label"])}</text>')
        out.append(f'<rect class="bar" x="{x0}" y="{y + 4:.1f}" width="{max(w, 0.5):.1f}" height="{bar_height - 8}" '
                   f'fill="{alarm_c if short else offered_c}"><title>{_e(r["label"])}: {_e(_fmt(r["value"]))}{_e(unit)} '
                   f'offered, {_e(_fmt(r["target"]))}{_e(unit)} asked</title></rect>')
        if "degraded" in r:
            wd, _ = bar_w(r["degraded"], r["target"])
            out.append(f'<rect class="bar degraded" x="{x0}" y="{y + bar_height / 2 - 4:.1f}" width="{max(wd, 0.5):.1f}" '
                       f'height="8" fill="{alarm_c if short else degraded_c}"><title>{_e(r["label"])}: '
                       f'{_e(_fmt(r["degraded"]))}{_e(unit)} offered with the failure domain lost</title></rect>')
        if cut:
            xb = x0 + w - 14
            out.append(f'<path class="cut" d="M{xb:.1f},{y + bar_height - 3:.1f} l5,{-(bar_height - 6)} m4,0 '
                       f'l-5,{bar_height - 6}" stroke="#fff" stroke-width="2.5" fill="none"/>')
        out.append(f'<text x="{x0 + max(w, 0) + 6:.1f}" y="{y + bar_height * 0.62:.1f}" fill="#222">'
                   f"{_e(texts[i])}</text>")
    xt = x0 + 100.0 / hi * pw
    out.append(f'<line class="target" x1="{xt:.1f}" x2="{xt:.1f}" y1="{top - 2}" y2="{bottom + 2}" stroke="{alarm_c}" '
               f'stroke-width="2"><title>asked: 100 %</title></line>')
    out.append(f'<line x1="{x0}" x2="{x0}" y1="{top}" y2="{bottom}" stroke="#333"/>')
    out.append(f'<text class="x-label" x="{x0 + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">'
               f"capacity in % of what the workload asks for at the end of the horizon</text>")
    out.append("</svg>")
    return "\n".join(out)


# Colours of rack items by role; text on them is white unless the fill is light.
ROLE_COLORS = {"control": "#CC79A7", "compute": "#0072B2", "hyperconverged": "#009E73", "storage": "#E69F00",
               "network": "#56B4E9", "leaf": "#444444", "spine": "#222222", "management": "#777777"}
_LIGHT_FILLS = {"#E69F00", "#56B4E9", "#F0E442"}


def rack_elevation(name: str, height_u: int, items: Sequence[dict], *, model: str = "",
                   power_budget_w: float | None = None, u_px: int = 15, width: int = 320) -> str:
    """Front view of one rack: U numbers, one box per device at its U position, and power against budget.

    ``items`` are dicts with ``name``, ``role``, ``u`` (lowest unit), optional ``height_u`` (1), ``power_w``
    and ``detail`` (shown on hover). The power bar turns orange above 80 % of the budget and red above 100 %.
    """
    x_num, x0, x1 = 4, 30, width - 8
    top = 46
    bottom = top + height_u * u_px
    height = bottom + (52 if power_budget_w else 14)
    header = f"{name}" + (f" · {model}" if model else "")
    used_u = sum(int(it.get("height_u", 1)) for it in items)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart rack-elevation" role="img" '
           f'aria-label="rack {_e(name)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'style="{FONT};font-size:10px;background:#fff">',
           f"<title>rack {_e(name)}: {used_u} of {height_u} U used</title>",
           f'<text x="{x0}" y="18" style="font-size:14px;font-weight:600">{_e(header)}</text>',
           f'<text x="{x0}" y="34" fill="#555">{used_u} of {height_u} U used, {len(items)} devices</text>',
           f'<rect x="{x0 - 2}" y="{top - 2}" width="{x1 - x0 + 4}" height="{height_u * u_px + 4}" fill="#f7f7f7" '
           f'stroke="#333" stroke-width="2"/>']
    for u in range(1, height_u + 1):
        y = top + (height_u - u) * u_px
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y + u_px:.1f}" y2="{y + u_px:.1f}" stroke="#e3e3e3"/>'
                   f'<text x="{x_num + 18}" y="{y + u_px * 0.75:.1f}" text-anchor="end" fill="#888" '
                   f'style="font-size:8px">{u}</text>')
    for it in sorted(items, key=lambda d: d["u"]):
        out += _rack_item(it, height_u, top, u_px, x0, x1)
    if power_budget_w:
        out += _power_bar(sum(float(it.get("power_w") or 0) for it in items), power_budget_w, x0, x1, bottom + 14)
    out.append("</svg>")
    return "\n".join(out)


def _rack_item(it: dict, height_u: int, top: float, u_px: int, x0: float, x1: float) -> list[str]:
    h = int(it.get("height_u", 1))
    role = str(it.get("role", ""))
    color = ROLE_COLORS.get(role, PALETTE[len(role) % len(PALETTE)])
    ink = "#111" if color in _LIGHT_FILLS else "#fff"
    y = top + (height_u - (it["u"] + h - 1)) * u_px
    power = float(it.get("power_w") or 0)
    tip = f"{it['name']} ({role}), U{it['u']}" + (f"-U{it['u'] + h - 1}" if h > 1 else "") + \
        (f", {power:,.0f} W" if power else "") + (f", {it['detail']}" if it.get("detail") else "")
    label = f"{it['name']} · {role}"
    max_chars = int((x1 - x0 - 52) / (10 * 0.58))
    if len(label) > max_chars:
        label = label[:max_chars - 1] + "…"
    mid = y + h * u_px / 2 + 3.5
    out = [f'<g class="rack-item" data-role="{_e(role)}"><title>{_e(tip)}</title>'
           f'<rect x="{x0 + 1}" y="{y + 1:.1f}" width="{x1 - x0 - 2}" height="{h * u_px - 2}" rx="2" fill="{color}"/>'
           f'<text x="{x0 + 6}" y="{mid:.1f}" fill="{ink}">{_e(label)}</text>']
    if power:
        out.append(f'<text x="{x1 - 5}" y="{mid:.1f}" text-anchor="end" fill="{ink}">{power:,.0f} W</text>')
    out.append("</g>")
    return out


def _power_bar(used_w: float, budget_w: float, x0: float, x1: float, y: float) -> list[str]:
    share = used_w / budget_w
    color = "#009E73" if share <= 0.8 else "#E69F00" if share <= 1.0 else "#D55E00"
    w = min(share, 1.0) * (x1 - x0)
    text = f"power {used_w / 1000:,.1f} of {budget_w / 1000:,.1f} kW ({share:.0%})"
    return [f'<g class="power-bar"><title>{_e(text)}</title>'
            f'<rect x="{x0}" y="{y:.1f}" width="{x1 - x0}" height="12" fill="#e8e8e8"/>'
            f'<rect x="{x0}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="12" fill="{color}"/></g>',
            f'<text x="{x0}" y="{y + 28:.1f}" style="font-size:11px">{_e(text)}</text>']
