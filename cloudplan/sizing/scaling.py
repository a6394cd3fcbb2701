"""A seeded packing instance for the scaling benchmark: many VMs of few flavors.

The engine works on flavor types with counts, never on single VMs, so the
same flavors at 100 times the count must take no longer: this builds the
instance at any count from one seed so the two can be compared.
"""

from __future__ import annotations

import random
import time

from cloudplan.sizing.packing import BinType, ItemType, pack, verify

# Host kinds: vCPUs after overcommit and RAM GiB, with a price that rewards the larger
# hosts a little (as real price lists do per core).
HOST_KINDS = (BinType("small", (96, 384), 2.0), BinType("mid", (192, 768), 3.4),
              BinType("large", (384, 1536), 6.1))
VCPU_CHOICES = (1, 2, 4, 8, 16, 32)
GIB_PER_VCPU_CHOICES = (1, 2, 4, 8)


def flavor_mix(n_flavors: int, per_flavor: int, seed: int) -> list[ItemType]:
    """``n_flavors`` flavors (vCPUs, RAM GiB) drawn from ``seed``, each ``per_flavor`` times."""
    rng = random.Random(seed)
    sizes = [(rng.choice(VCPU_CHOICES), rng.choice(GIB_PER_VCPU_CHOICES)) for _ in range(n_flavors)]
    return [ItemType(f"f{k}", (c, c * r), per_flavor) for k, (c, r) in enumerate(sizes)]


def run(n_flavors: int, vm_counts: list[int], *, seed: int = 7, time_limit_s: float = 5.0) -> list[dict]:
    """Pack the same flavor mix at each total VM count; every answer is verified."""
    rows = []
    for vms in vm_counts:
        items = flavor_mix(n_flavors, max(1, vms // n_flavors), seed)
        t0 = time.perf_counter()
        res = pack(items, list(HOST_KINDS), time_limit_s=time_limit_s)
        seconds = time.perf_counter() - t0
        verify(res, items, list(HOST_KINDS))
        rows.append({"vms": sum(it.count for it in items), "flavors": n_flavors, "hosts": res.bins,
                     "cost": round(res.cost, 2), "lower_bound": round(res.lower_bound, 2),
                     "gap": round(res.gap, 5), "status": res.status, "seconds": round(seconds, 2)})
    return rows
