"""`cloudplan layout`: blueprint + site -> inventory (racks, U, names, addresses)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from cloudplan.blueprint import Blueprint
from cloudplan.commands import out
from cloudplan.day2.bringup import bring_up_new, new_nodes
from cloudplan.day2.expand_layout import expand_layout
from cloudplan.errors import SpecError
from cloudplan.inventory import Inventory
from cloudplan.io import load_model, write_model
from cloudplan.layout import Site, layout


def layout_cmd(
    blueprint: Path = typer.Argument(..., help="Blueprint written by `cloudplan size -o`."),
    site: Path = typer.Option(..., "--site", help="Site YAML: networks, rack naming, BMC credentials reference."),
    output: Path = typer.Option(..., "-o", "--output", help="Inventory YAML to write."),
    existing: Path = typer.Option(None, "--existing", help="Inventory of the cloud already standing: with the "
                                  "blueprint of an expansion (`size --installed`), every old node keeps its rack, U, "
                                  "name and addresses and the new ones go into free units first, then new racks."),
    manifests_dir: str = typer.Option("deploy/", "--manifests-dir", help="With --existing: where `cloudplan "
                                      "manifests` writes (the printed bring-up commands use its multinode)."),
) -> None:
    """Place every node of a blueprint in a rack and U, name it, and give it its addresses; with
    --existing, place only what an expansion bought, around the nodes already there.

    Example: cloudplan layout blueprint.yaml --site examples/site.yaml -o inventory.yaml

    Example: cloudplan layout grown.yaml --site examples/site.yaml --existing inventory.yaml -o grown-inventory.yaml
    """
    try:
        bp, where = load_model(Blueprint, blueprint), load_model(Site, site)
        standing = load_model(Inventory, existing) if existing is not None else None
        inv = expand_layout(bp, standing, where) if standing is not None else layout(bp, where)
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
    # A converged control plane's controllers are hyperconverged hosts carrying control too.
    ctl = [f"{n.name} ({n.rack})" for n in inv.nodes if "control" in (n.role.value, *(r.value for r in n.also))]
    out.print(f"controllers: {', '.join(ctl)}")
    if standing is not None:
        new = new_nodes(inv, standing)
        out.print(f"new: {', '.join(f'{n.name} ({n.rack} U{n.u})' for n in new)}")
    out.print(f"Inventory written to {output}")
    if standing is not None:
        steps = bring_up_new(inv, standing, inventory_file=str(output), manifests_dir=manifests_dir,
                             blueprint_file=str(blueprint))
        out.print(f"\n{steps.description}:", markup=False, highlight=False)
        for i, s in enumerate(steps.children, 1):
            out.print(f"{i:3d}. {s.description}\n       {s.command}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("layout")(layout_cmd)
