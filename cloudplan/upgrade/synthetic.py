"""A large, seeded synthetic cloud for the upgrade benchmark and scale tests."""

from __future__ import annotations

import random
import time
from typing import Any

from cloudplan.inventory import Inventory
from cloudplan.upgrade.drain import drain_check
from cloudplan.upgrade.models import Cloud, FlavorSize, Host, UpgradeDefaults
from cloudplan.upgrade.plan import build_plan
from cloudplan.upgrade.releases import load_catalog

DEFAULT_SEED = 20260401
HOSTS_PER_RACK = 20
# (flavor, share of VMs): a general-purpose mix with a few memory-heavy VMs.
FLAVOR_MIX: list[tuple[FlavorSize, float]] = [
    (FlavorSize("m1.small", 1, 2048), 0.30), (FlavorSize("m1.medium", 2, 4096), 0.30),
    (FlavorSize("m1.large", 4, 16384), 0.20), (FlavorSize("m1.xlarge", 8, 32768), 0.12),
    (FlavorSize("r1.2xlarge", 8, 65536), 0.06), (FlavorSize("r1.4xlarge", 16, 262144), 0.02),
]
# Two host generations: 64 threads with 512 GiB, 96 threads with 768 GiB.
HOST_SIZES = [(64, 512), (96, 768)]


def synthetic_cloud(n_hosts: int, n_vms: int, *, seed: int = DEFAULT_SEED,
                    defaults: UpgradeDefaults | None = None) -> tuple[Inventory, Cloud]:
    """``n_hosts`` compute hosts in racks of 20 with ``n_vms`` VMs placed at random where they fit."""
    defaults = defaults or UpgradeDefaults()
    rng = random.Random(seed)
    hosts = []
    for i in range(n_hosts):
        cores, ram_gib = HOST_SIZES[i % len(HOST_SIZES)]
        vcpus, ram = defaults.host_capacity(cores, ram_gib * 1024)
        hosts.append(Host(name=f"r{i // HOSTS_PER_RACK + 1:02d}-cmp-{i % HOSTS_PER_RACK + 1:02d}",
                          rack=f"r{i // HOSTS_PER_RACK + 1:02d}", vcpu_capacity=vcpus, ram_mib_capacity=ram))
    flavors = [f for f, _ in FLAVOR_MIX]
    weights = [w for _, w in FLAVOR_MIX]
    for flavor in rng.choices(flavors, weights=weights, k=n_vms):
        for _ in range(20):  # a few random tries, as a scheduler with random host subsets would
            h = hosts[rng.randrange(n_hosts)]
            fc, fr = h.free
            if fc >= flavor.vcpus and fr >= flavor.ram_mib:
                h.add(flavor)
                break
    nodes: list[dict[str, Any]] = [
        {"name": f"ctl{i:02d}", "role": "control", "rack": f"r{i:02d}",
         "bmc": {"address": f"10.30.0.{i}", "username": "admin", "password_env": "BMC_PASSWORD"}}
        for i in (1, 2, 3)]
    nodes += [{"name": h.name, "role": "compute", "rack": h.rack,
               "bmc": {"address": f"10.31.{i // 250}.{i % 250 + 1}", "username": "admin",
                       "password_env": "BMC_PASSWORD"}} for i, h in enumerate(hosts)]
    inventory = Inventory.model_validate({"name": f"synthetic-{n_hosts}", "nodes": nodes})
    cloud = Cloud(hosts=hosts, flavors={f.name: f for f in flavors}, source=f"synthetic (seed {seed})")
    return inventory, cloud


def time_rehearsal(inventory: Inventory, cloud: Cloud, defaults: UpgradeDefaults | None = None,
                   from_release: str = "2025.2", to_release: str = "2026.1") -> dict[str, Any]:
    """Wall time of the drain check plus the plan (the part that grows with the cloud)."""
    defaults = defaults or UpgradeDefaults()
    catalog = load_catalog()
    hop = catalog.hops(catalog.shortest_chain(catalog.get(from_release), catalog.get(to_release)))[0]
    t0 = time.perf_counter()
    drain = drain_check(cloud, defaults)
    plan = build_plan(hop, inventory, drain, defaults=defaults)
    return {"seconds": time.perf_counter() - t0, "drain": drain, "plan": plan}
