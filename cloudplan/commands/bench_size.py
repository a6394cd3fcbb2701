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
from cloudplan.spec import FailureDomain, Workload

DEFAULT_WORKLOAD = Path(__file__).resolve().parents[2] / "examples" / "large.yaml"


@bench_app.command("size")
def bench_size(
    workload: Path = typer.Argument(DEFAULT_WORKLOAD, help="Workload YAML to size (default: examples/large.yaml)."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Runs to time; the median is reported."),
    profiles: Path = typer.Option(None, "--profiles", help="Hardware catalog directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    rack: bool = typer.Option(True, "--rack/--no-rack",
                              help="Also size the workload with failure_domain: rack (one run per repeat)."),
) -> None:
    """Time `cloudplan size` end to end (options, LP, MILP, placement, layout check, costing) on one
    workload, by its own failure domain and, with --rack (default), by rack.

    Example: cloudplan bench size examples/large.yaml --repeat 3 --no-rack
    """
    wl = load_model(Workload, workload)
    cat = load_catalog(profiles)
    runs = [_run(wl, cat, repeat)]
    if rack and wl.policy.failure_domain != FailureDomain.rack:
        by_rack = wl.model_copy(deep=True)
        by_rack.policy.failure_domain = FailureDomain.rack
        runs.append(_run(by_rack, cat, repeat))
    if as_json:
        out.print_json(json.dumps(runs if len(runs) > 1 else runs[0]))
        return
    for r in runs:
        out.print(f"{r['workload']}: {r['flavors']} flavors, {r['vms_sized']} VMs at the end of the horizon, "
                  f"{r['tiers']} tiers, N+1 by {r['failure_domain']}")
        out.print(f"plan: {r['status']}, MIP gap {r['mip_gap']:.3%}, {r['nodes']} nodes, {r['racks']} racks, "
                  f"TCO ${r['tco_usd']:,.0f}")
        out.print(f"{r['scope']}")
        out.print(f"time: median {r['seconds_median']:.2f} s over {repeat} run(s) {r['seconds_all']}")


def _run(wl: Workload, cat, repeat: int) -> dict:
    times, bp = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        bp = size_cloud(wl, cat)
        times.append(time.perf_counter() - t0)
    return {"workload": wl.name, "flavors": len(wl.flavors), "vms_sized": sum(wl.grown_count(f) for f in wl.flavors),
            "tiers": len(wl.storage), "failure_domain": wl.policy.failure_domain.value, "status": bp.status,
            "mip_gap": bp.mip_gap, "catalog_gap": bp.catalog_gap, "nodes": bp.node_count, "racks": bp.racks_count,
            "tco_usd": round(bp.cost.tco_usd, 2), "seconds_median": round(statistics.median(times), 3),
            "seconds_all": [round(t, 3) for t in times], "scope": bp.notes[0]}
