"""Options shared by the commands that read a running cloud (upgrade, maintenance, replace, capacity).

One definition each, as ``Annotated`` types, so the flags and their help cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from cloudplan.commands import err
from cloudplan.report import ReportFormat

from cloudplan.day2.snapshot import Snapshot, load_snapshot
from cloudplan.spec import Policy

# Exit status of a no-go (a rehearsal, a maintenance plan, a replacement refused), so a pipeline can gate on it.
EXIT_NO_GO = 3

Placement = Annotated[Path | None, typer.Option(
    "--placement", help="`openstack server list --all-projects --long -f json` output, or a CSV with columns "
                        "vm,flavor,host.")]
Flavors = Annotated[Path | None, typer.Option(
    "--flavors", help="`openstack flavor list --long -f json` output, a YAML/CSV flavor table, or a workload file "
                      "with flavors (needed with --placement).")]
Hypervisors = Annotated[Path | None, typer.Option(
    "--hypervisors", help="`openstack hypervisor list --long -f json` output: host sizes (else the inventory's "
                          "expect).")]
HostCores = Annotated[float | None, typer.Option(
    "--host-cores", help="Hardware threads of compute nodes whose size neither --hypervisors nor the inventory "
                         "gives.")]
HostRamGib = Annotated[float | None, typer.Option(
    "--host-ram-gib", help="RAM (GiB) of such compute nodes.")]
BandwidthGbps = Annotated[float, typer.Option(
    "--bandwidth-gbps", help="Bandwidth of one live-migration stream, Gbit/s.")]
ParallelMigrations = Annotated[int, typer.Option(
    "--parallel-migrations", min=1, help="Live migrations at once per host (Nova max_concurrent_live_migrations: "
                                         "1 unless the deployment raises it).")]
MaxBatchFraction = Annotated[float, typer.Option(
    "--max-batch-fraction", min=0.001, max=1.0, help="Largest share of compute hosts drained at once.")]
Report = Annotated[Path | None, typer.Option(
    "-o", "--output", help="Write the report: *.json, *.md, else HTML.")]


def snapshot_for(directory: Path, policy: Policy | None) -> Snapshot:
    """A capacity snapshot read with the cloud's Nova ratios (the defaults without a blueprint)."""
    p = policy or Policy()
    return load_snapshot(directory, cpu_ratio=p.cpu_allocation_ratio, ram_ratio=p.ram_allocation_ratio,
                         reserved_ram_mib=p.reserved_host_memory_mb)


def emit_report(result: Any, output: Path | None, as_json: bool, *, write: Callable, render: Callable,
                to_json: Callable) -> bool:
    """A day-2 report's output: the file ``-o`` names, else JSON or Markdown on stdout. True when
    the caller should print its short summary (a file was written and no JSON asked for)."""
    if output is not None:
        err.print(f"wrote {write(result, output)}", markup=False, highlight=False)
    if as_json:
        typer.echo(to_json(result), nl=False)
    elif output is None:
        typer.echo(render(result, ReportFormat.md), nl=False)
    return output is not None and not as_json
