"""`cloudplan bench lab`: time a zero-touch bring-up of the virtual rack (needs root)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cloudplan.commands import bench_app, out


@bench_app.command("lab")
def bench_lab(
    nodes: int = typer.Option(3, "--nodes", "-n", min=1, max=50, help="Machines in the virtual rack."),
    cache: Path = typer.Option(None, "--cache", help="Installer image cache (default: ~/.cache/cloudplan/lab)."),
    boot_timeout: float = typer.Option(300.0, "--boot-timeout", min=1, help="Seconds to phone home per node."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    image_cache: Path = typer.Option(None, "--image", help="Deploy an OS image from this `cloudplan image build` "
                                     "cache (the deploy ramdisk writes it, the node reboots from disk); prints "
                                     "each step's share too."),
    ramdisk_cache: Path = typer.Option(None, "--ramdisk-cache", help="With --image: the deploy ramdisk's cache."),
) -> None:
    """Bring a virtual rack up from power-off to deployed with `cloudplan provision`, then remove it;
    prints the time from the first power-on to the last node deployed (with --image: an installed
    OS, and the share of ramdisk boot, image write, reboot, first boot and SSH verification).

    Example: sudo cloudplan bench lab --nodes 3 --image .cache/os-image
    """
    from cloudplan.lab.bench import bring_up

    fig = bring_up(nodes, cache_dir=cache, boot_timeout_s=boot_timeout, image_cache=image_cache,
                   ramdisk_cache=ramdisk_cache)
    if as_json:
        out.print_json(json.dumps(fig))
        return
    out.print(f"{fig['deployed']}/{fig['nodes']} nodes deployed (exit code {fig['exit_code']}); first power-on to "
              f"last node deployed: {fig['first_power_to_last_deployed_s']:.1f} s; whole provision command "
              f"{fig['command_s']:.1f} s", markup=False, highlight=False)
    per = ", ".join(f"{n} {s:.1f} s" for n, s in sorted(fig["per_node_s"].items()))
    out.print(f"per node (power-on to deployed): {per}", markup=False, highlight=False)
    for name, st in fig.get("steps", {}).items():
        out.print(f"  {name}: {st['mean_s']:.1f} s per node (max {st['max_s']:.1f} s), {st['share']:.0%}",
                  markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """The command hangs off the shared `bench` group, already on the app."""
