"""`cloudplan replace`: check that a node can go, print how to take it out, and take its successor
into the inventory under the same name."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cloudplan.blueprint import Blueprint
from cloudplan.commands import day2_options as opts
from cloudplan.commands import err, out
from cloudplan.day2.replace import Replacement, check_replacement, find_node, write_replacement
from cloudplan.inventory import Inventory, Role
from cloudplan.io import load_model
from cloudplan.upgrade import load_cloud
from cloudplan.upgrade.models import PlanStep, UpgradeDefaults


def replace(
    node: str = typer.Argument(..., help="The node to replace, by its inventory name."),
    inventory: Path = typer.Option(..., "--inventory", help="Inventory YAML; rewritten (atomically) with the "
                                   "successor's BMC and MAC unless -o is given."),
    bmc_address: str = typer.Option(..., "--bmc-address", help="BMC address of the successor machine."),
    mac: str = typer.Option(..., "--mac", help="Provisioning NIC MAC of the successor machine."),
    blueprint: Path = typer.Option(None, "--blueprint", help="Blueprint (`cloudplan size -o`): Ceph protection, "
                                   "drive sizes and data, and without --placement the planned VM placement."),
    placement: opts.Placement = None,
    flavors: opts.Flavors = None,
    hypervisors: opts.Hypervisors = None,
    host_cores: opts.HostCores = None,
    host_ram_gib: opts.HostRamGib = None,
    snapshot: Path = typer.Option(None, "--snapshot", help="A `cloudplan capacity` snapshot directory: the live "
                                  "OSD capacities (`ceph osd df tree`) and data (`ceph df`)."),
    manifests_dir: str = typer.Option("deploy/", "--manifests-dir", help="Where `cloudplan manifests` writes "
                                      "(the printed commands use its multinode)."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the new inventory here instead."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and print; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks and steps as JSON."),
) -> None:
    """Check that NODE's VMs can be drained and its OSDs can go, print the decommission steps,
    write the inventory with its successor's BMC and MAC under the same name, and print the
    commands that bring the successor up.

    Exits 0 when the node can go, 3 when it cannot (nothing written), 1 on bad input.

    Example: cloudplan replace r1-hci-02 --inventory inv.yaml --bmc-address 10.30.0.77
    --mac 52:54:00:aa:bb:cc --blueprint bp.yaml
    """
    inv = load_model(Inventory, inventory)
    bp = load_model(Blueprint, blueprint) if blueprint else None
    target = find_node(inv, node, str(inventory))
    cloud = None
    if target.role == Role.compute and (placement or flavors or (bp is not None and bp.placement is not None)):
        cloud = load_cloud(inv, placement=placement, flavors=flavors, hypervisors=hypervisors,
                           host_cores=host_cores, host_ram_gib=host_ram_gib,
                           blueprint=blueprint if placement is None and flavors is None else None)
    # The ratios only matter for compute figures read without Placement files; Ceph's are read as they are.
    snap = opts.snapshot_for(snapshot, bp.workload.policy if bp else None) if snapshot is not None else None
    written = output or inventory
    result = check_replacement(inv, target.name, bmc_address=bmc_address, mac=mac, cloud=cloud, blueprint=bp,
                               snapshot=snap, defaults=UpgradeDefaults(), inventory_file=str(written),
                               manifests_dir=manifests_dir, blueprint_file=str(blueprint) if blueprint else None)
    if result.verdict == "go" and not dry_run:
        err.print(f"wrote {write_replacement(inv, result, written)}", markup=False, highlight=False)
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        _print(result, dry_run)
    raise typer.Exit(0 if result.verdict == "go" else opts.EXIT_NO_GO)


def _print(r: Replacement, dry_run: bool) -> None:
    say = lambda s: out.print(s, markup=False, highlight=False)  # noqa: E731
    say(f"Replace {r.node} ({r.role.value}, rack {r.rack}): {r.verdict}")
    if r.drainable is not None:
        say(f"  VMs: {r.vms} ({r.vm_ram_gib:g} GiB) " + ("fit on the other hosts" if r.drainable else "do not fit"))
    for o in r.osds:
        data = "" if o.per_copy_tib_after is None else (f"; a copy holds {o.data_per_copy_tib:,.1f} TiB of "
                                                        f"{o.per_copy_tib_after:,.1f} TiB left")
        say(f"  Ceph {o.tier} ({o.scheme}): {o.domains_before} -> {o.domains_after} {o.failure_domain}s for "
            f"{o.size} copies{data}: {'ok' if o.ok else 'refused'}")
    for reason in r.reasons:
        say(f"  - {reason}")
    for w in r.warnings:
        say(f"  warning: {w}")
    if r.verdict != "go":
        say("Nothing written.")
        return
    _steps(say, r.decommission)
    if dry_run:
        say("(dry run: the inventory was not written)")
    _steps(say, r.bring_up)


def _steps(say, root: PlanStep) -> None:
    say("")
    say(root.description + ":")
    for i, s in enumerate(root.children, 1):
        say(f"{i:3d}. {s.description}")
        if s.command:
            say(f"       {s.command}")


def register(app: typer.Typer) -> None:
    app.command("replace")(replace)
