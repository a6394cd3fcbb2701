"""`cloudplan report`: a blueprint -> the sizing report (self-contained HTML, or Markdown)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from cloudplan.blueprint import Blueprint
from cloudplan.commands import err
from cloudplan.io import load_model
from cloudplan.report import render, write_report


class Format(str, Enum):
    html = "html"
    md = "md"


def report(
    blueprint: Path = typer.Argument(..., help="Blueprint YAML/JSON written by `cloudplan size -o`."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the report here (default: standard output)."),
    fmt: Format = typer.Option(None, "--format", help="html (default, one self-contained file with inline SVG "
                               "plots) or md (Markdown tables); default: md for a *.md output, else html."),
) -> None:
    """Write the sizing report: summary, bill of materials, cost breakdown and TCO plots,
    capacity against demand, and a drawing of every rack.

    Example: cloudplan size examples/medium.yaml -o bp.yaml && cloudplan report bp.yaml -o report.html
    """
    bp = load_model(Blueprint, blueprint)
    if output is None:
        typer.echo(render(bp, fmt.value if fmt else "html"), nl=False)
        return
    written = write_report(bp, output, fmt.value if fmt else None)
    err.print(f"wrote {written}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
