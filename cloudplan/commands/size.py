"""`cloudplan size`: workload -> costed blueprint, printed as tables, JSON or CSV."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from cloudplan.blueprint import Blueprint, summary
from cloudplan.catalog import load_catalog
from cloudplan.commands import err, out
from cloudplan.cost import bom_table
from cloudplan.errors import Infeasible, UsageError
from cloudplan.io import load_model, write_model
from cloudplan.sizing.expansion import expand_cloud
from cloudplan.sizing.plan import DEFAULT_GAP, size_cloud
from cloudplan.spec import Workload


class Solver(str, Enum):
    highs = "highs"
    cbc = "cbc"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def in_file(e: Infeasible, workload: Path) -> Infeasible:
    """The same error, naming the workload file and, when it is one of its fields, the field."""
    req = e.requirement or ""
    field = req if req.split("[")[0].split(".")[0] in ("flavors", "storage", "policy") else None
    where = f"{workload}: {field}" if field else str(workload)
    return Infeasible(f"{where}: {e}", requirement=e.requirement)


def _usd(x: float) -> str:
    return f"${x:,.0f}" if abs(x) >= 100 else f"${x:,.2f}"


def _bom(bp: Blueprint) -> Table:
    t = Table(title=f"Bill of materials: {bp.name}")
    for col in ("role", "item", "cpu", "RAM GiB", "drives per node", "count", "unit", "line"):
        t.add_column(col, justify="right" if col in ("RAM GiB", "count", "unit", "line") else "left")
    for r in bom_table(bp.nodes, bp.switches, bp.racks, bp.cables).itertuples():
        t.add_row(r.role, r.item, r.cpu, str(r.ram_gib or "-"), r.drives, str(r.count), _usd(r.unit_usd),
                  _usd(r.line_usd))
    return t


def _capacity(bp: Blueprint) -> Table:
    c = bp.capacity
    t = Table(title=f"Capacity against demand (end of horizon, N+1 by {bp.workload.policy.failure_domain.value}; "
                    "storage by the CRUSH bound n*S <= sum min(c_i, S))")
    for col in ("resource", "demanded", "offered", "offered, domain lost", "headroom"):
        t.add_column(col, justify="left" if col == "resource" else "right")

    def row(name, dem, off, deg):
        t.add_row(name, f"{dem:,.1f}", f"{off:,.1f}", f"{deg:,.1f}", f"{(off / dem - 1) * 100:+.0f} %" if dem else "-")

    row("vCPU", c.demanded_vcpus, c.offered_vcpus, c.offered_vcpus_degraded)
    row("VM RAM GiB", c.demanded_ram_gib, c.offered_ram_gib, c.offered_ram_gib_degraded)
    for tc in c.tiers:
        how = f" ({tc.protection}, {tc.failure_domains} domains)" if tc.protection else ""
        row(f"{tc.tier.value} usable TiB{how}", tc.demanded_usable_tib, tc.offered_usable_tib,
            tc.offered_usable_tib_degraded)
        if tc.demanded_iops:
            deg = tc.offered_iops_degraded if tc.offered_iops_degraded is not None else tc.offered_iops
            mix = f" ({tc.read_fraction:.0%} reads)" if tc.read_fraction is not None else ""
            row(f"{tc.tier.value} client IOPS{mix}", tc.demanded_iops, tc.offered_iops, deg)
    return t


def _recovery(bp: Blueprint) -> Table:
    t = Table(title="Healing and storage traffic (mClock recovery reservation, NIC headroom; evenly spread, "
                    "so the time is a lower bound)")
    for col in ("tier", "lost", "data to move TiB", "recovery Gb/s", "hours", "busiest node Gb/s / NIC Gb/s"):
        t.add_column(col, justify="left" if col in ("tier", "lost") else "right")
    for r in bp.recovery:
        busy = f"{r.peak_traffic_gbps:,.1f} / {r.nic_gbps:g}" if r.nic_gbps is not None else "-"
        t.add_row(r.tier.value, r.lost, f"{r.data_tib:,.1f}", f"{r.recovery_gbps:,.1f}",
                  f"{r.hours:,.2f}" if r.hours is not None else "never", busy)
    return t


def _control_line(bp: Blueprint) -> str:
    c = bp.control_plane
    if c.converged:
        return (f"Control plane: converged on three of the {c.hypervisors} hyperconverged hosts "
                f"({c.vms:,} VMs); each host keeps its share.")
    net = f"; {c.network_nodes} network nodes" if c.network_nodes else "; network services on the controllers"
    return (f"Control plane for {c.hypervisors} hypervisors and {c.vms:,} VMs: controllers of at least "
            f"{c.controller_threads} threads, {c.controller_ram_gib:g} GiB RAM and {c.controller_disk_gb:g} GB "
            f"mirrored NVMe{net}.")


def _costs(bp: Blueprint) -> Table:
    c = bp.cost
    t = Table(title="Cost", show_header=False)
    t.add_column("what")
    t.add_column("USD", justify="right")
    t.add_row("capex", _usd(c.capex_usd))
    t.add_row("opex per month (power x PUE, support, space)", _usd(c.opex_usd_per_month))
    t.add_row(f"TCO over {c.horizon_months / 12:g} years", _usd(c.tco_usd))
    t.add_row("per VM-month (all VMs, storage included)", _usd(c.usd_per_vm_month))
    t.add_row("per vCPU-month", _usd(c.usd_per_vcpu_month))
    t.add_row("per GiB-month of VM RAM", _usd(c.usd_per_gib_month))
    for tier, v in c.usd_per_usable_tib_month.items():
        t.add_row(f"per usable TiB-month, {tier}", _usd(v))
    for f in c.flavors:
        t.add_row(f"per VM-month, {f.flavor}", _usd(f.usd_per_vm_month))
    t.add_row("RAM per core (VM hosts)", f"{bp.capacity.ram_per_core_gib:.1f} GiB")
    return t


def _addition(bp: Blueprint) -> Table:
    e = bp.expansion
    t = Table(title=f"Addition to {e.installed} (what is bought; the bill of materials above is the whole cloud)")
    for col in ("role", "item", "cpu", "RAM GiB", "drives per node", "count", "unit"):
        t.add_column(col, justify="right" if col in ("RAM GiB", "count", "unit") else "left")
    for r in bom_table([n for n in bp.nodes if n.new], [], []).itertuples():
        t.add_row(r.role, r.item, r.cpu, str(r.ram_gib), r.drives, str(r.count), _usd(r.unit_usd))
    for role, count in sorted(e.added_switches.items()):
        t.add_row(f"switch:{role}", "-", "-", "-", "-", str(count), "-")
    if e.added_racks:
        t.add_row("rack", "-", "-", "-", "-", str(e.added_racks), "-")
    t.caption = (f"capex {_usd(e.capex_usd)}, opex {_usd(e.opex_usd_per_month)}/month, TCO {_usd(e.tco_usd)} "
                 f"over {bp.cost.horizon_months / 12:g} years")
    return t


def render_tables(bp: Blueprint) -> None:
    out.print(_bom(bp))
    out.print(_capacity(bp))
    if bp.placement:
        p = bp.placement
        out.print(f"Exact placement: {'every VM placed' if p.feasible else 'NOT placeable'}; "
                  f"with the failure domain lost: {'every VM re-placed' if p.feasible_degraded else 'NOT placeable'}; "
                  f"{p.exact_hosts} VM hosts.")
        if p.aggregate_only_tco_usd is not None:
            out.print(f"An aggregate-only answer ({p.aggregate_only_hosts} VM hosts, TCO {_usd(p.aggregate_only_tco_usd)}) "
                      f"cannot place every VM host by host: it under-buys by "
                      f"{_usd(bp.cost.tco_usd - p.aggregate_only_tco_usd)}.")
        else:
            out.print("The totals-only answer already places every VM host by host: nothing under-bought.")
        for f in p.fills:
            out.print(f"  {f.kind}: {f.hosts} hosts, vCPU fill {f.vcpu_fill:.0%}, RAM fill {f.ram_fill:.0%}")
    if bp.recovery:
        out.print(_recovery(bp))
    if bp.control_plane:
        out.print(_control_line(bp))
    out.print(_costs(bp))
    gap = f", gap {bp.mip_gap:.2%}" if bp.mip_gap else ""
    catalog = (f"; whole catalog: within {bp.catalog_gap:.2%} of its lower bound {_usd(bp.catalog_lower_bound_usd)}"
               if bp.catalog_gap is not None else "; no bound over the whole catalog")
    out.print(f"Plan: {bp.status}{gap} over {bp.optimal_over or 'its candidates'}{catalog} ({bp.solver}), sized in "
              f"{bp.solve_seconds:.2f} s; {bp.racks_count} rack(s); prices of {bp.catalog_date}.")
    for n in bp.notes:
        out.print(f"Note: {n}")


def size(
    workload: Path = typer.Argument(..., help="Workload YAML: flavors, storage tiers, policy."),
    profiles: Path = typer.Option(None, "--profiles", help="Hardware catalog directory (default: the bundled hardware_profiles/)."),
    solver: Solver = typer.Option(Solver.highs, "--solver", help="MILP solver: HiGHS (default) or CBC."),
    time_limit: float = typer.Option(60.0, "--time-limit", min=0.1, help="Solver time limit per MILP, seconds."),
    gap: float = typer.Option(DEFAULT_GAP, "--gap", min=0.0, max=0.5, help="Relative MIP gap at which to stop."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the blueprint (YAML, or JSON for *.json) for later commands."),
    fmt: Format = typer.Option(Format.table, "--format", help="table (default), json, or csv (bill of materials)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (same as --format json)."),
    installed: Path = typer.Option(None, "--installed", help="Blueprint of the cloud already bought: keep every "
                                   "node of it and buy the cheapest addition (TCO of what is added)."),
    prefer_fleet_skus: bool = typer.Option(False, "--prefer-fleet-skus", help="With --installed: new VM hosts and "
                                           "holders of the fleet's tiers are the fleet's own configurations."),
) -> None:
    """Size the cheapest cloud (TCO) that carries the workload with N+1, and cost it; with --installed,
    the cheapest addition to a cloud already bought.

    Example: cloudplan size examples/medium.yaml -o blueprint.yaml

    Example: cloudplan size grown.yaml --installed blueprint.yaml -o grown-blueprint.yaml
    """
    if as_json and fmt not in (Format.table, Format.json):
        raise UsageError("--json and --format csv exclude each other")
    if prefer_fleet_skus and installed is None:
        raise UsageError("--prefer-fleet-skus needs --installed BLUEPRINT")
    wl = load_model(Workload, workload)
    cat = load_catalog(profiles)
    quiet = as_json or fmt != Format.table
    try:
        if installed is not None:
            base = load_model(Blueprint, installed)
            with err.status("sizing the addition to the installed cloud"):
                bp = expand_cloud(wl, cat, base, prefer_fleet_skus=prefer_fleet_skus, solver=solver.value,
                                  time_limit_s=time_limit, gap=gap, source=str(installed))
        elif quiet:
            bp = size_cloud(wl, cat, solver=solver.value, time_limit_s=time_limit, gap=gap)
        else:
            with err.status("sizing: building and solving the MILP") as st:
                bp = size_cloud(wl, cat, solver=solver.value, time_limit_s=time_limit, gap=gap,
                                progress=lambda msg: st.update(f"sizing: {msg}"))
    except Infeasible as e:
        raise in_file(e, workload) from None
    if output is not None:
        write_model(bp, output)
    if as_json or fmt == Format.json:
        out.print_json(json.dumps(summary(bp)))
    elif fmt == Format.csv:
        typer.echo(bom_table(bp.nodes, bp.switches, bp.racks, bp.cables).to_csv(index=False), nl=False)
    else:
        render_tables(bp)
        if bp.expansion is not None:
            out.print(_addition(bp))
        if output is not None:
            out.print(f"Blueprint written to {output}")


def register(app: typer.Typer) -> None:
    app.command("size")(size)
