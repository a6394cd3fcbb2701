"""`cloudplan bench upgrade`: time the drain check and plan on a large synthetic cloud."""

from __future__ import annotations

import time

import typer

from cloudplan.commands import bench_app, out
from cloudplan.upgrade.synthetic import DEFAULT_SEED, synthetic_cloud, time_rehearsal


@bench_app.command("upgrade")
def bench_upgrade(
    hosts: int = typer.Option(1000, "--hosts", min=1, help="Compute hosts in the synthetic cloud."),
    vms: int = typer.Option(20000, "--vms", min=0, help="VMs placed on them."),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Random seed (same seed, same cloud)."),
) -> None:
    """Time the upgrade drain check (per host, per rack, batches) and plan on a synthetic cloud.

    Example: cloudplan bench upgrade --hosts 1000 --vms 20000
    """
    t0 = time.perf_counter()
    inventory, cloud = synthetic_cloud(hosts, vms, seed=seed)
    gen = time.perf_counter() - t0
    figures = time_rehearsal(inventory, cloud)
    d = figures["drain"]
    out.print(f"synthetic cloud: {len(cloud.hosts)} compute hosts in {len({h.rack for h in cloud.hosts})} racks, "
              f"{cloud.vm_count} VMs (seed {seed}), generated in {gen:.2f} s", markup=False, highlight=False)
    out.print(f"drain check: {sum(h.drainable for h in d.hosts)}/{len(d.hosts)} hosts drainable, "
              f"{sum(r.drainable for r in d.racks)}/{len(d.racks)} racks, {len(d.batches)} batches "
              f"(largest {d.largest_batch}), {d.packing_calls} packing calls", markup=False, highlight=False)
    out.print(f"drain check + plan: {figures['seconds']:.2f} s", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """The command hangs off the shared `bench` group, already on the app."""
