"""`cloudplan upgrade ...`: the release catalog and the N+1 upgrade rehearsal."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.table import Table

from cloudplan.blueprint import Blueprint
from cloudplan.commands import day2_options as opts
from cloudplan.commands import err, out
from cloudplan.errors import SpecError
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.upgrade import load_catalog, load_cloud, rehearse, rehearse_chain, write_reports
from cloudplan.upgrade.models import (
    DEFAULT_DIRTY_PAGE_FACTOR,
    DEFAULT_HOST_REBOOT_SECONDS,
    DEFAULT_MAX_BATCH_FRACTION,
    DEFAULT_MIGRATION_BANDWIDTH_GBPS,
    DEFAULT_PARALLEL_MIGRATIONS_PER_HOST,
    UpgradeDefaults,
)
from cloudplan.upgrade.report import human_duration
from cloudplan.spec import NOVA_CPU_ALLOCATION_RATIO, NOVA_RAM_ALLOCATION_RATIO, NOVA_RESERVED_HOST_MEMORY_MB

upgrade_app = typer.Typer(help="Rehearse OpenStack release upgrades before the maintenance window.\n\n"
                               "Example: cloudplan upgrade rehearse inventory.yaml --from 2026.1 --to 2026.2 "
                               "--placement servers.json --flavors flavors.json -o report.html",
                          no_args_is_help=True)


def _day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SpecError(f"expected a date YYYY-MM-DD, got {value!r}", field="--today") from None


TODAY_HELP = "Derive each release's status for this day, YYYY-MM-DD (default: today)."


@upgrade_app.command("releases")
def releases_cmd(
    catalog: Path = typer.Option(None, "--catalog", help="A copy of openstack/releases data/series_status.yaml "
                                 "(default: the copy shipped with cloudplan)."),
    today: str = typer.Option(None, "--today", help=TODAY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List OpenStack releases with their status on a day, SLURP flag and the hops they support.

    Example: cloudplan upgrade releases --catalog series_status.yaml
    """
    cat = load_catalog(catalog, today=_day(today))
    rows = list(reversed(cat.releases))
    if as_json:
        out.print_json(json.dumps([{**r.model_dump(mode="json"), "id": r.key,
                                    "upgrades_to": [n.key for n in cat.successors(r)]} for r in rows]))
        return
    table = Table(title=f"OpenStack releases on {cat.today} ({cat.source} catalog)")
    for col in ("release", "name", "status", "released", "SLURP", "upgrades to"):
        table.add_column(col)
    for r in rows:
        released = str(r.initial_release or "") if r.released else f"not yet ({r.initial_release or 'undated'})"
        table.add_row(r.key, r.name, r.status, released, "yes" if r.slurp else "",
                      ", ".join(n.key for n in cat.successors(r)))
    out.print(table)


@upgrade_app.command("rehearse")
def rehearse_cmd(
    inventory: Path = typer.Argument(..., help="Inventory YAML (cloudplan layout output)."),
    from_release: str = typer.Option(..., "--from", help="Release running now: id (2025.2) or name (flamingo)."),
    to_release: str = typer.Option(..., "--to", help="Release to upgrade to."),
    placement: opts.Placement = None,
    flavors: opts.Flavors = None,
    blueprint: Path = typer.Option(None, "--blueprint", help="Blueprint from `cloudplan size -o`: without "
                                   "--placement, its planned placement at full load is rehearsed."),
    hypervisors: opts.Hypervisors = None,
    host_cores: opts.HostCores = None,
    host_ram_gib: opts.HostRamGib = None,
    load_fraction: float = typer.Option(1.0, "--load", min=0.01, max=1.0, help="Without placement or flavor "
                                        "counts: fill each host to this share of its capacity."),
    catalog: Path = typer.Option(None, "--catalog", help="A newer series_status.yaml."),
    today: str = typer.Option(None, "--today", help=TODAY_HELP),
    output: Path = typer.Option(None, "-o", "--output", help="Write the HTML report here."),
    markdown: Path = typer.Option(None, "--markdown", help="Write the Markdown report here."),
    as_json: bool = typer.Option(False, "--json", help="Print verdict, path, reasons and hosts as JSON."),
    chain: bool = typer.Option(False, "--chain", help="When the hop is not supported, rehearse every hop of "
                               "the shortest supported chain (reports get the hop in their name)."),
    bandwidth: opts.BandwidthGbps = DEFAULT_MIGRATION_BANDWIDTH_GBPS,
    parallel: opts.ParallelMigrations = DEFAULT_PARALLEL_MIGRATIONS_PER_HOST,
    dirty: float = typer.Option(DEFAULT_DIRTY_PAGE_FACTOR, "--dirty-factor", min=1.0,
                                help="Bytes sent per byte of guest RAM during a live migration."),
    batch_fraction: opts.MaxBatchFraction = DEFAULT_MAX_BATCH_FRACTION,
    reboot_seconds: int = typer.Option(DEFAULT_HOST_REBOOT_SECONDS, "--host-reboot-seconds", min=0,
                                       help="Rebooting one batch of hosts until its services report up, seconds."),
    cpu_ratio: float = typer.Option(NOVA_CPU_ALLOCATION_RATIO, "--cpu-allocation-ratio",
                                    help="Nova cpu_allocation_ratio of the compute hosts."),
    ram_ratio: float = typer.Option(NOVA_RAM_ALLOCATION_RATIO, "--ram-allocation-ratio",
                                    help="Nova ram_allocation_ratio of the compute hosts."),
    reserved_mb: int = typer.Option(NOVA_RESERVED_HOST_MEMORY_MB, "--reserved-host-memory-mb",
                                    help="Nova reserved_host_memory_mb."),
) -> None:
    """Rehearse one upgrade hop: release rules, plan, drain check, config diff, go/no-go.

    Exits 0 on go, 3 on no-go, 1 on an unsupported hop (printing the chain of
    supported hops) or bad input.

    Example: cloudplan upgrade rehearse examples/inventory.yaml --from 2026.1 --to 2026.2
    --placement examples/placement.json --flavors examples/medium.yaml --host-cores 128
    --host-ram-gib 1024 -o report.html --markdown report.md
    """
    defaults = UpgradeDefaults(
        cpu_allocation_ratio=cpu_ratio, ram_allocation_ratio=ram_ratio, reserved_host_memory_mb=reserved_mb,
        migration_bandwidth_gbps=bandwidth, parallel_migrations_per_host=parallel, dirty_page_factor=dirty,
        max_batch_fraction=batch_fraction, host_reboot_seconds=reboot_seconds)
    inv = load_model(Inventory, inventory)
    cat = load_catalog(catalog, today=_day(today))
    # The blueprint's Ceph protection and CRUSH domain; 3x replication (min_size 2), by racks spanned, without one.
    policy = load_model(Blueprint, blueprint).workload.policy if blueprint else None
    protection = policy.protection if policy else None
    # Refuse an unsupported hop before reading the placement: nothing else matters then.
    hops = cat.shortest_chain(cat.get(from_release), cat.get(to_release))
    if len(hops) != 2 and not chain:
        from cloudplan.upgrade.models import Cloud
        result = rehearse(inv, from_release, to_release, Cloud(hosts=[], flavors={}, source="not read"),
                          catalog=cat, defaults=defaults)
        _finish([result], as_json, single=True)
    cloud = load_cloud(inv, placement=placement, flavors=flavors, hypervisors=hypervisors, defaults=defaults,
                       host_cores=host_cores, host_ram_gib=host_ram_gib, load_fraction=load_fraction,
                       blueprint=blueprint)
    results = rehearse_chain(inv, from_release, to_release, cloud, catalog=cat, defaults=defaults,
                             protection=protection, inventory_file=str(inventory),
                             failure_domain=policy.failure_domain.value if policy else None)
    for r in results:
        suffix = f"-{r.from_release}-{r.to_release}" if len(results) > 1 else ""
        for p in write_reports(r, html=_named(output, suffix), markdown=_named(markdown, suffix)):
            err.print(f"wrote {p}", markup=False, highlight=False)
    _finish(results, as_json, single=len(results) == 1)


def _named(path: Path | None, suffix: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}{suffix}{path.suffix}")


def _finish(results: list, as_json: bool, single: bool) -> None:
    """Print the rehearsals and exit: 1 for a refused hop, 3 when any hop is a no-go, else 0."""
    if as_json:
        data = [r.summary_json() for r in results]
        out.print_json(json.dumps(data[0] if single else data))
    else:
        for r in results:
            _print_summary(r)
    if not all(r.supported for r in results):
        raise typer.Exit(1)
    if any(r.verdict != "go" for r in results):
        raise typer.Exit(opts.EXIT_NO_GO)
    raise typer.Exit(0)


def _print_summary(result) -> None:
    if not result.supported:
        err.print(f"Error: {result.reasons[0]}", markup=False, highlight=False)
        for w in result.warnings:   # the notes of each hop of the chain, to prepare for them
            err.print(f"  note: {w}", markup=False, highlight=False)
        return
    d = result.drain
    storage = len(d.batches) - len(d.compute_batches)
    out.print(f"Upgrade {result.from_release} -> {result.to_release}: "
              f"{result.compute_hosts} compute hosts, {result.vms} VMs, {len(d.compute_batches)} compute batches "
              f"(largest {d.largest_batch} hosts)" + (f" and {storage} storage batches" if storage else "")
              + f", about {human_duration(result.duration_seconds)}", markup=False, highlight=False)
    for r in result.reasons:
        out.print(f"  - {r}", markup=False, highlight=False)
    for w in result.warnings:
        out.print(f"  warning: {w}", markup=False, highlight=False)
    out.print(f"verdict: {result.verdict}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(upgrade_app, name="upgrade")
