"""`cloudplan bench expand`: time the expansion sizing of a sized cloud grown by a factor."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import typer

from cloudplan.catalog import load_catalog
from cloudplan.commands import bench_app, out
from cloudplan.commands.bench_size import DEFAULT_WORKLOAD
from cloudplan.io import load_model
from cloudplan.sizing.expansion import expand_cloud, grown
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Workload


@bench_app.command("expand")
def bench_expand(
    workload: Path = typer.Argument(DEFAULT_WORKLOAD, help="Workload YAML whose blueprint is the installed base "
                                    "(default: examples/large.yaml)."),
    growth: float = typer.Option(1.3, "--growth", min=1.0, help="Factor on every flavor's VMs and tier's TiB."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Runs to time; the median is reported."),
    profiles: Path = typer.Option(None, "--profiles", help="Hardware catalog directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Size the workload (untimed: that is the installed base), grow it by --growth and time the expansion
    sizing on the installed blueprint (wall and CPU seconds).

    Example: cloudplan bench expand examples/large.yaml --growth 1.3 --repeat 3
    """
    wl = load_model(Workload, workload)
    cat = load_catalog(profiles)
    base = size_cloud(wl, cat)
    more = grown(wl, growth)
    times, cpu, bp = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        bp = expand_cloud(more, cat, base)
        times.append(time.perf_counter() - t0)
        # CPU seconds of every thread (HiGHS's too): what the run costs on a machine others share
        cpu.append(time.process_time() - c0)
    r = {"workload": wl.name, "growth": growth, "installed_nodes": base.node_count, "added_nodes": bp.expansion.added_nodes,
         "added_racks": bp.expansion.added_racks, "addition_tco_usd": round(bp.expansion.tco_usd, 2),
         "status": bp.status, "catalog_gap": bp.catalog_gap, "seconds_median": round(statistics.median(times), 3),
         "seconds_all": [round(t, 3) for t in times], "cpu_seconds_median": round(statistics.median(cpu), 3)}
    if as_json:
        out.print_json(json.dumps(r))
        return
    out.print(f"{r['workload']} grown x{growth:g}: {r['installed_nodes']} nodes installed, {r['added_nodes']} bought, "
              f"{r['added_racks']} rack(s) more; addition TCO ${r['addition_tco_usd']:,.0f}; plan {r['status']}")
    out.print(f"time: median {r['seconds_median']:.2f} s over {repeat} run(s) {r['seconds_all']}; "
              f"CPU {r['cpu_seconds_median']:.2f} s (median)")
