"""`cloudplan bench vbp`: the packing engine on VPSolver vector bin packing instances."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from cloudplan.commands import bench_app, err, out
from cloudplan.errors import UsageError
from cloudplan.sizing import vbp


@bench_app.command("vbp")
def bench_vbp(
    paths: list[Path] = typer.Argument(None, help=".vbp files, directories of them, or .tar.gz archives."),
    time_limit: float = typer.Option(5.0, "--time-limit", help="Seconds allowed per instance."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per instance."),
    jobs: int = typer.Option(1, "--jobs", help="Instances solved in parallel (processes)."),
    known: Path | None = typer.Option(None, "--known",
                                      help="Published summary (tab-separated: instance_name, LB, OPT, "
                                           "best_overall, ...), read only after solving to report gaps."),
    triplets: bool = typer.Option(False, "--triplets",
                                  help="Also solve the generated tight family (d 3, 5, 10; n 60 to 498; 5 seeds "
                                       "each), whose optimum n / 3 is known by construction."),
) -> None:
    """Solve vector bin packing instances and report bins, lower bound, optimality and time.

    Example: cloudplan bench vbp New_instances.tar.gz --time-limit 5 --jobs 2 --known New_summary_known.csv

    Example: cloudplan bench vbp --triplets --jobs 2
    """
    if time_limit <= 0 or jobs < 1:
        raise UsageError("--time-limit must be > 0 and --jobs >= 1")
    if not paths and not triplets:
        raise UsageError("give .vbp paths, --triplets, or both")
    extra = vbp.triplet_sources() if triplets else []
    t0 = time.monotonic()
    done = {"n": 0}

    def progress(run: vbp.VbpRun) -> None:
        done["n"] += 1
        if not as_json:
            err.print(f"[{done['n']}] {run.instance}: {run.bins} bins (bound {run.lower_bound}) {run.seconds:.2f} s",
                      highlight=False)

    runs = vbp.run_benchmark([str(p) for p in paths or []], time_limit_s=time_limit, jobs=jobs,
                             progress=progress, extra=extra)
    wall = time.monotonic() - t0
    known_opt = (vbp.read_known(known) if known else {}) | vbp.triplet_known(extra)
    comparison = vbp.compare_known(runs, known_opt) if known_opt else None
    if as_json:
        out.print_json(json.dumps(vbp.as_dicts(runs)))
        return
    _print_runs(runs)
    s = vbp.summary(runs)
    out.print(f"{s['instances']} instances, {s['solved']} solved, {s['proven_optimal']} proven optimal, "
              f"{s['total_seconds']} s of solving, {wall:.1f} s wall clock", highlight=False)
    if comparison:
        _print_comparison(comparison)


def _print_runs(runs: list[vbp.VbpRun]) -> None:
    table = Table(title="Vector bin packing")
    for col in ("instance", "d", "n", "lower bound", "bins", "optimal", "seconds"):
        table.add_column(col, justify="left" if col == "instance" else "right")
    for r in runs:
        table.add_row(r.instance, str(r.d), str(r.n), str(r.lower_bound), "-" if r.bins is None else str(r.bins),
                      "yes" if r.optimal else "no", f"{r.seconds:.2f}")
    out.print(table)


def _print_comparison(rows: list[dict]) -> None:
    table = Table(title="Against the published results (instances with a known optimum)")
    heads = [("class", "class"), ("d", "d"), ("known", "known OPT"), ("mean_gap_pct", "gap to OPT %"),
             ("at_opt", "at OPT"), ("proven", "proven"), ("best_overall_gap_pct", "best published gap %"),
             ("best_overall_at_opt", "best published at OPT"), ("better_than_best_overall", "beats best published")]
    for _, h in heads:
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(*["-" if r[k] is None else str(r[k]) for k, _ in heads])
    out.print(table)


def register(app: typer.Typer) -> None:
    """The command is attached to the shared ``bench`` sub-app at import."""
