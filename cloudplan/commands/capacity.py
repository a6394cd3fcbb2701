"""`cloudplan capacity`: the live cloud's use, its N+1 headroom, and when to buy."""

from __future__ import annotations

from pathlib import Path

import typer

from cloudplan.blueprint import Blueprint
from cloudplan.commands import day2_options as opts
from cloudplan.commands import err, out
from cloudplan.day2 import forecast
from cloudplan.day2.capacity import DEFAULT_LEAD_TIME_DAYS
from cloudplan.catalog import load_catalog
from cloudplan.day2.capacity_report import render, to_json, write
from cloudplan.day2.next_purchase import next_purchase
from cloudplan.inventory import Inventory
from cloudplan.io import load_model


def capacity(
    blueprint: Path = typer.Argument(..., help="The cloud's blueprint (`cloudplan size -o`): policy, protection, "
                                               "failure domain."),
    snapshots: list[Path] = typer.Argument(..., help="Snapshot directories (any order), each holding the JSON of "
                                                     "the read-only commands listed in the README."),
    inventory: Path = typer.Option(None, "--inventory", help="Inventory YAML: needed for the rack failure domain "
                                                             "(which rack each hypervisor is in)."),
    growth: float = typer.Option(None, "--growth-per-year", help="Compound yearly growth, e.g. 0.3; default: "
                                 "fitted to the snapshots, or the blueprint's with only one."),
    lead_time: int = typer.Option(DEFAULT_LEAD_TIME_DAYS, "--lead-time-days", min=0, max=3650,
                                  help="Days from order to the new hardware carrying load."),
    output: opts.Report = None,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
    purchase_years: float = typer.Option(None, "--next-purchase", min=0.1, max=15, help="Also size the next "
                                         "purchase: the cheapest addition to the blueprint's nodes that carries "
                                         "the use grown this many years, N+1."),
    profiles: Path = typer.Option(None, "--profiles", help="Hardware catalog for --next-purchase (default: the "
                                  "bundled hardware_profiles/)."),
) -> None:
    """Report, per resource (vCPU, RAM, each Ceph device class), the use, the headroom with
    the largest failure domain lost, the growth, and the dates each runs out and must be ordered by.

    Example: cloudplan capacity bp.yaml snapshots/2026-09-01 snapshots/2026-12-01 -o capacity.html

    Example: cloudplan capacity bp.yaml snapshots/2026-12-01 --next-purchase 1 -o capacity.md
    """
    bp = load_model(Blueprint, blueprint)
    snaps = [opts.snapshot_for(s, bp.workload.policy) for s in snapshots]
    inv = load_model(Inventory, inventory) if inventory else None
    report = forecast(bp, snaps, growth_per_year=growth, inventory=inv, lead_time_days=lead_time)
    if purchase_years is not None:
        with err.status("sizing the next purchase"):
            report.next_purchase = next_purchase(bp, report, load_catalog(profiles), years=purchase_years,
                                                 source=str(blueprint))
    if opts.emit_report(report, output, as_json, write=write, render=render, to_json=to_json):
        for r in report.resources:
            out.print(f"{r.resource}: {r.used:,.1f} of {r.offered_n1:,.1f} {r.unit} (N+1); runs out "
                      f"{r.runs_out_n1 or 'not at this growth'}; order by {r.order_by or '-'}"
                      + (" (overdue)" if r.overdue else ""),
                      markup=False, highlight=False)
        p = report.next_purchase
        if p is not None:
            out.print(f"next purchase ({p.years:g} year(s) of growth): "
                      + ", ".join(f"{x.count} x {x.role} {x.chassis}" for x in p.lines)
                      + f"; capex ${p.capex_usd:,.0f}, TCO ${p.tco_usd:,.0f}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity)
