"""`cloudplan layout`: blueprint + site -> inventory (racks, U, names, addresses)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from cloudplan.blueprint import Blueprint
from cloudplan.commands import out
from cloudplan.errors import SpecError
from cloudplan.io import load_model, write_model
from cloudplan.layout import Site, layout


def layout_cmd(
    blueprint: Path = typer.Argument(..., help="Blueprint written by `cloudplan size -o`."),
    site: Path = typer.Option(..., "--site", help="Site YAML: networks, rack naming, BMC credentials reference."),
    output: Path = typer.Option(..., "-o", "--output", help="Inventory YAML to write."),
) -> None:
    """Place every node of a blueprint in a rack and U, name it, and give it its addresses.

    Example: cloudplan layout blueprint.yaml --site examples/site.yaml -o inventory.yaml
    """
    try:
        inv = layout(load_model(Blueprint, blueprint), load_model(Site, site))
    except SpecError as e:
        if e.path is not None:
            raise
        # the library does not know the file names: blueprint fields vs the site's
        source = blueprint if (e.field or "").startswith("racks") else site
        raise SpecError(e.message, path=str(source), field=e.field) from None
    write_model(inv, output)
    per_rack = Counter(n.rack for n in inv.nodes)
    out.print(f"{len(inv.nodes)} nodes in {len(per_rack)} racks: "
              + ", ".join(f"{r} {c}" for r, c in sorted(per_rack.items(), key=lambda x: (len(x[0]), x[0]))))
    ctl = [f"{n.name} ({n.rack})" for n in inv.nodes if n.role.value == "control"]
    out.print(f"controllers: {', '.join(ctl)}")
    out.print(f"Inventory written to {output}")


def register(app: typer.Typer) -> None:
    app.command("layout")(layout_cmd)
