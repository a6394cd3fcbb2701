"""`cloudplan bench size`: time the sizing of a workload (the large example by default)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import typer

from cloudplan.catalog import load_catalog
from cloudplan.commands import bench_app, out
from cloudplan.io import load_model
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Workload

DEFAULT_WORKLOAD = Path(__file__).resolve().parents[2] / "examples" / "large.yaml"


@bench_app.command("size")
def bench_size(
    workload: Path = typer.Argument(DEFAULT_WORKLOAD, help="Workload YAML to size (default: examples/large.yaml)."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Runs to time; the median is reported."),
    profiles: Path = typer.Option(None, "--profiles", help="Hardware catalog directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Time `cloudplan size` end to end (options, LP, MILP, costing) on one workload.

    Example: cloudplan bench size examples/large.yaml --repeat 3
    """
    wl = load_model(Workload, workload)
    cat = load_catalog(profiles)
    times, bp = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        bp = size_cloud(wl, cat)
        times.append(time.perf_counter() - t0)
    vms = sum(wl.grown_count(f) for f in wl.flavors)
    result = {"workload": wl.name, "flavors": len(wl.flavors), "vms_sized": vms, "tiers": len(wl.storage),
              "failure_domain": wl.policy.failure_domain.value, "status": bp.status, "mip_gap": bp.mip_gap,
              "nodes": bp.node_count, "tco_usd": round(bp.cost.tco_usd, 2),
              "seconds_median": round(statistics.median(times), 3), "seconds_all": [round(t, 3) for t in times],
              "scope": bp.notes[0]}
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(f"{wl.name}: {len(wl.flavors)} flavors, {vms} VMs at the end of the horizon, {len(wl.storage)} tiers, "
              f"N+1 by {result['failure_domain']}")
    out.print(f"plan: {bp.status}, MIP gap {bp.mip_gap:.3%}, {bp.node_count} nodes, TCO ${bp.cost.tco_usd:,.0f}")
    out.print(f"{bp.notes[0]}")
    out.print(f"time: median {result['seconds_median']:.2f} s over {repeat} run(s) {result['seconds_all']}")
