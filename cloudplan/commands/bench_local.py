"""`cloudplan bench local`: the packing's local search alone, its steps per second."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cloudplan.commands import bench_app, err, out
from cloudplan.errors import UsageError
from cloudplan.sizing import vbp


@bench_app.command("local")
def bench_local(
    paths: list[Path] = typer.Argument(..., help=".vbp files, directories of them, or .tar.gz archives."),
    seconds: float = typer.Option(3.0, "--seconds", help="Seconds of search per instance."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the search."),
    known: Path | None = typer.Option(None, "--known", help="Published summary, to show each optimum."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per instance."),
) -> None:
    """Run the bin-elimination local search alone from the best greedy packing: steps per
    second (what the compiled steps buy) and the bins reached.

    Example: cloudplan bench local instances/class1_250_3_0.vbp --seconds 3 --known New_summary_known.csv
    """
    if seconds <= 0:
        raise UsageError("--seconds must be > 0")
    opt = {k: v.get("OPT") for k, v in vbp.read_known(known).items()} if known else {}
    rows = []
    sources = vbp.iter_sources([str(p) for p in paths])
    for n, (name, text) in enumerate(sources, start=1):
        row = vbp.local_search_rate(name, text, seconds, seed)
        row["opt"] = opt.get(Path(name).stem)
        rows.append(row)
        if not as_json:
            err.print(f"[{n}/{len(sources)}] {name}: {row['bins']} bins, {row['steps_per_s']:,} steps/s",
                      highlight=False)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"Local search alone, {seconds:g} s per instance (seed {seed})")
    for col in ("instance", "n", "greedy bins", "bins", "known OPT", "steps", "steps/s", "setup s"):
        table.add_column(col, justify="left" if col == "instance" else "right")
    for r in rows:
        table.add_row(r["instance"], str(r["n"]), str(r["greedy_bins"]), str(r["bins"]),
                      "-" if r["opt"] is None else str(r["opt"]), f"{r['steps']:,}", f"{r['steps_per_s']:,}",
                      f"{r['setup_s']:.2f}")
    out.print(table)
