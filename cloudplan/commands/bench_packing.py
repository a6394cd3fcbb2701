"""`cloudplan bench packing`: the packing engine at 100x the VMs of the same flavors."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from cloudplan.commands import bench_app, out


@bench_app.command("packing")
def bench_packing(
    flavors: int = typer.Option(50, "--flavors", min=1, help="Distinct flavors."),
    vms: list[int] = typer.Option([200, 20000], "--vms", min=1, help="Total VMs to pack (repeatable)."),
    seed: int = typer.Option(7, "--seed", help="Random seed of the flavor mix (same seed, same flavors)."),
    time_limit: float = typer.Option(5.0, "--time-limit", min=0.1, help="Seconds per packing."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """Pack one seeded flavor mix on three host kinds at each VM count: the engine works per
    flavor, so 20,000 VMs must take no longer than 200.

    Example: cloudplan bench packing --flavors 50 --vms 200 --vms 20000
    """
    from cloudplan.sizing.scaling import run

    rows = run(flavors, list(vms), seed=seed, time_limit_s=time_limit)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"{flavors} flavors on 3 host kinds (seed {seed}, {time_limit:g} s limit)")
    for col in ("VMs", "hosts", "cost", "lower bound", "gap", "status", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['vms']:,}", str(r["hosts"]), f"{r['cost']:,.1f}", f"{r['lower_bound']:,.1f}",
                      f"{r['gap']:.2%}", r["status"], f"{r['seconds']:.2f}")
    out.print(table)


def register(app: typer.Typer) -> None:
    """The command hangs off the shared `bench` group, already on the app."""
