"""The drain check: can every compute host, and every rack, be emptied by live migration?

For each compute host the question is a bin-packing feasibility problem: its
VMs (items sized (vCPU, RAM MiB) by flavor) must fit in the free capacity of
the other compute hosts (bins, with overcommit already in their capacity).
The packing engine's :func:`~cloudplan.sizing.packing.place` answers it
exactly; this module only frames the question fast enough for thousands of
hosts:

* the other hosts' free capacities are aggregated into bin types by distinct
  (free vCPU, free RAM) with ``max_count`` how many hosts have it, computed
  once for the whole cloud; a check subtracts the drained hosts' own entries;
* cheap necessary conditions (each flavor fits the largest free space, the
  total demand fits the total free space) settle most impossible cases before
  the engine is called, and give the reason in the operator's words.

Batches are grown greedily over the hosts sorted by rack then load; each
batch is checked as a whole against the hosts outside it, with the cloud as
it is (VMs are rebalanced back after each batch, so every batch starts from
the same steady state).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from cloudplan.upgrade.models import (
    MIB_PER_GIB,
    Batch,
    Cloud,
    DrainReport,
    FlavorSize,
    Host,
    HostDrain,
    RackDrain,
    UpgradeDefaults,
)

log = logging.getLogger(__name__)


def _packing():
    # Imported late so the rest of the rehearsal (catalog, plan, report) works
    # while the engine is absent or being rebuilt, and says so clearly.
    try:
        from cloudplan.sizing import packing
    except ImportError as err:  # pragma: no cover - depends on the install
        from cloudplan.errors import UpgradeError
        raise UpgradeError(f"the packing engine (cloudplan.sizing.packing) cannot be imported: {err}") from None
    return packing


@dataclass
class Verdict:
    fits: bool
    reason: str | None
    decided_by: str


def _gib(mib: float) -> str:
    g = mib / MIB_PER_GIB
    return f"{g:.0f}" if abs(g - round(g)) < 0.05 else f"{g:.1f}"


class DrainChecker:
    """Answers "do these VMs fit on all compute hosts but these?" for one cloud."""

    def __init__(self, cloud: Cloud, defaults: UpgradeDefaults):
        self.cloud = cloud
        self.defaults = defaults
        self.flavors = cloud.flavors
        self.by_name = {h.name: h for h in cloud.hosts}
        # Free capacity of every compute host, aggregated once into bin types;
        # a check only adjusts the counts of the entries its drained hosts hold.
        self.free_all: Counter[tuple[int, int]] = Counter(h.free for h in cloud.hosts)
        keys = sorted(self.free_all)
        self._index = {k: i for i, k in enumerate(keys)}
        self._cpu = np.array([k[0] for k in keys], dtype=np.int64)
        self._ram = np.array([k[1] for k in keys], dtype=np.int64)
        self._count = np.array([self.free_all[k] for k in keys], dtype=np.int64)
        packing = _packing()
        self._bin_type = packing.BinType
        self.calls = 0

    def _bins(self, excluded: list[Host], demand: Counter[str]) -> tuple[list, int, int, int, int]:
        """Bin types of the hosts outside ``excluded`` that can hold at least the smallest VM, with
        the largest and total free (vCPU, RAM) among them."""
        count = self._count.copy()
        changed = Counter(self._index[h.free] for h in excluded)
        for i, n in changed.items():
            count[i] -= n
        min_cpu = min(self.flavors[f].vcpus for f in demand)
        min_ram = min(self.flavors[f].ram_mib for f in demand)
        avail = count > 0
        # The largest free space is reported over every other host, usable or not.
        big_cpu = int(self._cpu[avail].max()) if avail.any() else 0
        big_ram = int(self._ram[avail].max()) if avail.any() else 0
        idx = np.flatnonzero(avail & (self._cpu >= min_cpu) & (self._ram >= min_ram))
        if idx.size == 0:
            return [], big_cpu, big_ram, 0, 0
        c, r, n = self._cpu[idx], self._ram[idx], count[idx]
        # No host can take more than the whole demand, so capping capacities at it changes
        # no answer, and merges most bin types into one: the engine gets a small problem.
        need_cpu = sum(self.flavors[f].vcpus * k for f, k in demand.items())
        need_ram = sum(self.flavors[f].ram_mib * k for f, k in demand.items())
        cc, rc = np.minimum(c, need_cpu), np.minimum(r, need_ram)
        keys, inverse = np.unique(cc * (need_ram + 1) + rc, return_inverse=True)
        merged = np.bincount(inverse, weights=n).astype(np.int64)
        bins = [self._bin_type(name=f"free-{int(k // (need_ram + 1))}vcpu-{int(k % (need_ram + 1))}mib",
                               capacity=(int(k // (need_ram + 1)), int(k % (need_ram + 1))), cost=1.0,
                               max_count=int(m)) for k, m in zip(keys.tolist(), merged.tolist())]
        return bins, big_cpu, big_ram, int(c @ n), int(r @ n)

    def fits(self, hosts: list[Host], demand: Counter[str] | None = None, *,
             time_limit_s: float | None = None) -> Verdict:
        """Whether all VMs of ``hosts`` fit on the compute hosts outside ``hosts``."""
        limit = self.defaults.packing_time_limit_s if time_limit_s is None else time_limit_s
        if demand is None:
            demand = Counter()
            for h in hosts:
                demand.update(h.vms)
        demand = Counter({f: n for f, n in demand.items() if n > 0})
        if not demand:
            return Verdict(True, None, "empty")
        bins, big_cpu, big_ram, have_cpu, have_ram = self._bins(hosts, demand)
        reason = self._bound_reason(demand, bins, big_cpu, big_ram, have_cpu, have_ram)
        if reason is not None:
            return Verdict(False, reason, "bound")
        packing = _packing()
        items = [packing.ItemType(name=f, size=(self.flavors[f].vcpus, self.flavors[f].ram_mib), count=n)
                 for f, n in sorted(demand.items())]
        subset = _roomiest(bins, demand, self.flavors)
        if len(subset) < len(bins):
            # Fitting into some of the hosts proves fitting into all of them; try the
            # roomiest few first, so the engine works on a small problem in the common case.
            self.calls += 1
            result = packing.place(items, subset, time_limit_s=limit)
            if result.status in ("optimal", "feasible"):
                return Verdict(True, None, _method(result))
        self.calls += 1
        result = packing.place(items, bins, time_limit_s=limit)
        if result.status in ("optimal", "feasible"):
            return Verdict(True, None, _method(result))
        if result.status == "infeasible":
            return Verdict(False, self._fragmentation_reason(demand, bins), "exact")
        return Verdict(False, f"the packing engine could not decide within {limit:g} s "
                              f"({result.message or result.status}); treat as not drainable", "unknown")

    def _bound_reason(self, demand: Counter[str], bins, big_cpu: int, big_ram: int, have_cpu: int,
                      have_ram: int) -> str | None:
        """A reason when a necessary condition already fails, else None."""
        too_big = [f for f in demand if self.flavors[f].vcpus > big_cpu or self.flavors[f].ram_mib > big_ram]
        if too_big:
            too_big.sort(key=lambda f: (-self.flavors[f].ram_mib, f))
            return "; ".join(self._too_big(f, demand[f], big_cpu, big_ram) for f in too_big)
        if not bins:  # every flavor fits some host alone, but no host fits the smallest in both dimensions
            f = max(demand, key=lambda k: self.flavors[k].ram_mib)
            return self._too_big(f, demand[f], big_cpu, big_ram)
        need_cpu = sum(self.flavors[f].vcpus * n for f, n in demand.items())
        need_ram = sum(self.flavors[f].ram_mib * n for f, n in demand.items())
        if need_ram > have_ram:
            return (f"{self._describe(demand)} need {_gib(need_ram)} GiB, the other hosts have "
                    f"{_gib(have_ram)} GiB free in total where one of them fits")
        if need_cpu > have_cpu:
            return (f"{self._describe(demand)} need {need_cpu} vCPUs, the other hosts have {have_cpu} free "
                    "in total where one of them fits")
        return None

    def _too_big(self, flavor: str, n: int, big_cpu: int, big_ram: int) -> str:
        s = self.flavors[flavor]
        if s.ram_mib > big_ram:
            return (f"{n} x {flavor} need {_gib(s.ram_mib * n)} GiB ({_gib(s.ram_mib)} GiB each), "
                    f"the largest free space elsewhere is {_gib(big_ram)} GiB")
        return (f"{n} x {flavor} need {s.vcpus * n} vCPUs ({s.vcpus} each), "
                f"the largest free space elsewhere is {big_cpu} vCPUs")

    def _fragmentation_reason(self, demand: Counter[str], bins) -> str:
        big = max(demand, key=lambda f: (self.flavors[f].ram_mib, self.flavors[f].vcpus))
        s = self.flavors[big]
        big_ram = max(b.capacity[1] for b in bins)
        holders = sum(b.max_count * min(b.capacity[0] // s.vcpus, b.capacity[1] // s.ram_mib) for b in bins)
        return (f"{demand[big]} x {big} need {_gib(s.ram_mib * demand[big])} GiB, the largest free space elsewhere "
                f"is {_gib(big_ram)} GiB and the free space is fragmented: room for {holders} of them "
                f"alongside the other VMs is not enough")

    def _describe(self, demand: Counter[str]) -> str:
        parts = sorted(demand.items(), key=lambda kv: (-self.flavors[kv[0]].ram_mib, kv[0]))
        shown = ", ".join(f"{n} x {f}" for f, n in parts[:3])
        return shown + (f" and {len(parts) - 3} more flavors" if len(parts) > 3 else "")


# The roomiest bin types tried first hold at least this multiple of the demand.
SUBSET_HEADROOM = 2.0
SUBSET_MIN_TYPES = 8


def _roomiest(bins: list, demand: Counter[str], flavors: dict[str, FlavorSize]) -> list:
    need_cpu = sum(flavors[f].vcpus * n for f, n in demand.items()) * SUBSET_HEADROOM
    need_ram = sum(flavors[f].ram_mib * n for f, n in demand.items()) * SUBSET_HEADROOM
    out, cpu, ram = [], 0, 0
    for b in sorted(bins, key=lambda b: (-b.capacity[1], -b.capacity[0])):
        out.append(b)
        cpu += b.capacity[0] * b.max_count
        ram += b.capacity[1] * b.max_count
        if cpu >= need_cpu and ram >= need_ram and len(out) >= SUBSET_MIN_TYPES:
            break
    return out


def _method(result) -> str:
    return str(result.stats.get("method", "exact"))


def host_migration_seconds(host: Host, defaults: UpgradeDefaults) -> float:
    """Time to live-migrate a host's VMs, ``parallel_migrations_per_host`` at a time.

    Longest-first onto the least busy lane (LPT): within 4/3 of the best
    schedule, and exact for the common case of a few large VMs.
    """
    lanes = [0.0] * defaults.parallel_migrations_per_host
    for ram in sorted(host.vm_ram_mib, reverse=True):
        i = min(range(len(lanes)), key=lanes.__getitem__)
        lanes[i] += defaults.vm_migration_seconds(ram)
    return max(lanes)


def _reason(host: Host, verdict: Verdict) -> str:
    return f"host {host.name} cannot be drained: {verdict.reason}"


def check_hosts(checker: DrainChecker) -> dict[str, Verdict]:
    return {h.name: checker.fits([h]) for h in checker.cloud.hosts}


def check_racks(checker: DrainChecker) -> list[RackDrain]:
    racks: dict[str, list[Host]] = {}
    for h in checker.cloud.hosts:
        racks.setdefault(h.rack, []).append(h)
    out = []
    for rack, hosts in sorted(racks.items()):
        v = checker.fits(hosts)
        out.append(RackDrain(rack=rack, hosts=len(hosts), vms=sum(h.vm_count for h in hosts), drainable=v.fits,
                             reason=None if v.fits else f"rack {rack} cannot be drained at once: {v.reason}"))
    return out


def max_batch_hosts(n_hosts: int, defaults: UpgradeDefaults) -> int:
    return max(1, int(n_hosts * defaults.max_batch_fraction + 1e-9))


def make_batches(checker: DrainChecker, drainable: list[Host], cap: int, guard=None) -> list[list[Host]]:
    """Greedy batches: the longest prefix of the remaining hosts (by rack, then load) that drains at once.

    Draining more hosts only needs more room, so "fits" is (nearly) monotone in
    the prefix length. Batches of one cloud tend to be alike, so the search
    starts at the last batch's size and gallops from there: in the common case
    two checks (that size fits, one more does not) settle a batch. A probe the
    engine cannot decide quickly counts as "does not fit": a smaller batch is
    always safe, it only takes longer.

    With a :class:`~cloudplan.upgrade.ceph.CephGuard`, a host whose OSDs would
    take one failure domain too many of a tier down waits for a later batch:
    the candidates are the remaining hosts the guard admits in order, and any
    prefix of them is admitted too, so the search stays monotone.
    """
    remaining = sorted(drainable, key=lambda h: (h.rack, h.load, h.name))
    batches: list[list[Host]] = []
    guess = cap
    while remaining:
        candidates = _admitted(remaining, cap, guard)
        if not candidates:  # only hosts Ceph cannot lose at all are left: the rehearsal says so
            break
        hi = min(cap, len(candidates))

        def fits(k: int) -> bool:
            return k <= 1 or checker.fits(candidates[:k], time_limit_s=checker.defaults.batch_time_limit_s).fits

        k = _largest_prefix(fits, min(guess, hi), hi)
        taken = {h.name for h in candidates[:k]}
        batches.append(candidates[:k])
        remaining = [h for h in remaining if h.name not in taken]
        guess = k
    return batches


def _admitted(remaining: list[Host], cap: int, guard) -> list[Host]:
    """The first ``cap`` hosts of ``remaining`` that may be down together as far as Ceph is concerned."""
    if guard is None:
        return remaining[:cap]
    state = guard.new_state()
    out = []
    for h in remaining:
        if guard.admits(state, h.name):
            guard.add(state, h.name)
            out.append(h)
            if len(out) == cap:
                break
    return out


def _largest_prefix(fits, guess: int, hi: int) -> int:
    """The largest k in [1, hi] with fits(k), for a monotone ``fits``, searching from ``guess``."""
    if fits(guess):
        lo, step = guess, 1
        while lo < hi and fits(min(hi, lo + step)):
            lo = min(hi, lo + step)
            step *= 2
        top = min(hi, lo + step) - 1 if lo < hi else lo    # lo + step failed (or lo == hi)
    else:
        top, step = guess - 1, 1
        while top > 1 and not fits(max(1, top - step + 1)):
            top = max(1, top - step)
            step *= 2
        lo = max(1, top - step + 1)
    while lo < top:                                         # fits(lo), not fits(top + 1)
        mid = (lo + top + 1) // 2
        if fits(mid):
            lo = mid
        else:
            top = mid - 1
    return lo


def _batch(index: int, hosts: list[Host], checker: DrainChecker, migration: dict[str, float], guard=None) -> Batch:
    defaults = checker.defaults
    free = checker.free_all.copy()
    free.subtract(h.free for h in hosts)
    free_cpu = sum(c * n for (c, _), n in free.items() if n > 0)
    free_ram = sum(r * n for (_, r), n in free.items() if n > 0)
    need_cpu = sum(h.used_vcpus for h in hosts)
    need_ram = sum(h.used_ram_mib for h in hosts)
    return Batch(index=index, hosts=[h.name for h in hosts], racks=sorted({h.rack for h in hosts}),
                 vms=sum(h.vm_count for h in hosts), ram_gib=round(need_ram / MIB_PER_GIB, 1),
                 migration_seconds=round(max(migration[h.name] for h in hosts), 1),
                 reboot_seconds=float(defaults.host_reboot_seconds),
                 free_ram_gib_after=round((free_ram - need_ram) / MIB_PER_GIB, 1),
                 free_vcpus_after=free_cpu - need_cpu,
                 ceph_domains_down={} if guard is None else guard.domains_down(h.name for h in hosts))


def storage_batches(first_index: int, storage_hosts: list[tuple[str, str]], cap: int, guard,
                    defaults: UpgradeDefaults, free_ram_gib: float, free_vcpus: int) -> list[Batch]:
    """Batches of the hosts that run no VMs (the storage group), by rack then name, each taking
    no more Ceph failure domains down than the guard allows."""
    remaining = sorted(storage_hosts, key=lambda hr: (hr[1], hr[0]))
    out: list[Batch] = []
    while remaining:
        state = guard.new_state() if guard is not None else None
        taken = []
        for name, rack in remaining:
            if state is None or guard.admits(state, name):
                if state is not None:
                    guard.add(state, name)
                taken.append((name, rack))
                if len(taken) == cap:
                    break
        if not taken:
            break
        names = [n for n, _ in taken]
        out.append(Batch(index=first_index + len(out), hosts=names, racks=sorted({r for _, r in taken}), vms=0,
                         ram_gib=0.0, migration_seconds=0.0, reboot_seconds=float(defaults.host_reboot_seconds),
                         free_ram_gib_after=free_ram_gib, free_vcpus_after=free_vcpus, kind="storage",
                         ceph_domains_down={} if guard is None else guard.domains_down(names)))
        done = set(names)
        remaining = [hr for hr in remaining if hr[0] not in done]
    return out


def drain_check(cloud: Cloud, defaults: UpgradeDefaults | None = None, guard=None,
                storage_hosts: list[tuple[str, str]] | None = None) -> DrainReport:
    """Per host, per rack, batches and their durations for ``cloud``; with ``guard``, no batch
    takes more Ceph failure domains down than each tier's pools allow. ``storage_hosts``
    ((name, rack) of hosts without VMs) get batches of their own after the compute hosts'."""
    defaults = defaults or UpgradeDefaults()
    t0 = time.perf_counter()
    checker = DrainChecker(cloud, defaults)
    verdicts = check_hosts(checker)
    racks = check_racks(checker)
    migration = {h.name: host_migration_seconds(h, defaults) for h in cloud.hosts}
    drainable = [h for h in cloud.hosts if verdicts[h.name].fits]
    cap = max_batch_hosts(len(cloud.hosts), defaults)
    groups = make_batches(checker, drainable, cap, guard)
    batches = [_batch(i + 1, g, checker, migration, guard) for i, g in enumerate(groups)]
    if storage_hosts:
        free_cpu = sum(c * n for (c, _), n in checker.free_all.items())
        free_ram = sum(r * n for (_, r), n in checker.free_all.items())
        batches += storage_batches(len(batches) + 1, storage_hosts, cap, guard, defaults,
                                   round(free_ram / MIB_PER_GIB, 1), free_cpu)
    batch_of = {name: b.index for b in batches for name in b.hosts}
    hosts = []
    reasons = []
    for h in cloud.hosts:
        v = verdicts[h.name]
        if not v.fits:
            reasons.append(_reason(h, v))
        fc, fr = h.free
        hosts.append(HostDrain(
            name=h.name, rack=h.rack, vms=h.vm_count, used_vcpus=h.used_vcpus,
            used_ram_gib=round(h.used_ram_mib / MIB_PER_GIB, 1), free_vcpus=fc,
            free_ram_gib=round(fr / MIB_PER_GIB, 1), drainable=v.fits, batch=batch_of.get(h.name),
            migration_seconds=round(migration[h.name], 1), reason=None if v.fits else reasons[-1],
            decided_by=v.decided_by))
    seconds = time.perf_counter() - t0
    log.info("drain check: %d hosts, %d VMs, %d batches, %d packing calls in %.2f s",
             len(cloud.hosts), cloud.vm_count, len(batches), checker.calls, seconds)
    unbatched = [h.name for h in drainable if h.name not in batch_of]
    unbatched += [n for n, _ in storage_hosts or () if n not in batch_of]
    return DrainReport(hosts=hosts, racks=racks, batches=batches, max_batch_hosts=cap, reasons=reasons,
                       check_seconds=round(seconds, 3), packing_calls=checker.calls, unbatched=unbatched)


__all__ = ["DrainChecker", "drain_check", "host_migration_seconds", "make_batches", "max_batch_hosts",
           "FlavorSize"]
