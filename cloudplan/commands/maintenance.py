"""`cloudplan maintenance plan`: the order, batches and commands of a rolling kernel or firmware update."""

from __future__ import annotations

from pathlib import Path

import typer

from cloudplan.blueprint import Blueprint
from cloudplan.commands import day2_options as opts
from cloudplan.commands import out
from cloudplan.day2.maintenance import Reason, plan_maintenance, reboot_seconds
from cloudplan.day2.maintenance_report import render, to_json, write
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.upgrade import load_cloud
from cloudplan.upgrade.models import (
    DEFAULT_MAX_BATCH_FRACTION,
    DEFAULT_MIGRATION_BANDWIDTH_GBPS,
    DEFAULT_PARALLEL_MIGRATIONS_PER_HOST,
    UpgradeDefaults,
)
from cloudplan.upgrade.report import human_duration

maintenance_app = typer.Typer(help="Plan rolling maintenance: every host patched and rebooted, no VM or Ceph "
                                   "write lost.\n\nExample: cloudplan maintenance plan inv.yaml --blueprint bp.yaml "
                                   "--reason kernel -o maintenance.html", no_args_is_help=True)


@maintenance_app.command("plan")
def plan_cmd(
    inventory: Path = typer.Argument(..., help="Inventory YAML (cloudplan layout output)."),
    reason: Reason = typer.Option(Reason.kernel, "--reason", help="kernel (OS update, ordinary reboot) or "
                                  "firmware (vendor tool or Redfish, longer reboot)."),
    blueprint: Path = typer.Option(None, "--blueprint", help="Blueprint from `cloudplan size -o`: its Ceph "
                                   "protection, and without --placement its planned placement at full load."),
    placement: opts.Placement = None,
    flavors: opts.Flavors = None,
    hypervisors: opts.Hypervisors = None,
    host_cores: opts.HostCores = None,
    host_ram_gib: opts.HostRamGib = None,
    reboot: int = typer.Option(None, "--host-reboot-seconds", min=0, help="Rebooting one batch until its services "
                               f"report up, seconds (default: kernel {reboot_seconds(Reason.kernel)}, "
                               f"firmware {reboot_seconds(Reason.firmware)})."),
    bandwidth: opts.BandwidthGbps = DEFAULT_MIGRATION_BANDWIDTH_GBPS,
    parallel: opts.ParallelMigrations = DEFAULT_PARALLEL_MIGRATIONS_PER_HOST,
    batch_fraction: opts.MaxBatchFraction = DEFAULT_MAX_BATCH_FRACTION,
    output: opts.Report = None,
    as_json: bool = typer.Option(False, "--json", help="Print verdict, order, batches and reasons as JSON."),
) -> None:
    """Plan a rolling kernel or firmware update: controllers one at a time, then Ceph-safe batches
    of drained compute hosts, then storage hosts, with every command and the duration.

    Exits 0 on go, 3 on no-go (a host whose VMs fit nowhere else, a Ceph tier that
    cannot lose one failure domain), 1 on bad input.

    Example: cloudplan maintenance plan inv.yaml --blueprint bp.yaml --reason firmware -o maintenance.md
    """
    defaults = UpgradeDefaults(host_reboot_seconds=reboot if reboot is not None else reboot_seconds(reason),
                               migration_bandwidth_gbps=bandwidth, parallel_migrations_per_host=parallel,
                               max_batch_fraction=batch_fraction)
    inv = load_model(Inventory, inventory)
    policy = load_model(Blueprint, blueprint).workload.policy if blueprint else None
    protection = policy.protection if policy else None
    cloud = load_cloud(inv, placement=placement, flavors=flavors, hypervisors=hypervisors, defaults=defaults,
                       host_cores=host_cores, host_ram_gib=host_ram_gib, blueprint=blueprint)
    result = plan_maintenance(inv, cloud, reason=reason, protection=protection, defaults=defaults,
                              failure_domain=policy.failure_domain.value if policy else None)
    if opts.emit_report(result, output, as_json, write=write, render=render, to_json=to_json):
        d = result.drain
        out.print(f"Rolling {reason.value} maintenance: {len(result.hosts_alone)} host(s) alone, "
                  f"{len(d.batches)} batches (largest {d.largest_batch} hosts), about "
                  f"{human_duration(result.duration_seconds)}; verdict: {result.verdict}", markup=False,
                  highlight=False)
        for r in result.reasons:
            out.print(f"  - {r}", markup=False, highlight=False)
    raise typer.Exit(0 if result.verdict == "go" else opts.EXIT_NO_GO)


def register(app: typer.Typer) -> None:
    app.add_typer(maintenance_app, name="maintenance")
