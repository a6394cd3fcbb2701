"""`cloudplan size`: workload + catalog -> costed Blueprint.

The pipeline: options (every buildable node, pruned) -> MILP (build, solve,
extract) -> exact placement check -> Blueprint with capacity and cost.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloudplan.blueprint import (Blueprint, CableLine, ControlPlaneSizing, DriveLine, NodeGroup, NodeRole, RackGroup,
                                 SwitchGroup)
from cloudplan.catalog import Catalog, SwitchRole
from cloudplan.cost import price_plan
from cloudplan.errors import Infeasible, SolverError
from cloudplan.layout import rack_plan
from cloudplan.sizing import control, diagnose, fabric, fit, milp, traffic
from cloudplan.sizing.capacity import compute_capacity, storage_tiers
from cloudplan.sizing.tiers import metadata_home, tier_demands
from cloudplan.sizing.options import NodeOption, build_options
from cloudplan.spec import FailureDomain, Tier, Workload

log = logging.getLogger(__name__)

# Rack counts tried above the first feasible one when the failure domain is a rack.
RACK_SEARCH_SPAN = 200
RACK_MAX_PROBES = 12
# Until one rack count has a plan, each probe may take this long (a plan must be found, or the
# count shown infeasible); later probes only need to beat the best plan and get RACK_PROBE_TIME_FACTOR
# times as long as its MILP took (at least RACK_PROBE_MIN_S): the solver's speed on this machine,
# under its current load, sets the budget rather than a fixed number of seconds.
RACK_FIRST_PLAN_TIME_S = 20.0
RACK_PROBE_MIN_S = 1.0
RACK_PROBE_TIME_FACTOR = 1.5
RACK_PROBE_GAP = 0.005
# Once a rack count has a plan, the counts from the first to this many above it are ranked by the
# MILP restricted to that plan's configurations (a few integer variables: milliseconds each), and
# the full MILP is solved at the RACK_FULL_PROBES best-ranked counts.
RACK_SCAN_SPAN = 24
RACK_SCAN_TIME_S = 1.0
RACK_FULL_PROBES = 2
# Rounds of "add capacity, solve again" when the exact placement fails.
MAX_FIT_ROUNDS = 12
REPAIR_GAP = 0.005
# A repair that leaves the plan within this share of the aggregate MILP's lower bound keeps
# the plan's configurations (plain bounds, one fast solve): no plan over the MILP's candidates
# costs less than that bound, so a search for other configurations could save at most this share.
KEEP_CONFIGS_WITHIN = 0.02
# Hyperconverged builds (cheapest by LP reduced cost) that join the MILP's candidates.
HCI_CANDIDATES = 20
# Relative MIP gap the MILPs stop at: tight enough that, after an exact-placement repair,
# the plan's gap to the first MILP's lower bound (which holds for every plan) stays under 0.5 %.
DEFAULT_GAP = 0.0005


def demand_for(wl: Workload) -> milp.Demand:
    """Grown demand in the units node options offer (raw TiB per CRUSH copy, device IOPS)."""
    raw, iops, copies, per_copy = {}, {}, {}, {}
    for td in tier_demands(wl):
        if td.usable_tib > 0:
            copies[td.tier], per_copy[td.tier], raw[td.tier] = td.copies, td.per_copy_tib, td.raw_tib
        if td.iops:
            iops[td.tier] = td.iops          # options offer client IOPS at the tier's mix and penalty
    return milp.Demand(
        vcpu=sum(wl.grown_count(f) * f.vcpus for f in wl.flavors),
        ram_gib=sum(wl.grown_count(f) * wl.vm_ram_gib(f) for f in wl.flavors),
        raw_tib=raw, client_iops=iops,
        min_tier_hosts=max(copies.values()) + 1 if copies else 0,
        min_vm_hosts=control.EDGE_HOSTS if wl.policy.converged_control_plane else 0,
        flavors=[(f.name, f.vcpus, wl.vm_ram_gib(f), wl.grown_count(f)) for f in wl.flavors if wl.grown_count(f)],
        copies=copies, per_copy_tib=per_copy)


@dataclass
class Scope:
    """Over what a MILP's plan is optimal, and what bound holds for the whole catalog."""

    candidates: int                    # configurations the MILP saw
    total: int                         # configurations in the catalog after pruning
    candidate_bound_usd: float         # no plan over the candidates costs less
    catalog_bound_usd: float | None    # no plan over the whole catalog costs less (None: not known)
    rack_counts: str | None = None     # rack failure domain: which rack count the bounds are for
    racks_tried: list[int] | None = None

    def describe(self) -> str:
        racks = ""
        if self.rack_counts:
            racks = (f", for {self.rack_counts} (the best of the rack counts tried: "
                     f"{', '.join(map(str, self.racks_tried or []))})")
        if self.candidates == self.total:
            return f"solved over all {self.total} configurations{racks}"
        return (f"solved over {self.candidates} of {self.total} configurations (all compute and storage builds and "
                f"the {HCI_CANDIDATES} hyperconverged builds the LP relaxation ranks best){racks}")


def solve_exact(build: Callable[[list[NodeOption]], milp.Model], options: list[NodeOption], solver: str,
                time_limit_s: float, gap: float) -> tuple[milp.Solution, Scope]:
    """Solve over a candidate set chosen by the LP, with a lower bound for the whole catalog.

    The LP relaxation over every option gives a bound z_lp and reduced costs d_j >= 0
    of the options it leaves at zero. Hyperconverged builds multiply compute bases by
    drives and fills, so only the ones with the smallest d_j (plus any the LP uses) join
    the compute and storage configurations in the MILP. A plan that buys a left-out
    option j costs at least z_lp + d_j, so every plan costs at least
    min(candidates' MILP bound, z_lp + min d_j over the options left out): a bound for
    the whole catalog. (Pricing more builds in does not help while the LP is this far
    below the plans: the full-catalog MILP does not solve in seconds.)
    """
    lp = milp.relax(build(options))
    cands = _candidates(options, lp)
    chosen = {o.key for o in cands}
    sol = milp.solve(build(cands), solver, time_limit_s, gap)
    left_out = [lp.reduced_cost[o.key] for o in options if o.key not in chosen and o.role == NodeRole.hyperconverged]
    cand_bound = _lower_bound(sol, gap)
    catalog = min(cand_bound, lp.objective_usd + min(left_out)) if left_out else cand_bound
    scope = Scope(len(cands), len(options), cand_bound, max(catalog, lp.objective_usd))
    log.info("LP bound %.0f, plan %.0f, catalog bound %.0f, %s", lp.objective_usd, sol.objective_usd,
             scope.catalog_bound_usd, scope.describe())
    return sol, scope


def _builder(wl: Workload, cat: Catalog, demand: milp.Demand, fixed: milp.Fixed, fixed_racks=None,
             min_hosts: dict[str, int] | None = None, hard: bool = False, min_racks: int = 1):
    def build(opts: list[NodeOption]) -> milp.Model:
        return milp.build(opts, demand, fixed, cat, wl.horizon_months, wl.policy.node_penalty_usd,
                          fixed_racks=fixed_racks, max_racks=wl.policy.max_racks,
                          max_configs=wl.policy.max_configs_per_role, min_counts=min_hosts, hard_min=hard,
                          min_racks=min_racks)
    return build


def _candidates(options: list[NodeOption], lp: milp.Relaxation) -> list[NodeOption]:
    """Every compute and storage build, and the hyperconverged builds the LP ranks best (or uses)."""
    hci = sorted((o for o in options if o.role == NodeRole.hyperconverged),
                 key=lambda o: (lp.reduced_cost[o.key], o.key))
    chosen = {o.key for o in hci[:HCI_CANDIDATES]} | lp.support
    return [o for o in options if o.role != NodeRole.hyperconverged or o.key in chosen]


def _first_plan(probe, first: int, last: int) -> int | None:
    """The first rack count with a plan, walking up from ``first`` in steps 1, 1, 2, 4, ...:
    below the first feasible count each probe must prove infeasibility, which costs as much as
    a solve, so the walk leaps; the counts it leaps over are ranked with the rest afterwards."""
    R, step = first, 1
    for i in range(RACK_MAX_PROBES):
        if R > last:
            return None
        if probe(R) is not None:
            return R
        R += step
        step *= 2 if i >= 1 else 1
    return None


def _rank_rack_counts(restricted, counts: list[int]) -> list[int]:
    """Rack counts by the cost of their plan over a few configurations, cheapest first (counts
    without such a plan left out). A ranking only: the plan returned comes from the full MILP."""
    costs = []
    for R in counts:
        try:
            costs.append((restricted(R).objective_usd, R))
        except (Infeasible, SolverError):
            continue
    return [R for _, R in sorted(costs)]


def _solve_rack_domain(wl, cat, options, demand, fixed, solver, time_limit_s, gap, progress, min_hosts=None,
                       hard=False, min_racks: int = 1, hint: tuple[str, int] | None = None
                       ) -> tuple[milp.Solution, Scope]:
    """Rack count R is fixed per MILP (it makes the spread constraints linear); search R.

    One LP relaxation of the host failure domain (a losing a rack costs at least as much)
    picks the rack model (the one its racks are mostly of), the candidate builds and the
    first R; :func:`_first_plan` finds a rack count with a plan, :func:`_rank_rack_counts` ranks
    the others by its configurations and the full MILP probes the best-ranked. Repair rounds (``hint``: the
    model and R found before) probe that R only, or ``min_racks`` when the layout asked for more.
    """
    if cat.cheapest(SwitchRole.spine) is None:
        raise Infeasible("failure_domain: rack needs two racks or more, and the catalog has no spine switch "
                         "to join them", requirement="policy.failure_domain")
    host_lp = milp.relax(_builder(wl, cat, demand, fixed)(options))
    cands = _candidates(options, host_lp)
    by_name = {r.name: r for r in cat.racks}
    model = by_name[hint[0]] if hint else by_name[max(sorted(host_lp.racks_by_model),
                                                       key=lambda k: host_lp.racks_by_model[k])]
    first = max(2, demand.min_tier_hosts, math.ceil(host_lp.racks - 1e-6), min_racks)
    last = wl.policy.max_racks or first + RACK_SEARCH_SPAN
    tried: dict[int, milp.Solution | None] = {}

    def probe(R: int, limit_s: float | None = None) -> milp.Solution | None:
        if R in tried or not first <= R <= last:
            return tried.get(R)
        if limit_s is None:
            leader = best()
            limit_s = RACK_FIRST_PLAN_TIME_S if leader is None else max(
                RACK_PROBE_MIN_S, RACK_PROBE_TIME_FACTOR * tried[leader].seconds)
        if progress:
            progress(f"rack failure domain: trying {R} x {model.name}")
        # Each rack count is one probe of a search: a 0.5 % gap is enough to rank them, and only a
        # plan cheaper than the best so far matters, so the solver may stop as soon as its bound
        # shows there is none (rack counts away from the best end at the root).
        probe_gap = max(gap, RACK_PROBE_GAP)
        leader = best()
        cutoff = tried[leader].objective_usd if leader is not None else None
        try:
            tried[R] = milp.solve(_builder(wl, cat, demand, fixed, (model, R), min_hosts, hard)(cands), solver,
                                  min(time_limit_s, limit_s), probe_gap, cutoff_usd=cutoff)
        except (Infeasible, SolverError):
            tried[R] = None          # infeasible, no plan found within the probe's time, or none beats the best
        return tried[R]

    def best() -> int | None:
        found = [(s.objective_usd, R) for R, s in tried.items() if s is not None]
        return min(found)[1] if found else None

    def restricted(R: int, keys: set[str]) -> milp.Solution:
        few = [o for o in cands if o.key in keys]
        return milp.solve(_builder(wl, cat, demand, fixed, (model, R), min_hosts, hard)(few), solver,
                          min(time_limit_s, RACK_SCAN_TIME_S), max(gap, RACK_PROBE_GAP))

    if hint:
        # A repair round: the rack count is settled; give its MILP the full time limit.
        R0 = max(hint[1], first)
        if probe(R0, time_limit_s) is None:
            probe(R0 + 1, time_limit_s)
    else:
        found = _first_plan(probe, first, last)
        if found is not None:
            keys = set(tried[found].counts)
            scan = [R for R in range(first, min(last, found + RACK_SCAN_SPAN) + 1) if R not in tried]
            if progress:
                progress(f"rack failure domain: ranking {len(scan)} rack counts by the plan's configurations")
            for R in _rank_rack_counts(lambda r: restricted(r, keys), scan)[:RACK_FULL_PROBES]:
                probe(R)
    R = best()
    if R is None:
        raise Infeasible(f"no rack count from {first} to {max(tried, default=first)} of {model.name} lets the cloud "
                         "survive the loss of a rack", requirement="policy.failure_domain")
    sol = tried[R]
    # Each rack count is its own MILP over the candidates and the search does not try them all:
    # no bound is known for rack counts it did not try, nor for the whole catalog.
    scope = Scope(len(cands), len(options), _lower_bound(sol, gap), None, racks_tried=sorted(tried))
    scope.rack_counts = f"{R} x {model.name}"
    return sol, scope


def _group(o: NodeOption, count: int, role: NodeRole | None = None, reserved_mb: int = 0) -> NodeGroup:
    def line(d, n):
        return [DriveLine(model=d.name, tier=d.tier, count=n, capacity_tb=d.capacity_tb, unit_price_usd=d.price_usd)]

    drives = line(o.drive, o.drive_count) if o.drive else []
    local = line(o.local_drive, o.local_drive_count) if o.local_drive else []
    db = o.db
    db_drives = line(db.drive, db.count) if db else []
    return NodeGroup(role=role or o.role, chassis=o.chassis.name, bmc=o.chassis.bmc, cpu=o.cpu.name,
                     sockets=o.chassis.sockets, local_drives=local,
                     cores=o.cores, threads=o.threads, ram_gib=o.ram_gib, dimm=o.dimm.name,
                     dimm_count=o.dimm_count, drives=drives, db_drives=db_drives,
                     osds_per_db_drive=db.osds_per_device if db else None, count=count, height_u=o.height_u,
                     unit_price_usd=round(o.capex_usd, 2), power_w=round(o.power_w, 1),
                     vcpu_capacity=o.vcpus, vm_ram_gib=o.vm_ram_gib, osd_cores_reserved=o.osd_cores,
                     cpu_price_usd=round(o.cpu_usd, 2), dimm_price_usd=round(o.dimm_usd, 2),
                     osd_ram_gib_reserved=o.osd_ram_gib, peak_power_w=round(o.peak_power_w, 1),
                     nova_reserved_host_memory_mb=(reserved_mb + int(round(o.osd_ram_gib * 1024))) if o.vcpus else None)


def _network(cat: Catalog, sol: milp.Solution) -> list[SwitchGroup]:
    out = []
    by_name = {s.name: s for s in cat.switches}
    for role in (SwitchRole.leaf, SwitchRole.spine, SwitchRole.management):
        n = sol.switches.get(role.value, 0)
        sw = by_name.get(sol.spine_model) if role == SwitchRole.spine else cat.cheapest(role)
        if n and sw:
            out.append(SwitchGroup(role=role.value, model=sw.name, count=n, unit_price_usd=sw.price_usd,
                                   power_w=sw.power_w, height_u=sw.form_factor_u))
    return out


def _racks(cat: Catalog, sol: milp.Solution) -> list[RackGroup]:
    by_name = {r.name: r for r in cat.racks}
    return [RackGroup(model=k, count=v, height_u=by_name[k].usable_u, power_budget_w=by_name[k].power_budget_w,
                      usable_power_w=by_name[k].usable_power_w, unit_price_usd=by_name[k].price_usd)
            for k, v in sorted(sol.racks.items())]


def _notes(wl: Workload, nodes: list[NodeGroup], racks: int) -> list[str]:
    notes = []
    if racks >= 3:
        notes.append("controllers go on three different racks")
    elif wl.policy.controllers >= 3:
        notes.append(f"only {racks} rack(s): controllers share racks; a rack loss can take the control plane quorum")
    home = metadata_home(wl)
    if home is not None:
        ec = [f"{wl.grown_storage(s).tier.value} ({wl.grown_storage(s).protection.describe()})" for s in wl.storage
              if wl.grown_storage(s).protection.replicas is None]
        notes.append(f"replicated-only pools (RBD image metadata, RGW bucket index, CephFS metadata) of "
                     f"{', '.join(ec)} live 3x replicated on the {home.value} tier")
    for n in nodes:
        for d in n.db_drives:
            notes.append(f"{n.key}: block.db and WAL of its HDD OSDs on {d.count}x {d.model} "
                         f"({wl.policy.block_db_share:.0%} of each HDD, {n.osds_per_db_drive} OSDs per device); "
                         f"a DB device's loss takes its {n.osds_per_db_drive} OSDs down, within the host that "
                         f"N+1 by {wl.policy.failure_domain.value} already covers")
    if any(n.role == NodeRole.hyperconverged for n in nodes):
        notes.append("hyperconverged hosts: OSD cores and RAM are reserved before VM capacity is counted")
    return notes


def size_cloud(wl: Workload, cat: Catalog, *, solver: str = "highs", time_limit_s: float = 60.0,
               gap: float = DEFAULT_GAP, progress: Callable[[str], None] | None = None) -> Blueprint:
    """Size the cheapest (TCO) cloud that carries ``wl`` with N+1 by its failure domain."""
    t0 = time.perf_counter()
    asked, wl = wl, (control.edge_workload(wl) if wl.policy.converged_control_plane else wl)
    demand = demand_for(wl)
    tiers = set(demand.raw_tib) | set(demand.client_iops)
    options, nic_note = _nic_checked(wl, cat, build_options(wl, cat, tiers), tiers)
    hypervisors = _hypervisor_estimate(demand, options)
    fixed = _fixed(wl, cat, hypervisors)
    log.info("sizing %s: %d node options after pruning", wl.name, len(options))
    if progress:
        progress(f"{len(options)} node options; solving")
    aggregate_hosts = None
    min_hosts: dict[str, int] = {}
    proof = None
    hard = False
    min_racks, bp = 1, None
    for attempt in range(MAX_FIT_ROUNDS):
        # Repair rounds only need to rank plans: they stop at a 0.5 % gap (reported as such).
        g = gap if attempt == 0 else max(gap, REPAIR_GAP)
        try:
            if wl.policy.failure_domain == FailureDomain.rack:
                hint = None if attempt == 0 else (next(iter(sol.racks)), max(min_racks, sum(sol.racks.values())))
                sol, scope = _solve_rack_domain(wl, cat, options, demand, fixed, solver, time_limit_s, g, progress,
                                                min_hosts, hard, min_racks, hint)
            else:
                sol, scope = solve_exact(_builder(wl, cat, demand, fixed, min_hosts=min_hosts, hard=hard,
                                                  min_racks=min_racks), options, solver, time_limit_s, g)
        except Infeasible as err:
            if attempt or err.requirement not in (None, "policy.max_racks"):
                raise
            raise diagnose.explain(wl, demand, options, lambda d: _builder(wl, cat, d, fixed)) from None
        vm_hosts = [(o, n) for o, n in _chosen(options, sol) if o.vcpus > 0]
        if _resize_controllers(wl, cat, fixed, sum(n for _, n in vm_hosts)):
            # The controllers grow with the hypervisors: solve again with the right ones
            # (they take racks' units, power and ports); the bounds are taken afresh.
            hypervisors = sum(n for _, n in vm_hosts)
            fixed, aggregate_hosts = _fixed(wl, cat, hypervisors), None
            continue
        if aggregate_hosts is None:
            aggregate_hosts = sum(n for _, n in vm_hosts)
            aggregate_sol, first_scope = sol, scope
        if progress:
            progress("checking the exact placement of every VM")
        racks = sum(sol.racks.values())
        placement = fit.check(wl, vm_hosts, racks, aggregate_hosts, proof)
        if not (placement.feasible and placement.feasible_degraded):
            # No placement shown: the surviving hosts are filled and the VMs left over go onto
            # new hosts of these configurations. If the plan has them, that packing is the proof;
            # otherwise the MILP is solved again with them as lower bounds (storage, racks and
            # network follow): as plain bounds when that cannot cost much more than any plan
            # could, else first only for plans that keep a configuration, so another may win.
            tco = {o.key: o.tco_usd(cat.price_book, wl.horizon_months) for o, _ in vm_hosts}
            need, proof = fit.required_hosts(wl, vm_hosts, racks, tco)
            if all(sol.counts.get(k, 0) >= n for k, n in need.items()):
                placement = fit.check(wl, vm_hosts, racks, aggregate_hosts, proof)
        if placement.feasible and placement.feasible_degraded:
            # Totals of U and power are in the MILP; the racks themselves are checked by the
            # layout's own dealing. A plan that does not lay out is solved again with one more rack.
            bp = to_blueprint(wl, cat, options, fixed, demand, sol)
            if lays_out(bp):
                break
            log.info("the plan does not lay out in %d racks; solving again with at least %d", racks, racks + 1)
            min_racks, bp = racks + 1, None
            continue
        log.info("exact placement fails on %d hosts; the packing needs %s", placement.exact_hosts, need)
        added = sum(max(0, n - sol.counts.get(k, 0)) * tco[k] for k, n in need.items())
        min_hosts = {k: max(min_hosts.get(k, 0), n) for k, n in need.items()} if not hard else {**min_hosts, **need}
        hard = attempt >= 1 or _cheap_repair(wl, aggregate_sol, gap, sol.objective_usd + added)
    if bp is None and placement.feasible and placement.feasible_degraded:
        raise Infeasible(f"{wl.name}: after {MAX_FIT_ROUNDS} rounds no plan lays out rack by rack within each "
                         f"rack's units and power" + (f" and {wl.policy.max_racks} racks" if wl.policy.max_racks
                                                      else ""), requirement="policy.max_racks")
    if bp is None:
        lost = f"with one {wl.policy.failure_domain.value} lost" if placement.feasible else "with every host up"
        raise Infeasible(f"{wl.name}: after {MAX_FIT_ROUNDS} rounds of adding hosts the VMs still cannot be placed "
                         f"host by host {lost}; check max_configs_per_role and the largest flavors",
                         requirement="exact placement")
    if nic_note:
        bp.notes.append(nic_note)
    warning = diagnose.root_disk_warning(wl)
    if warning:
        log.info("%s", warning)
        bp.notes.append(warning)
    if min_racks > 1:
        bp.notes.append(f"the first plan did not lay out rack by rack; solved again with at least {min_racks - 1} "
                        f"rack(s) more than it had")
    bp.placement = placement
    if aggregate_sol is not sol:
        _compare_aggregate(bp, wl, to_blueprint(wl, cat, options, fixed, demand, aggregate_sol), aggregate_sol,
                           sol, gap)
    bp.solve_seconds = round(time.perf_counter() - t0, 3)
    if wl.policy.failure_domain == FailureDomain.rack:
        # By rack, each rack count has its own bounds: the first round's hold for its rack count
        # (later rounds only add requirements); another rack count has only its last MILP's bound.
        if scope.rack_counts != first_scope.rack_counts:
            scope.racks_tried = sorted(set(first_scope.racks_tried or []) | set(scope.racks_tried or []))
            first_scope = scope
            bp.notes.append("the bound for this rack count is its last MILP's, which has the exact placement's "
                            "host counts as lower bounds")
    _state_optimality(bp, first_scope, sol, gap)
    bp.workload = asked
    return bp


def _nic_checked(wl: Workload, cat: Catalog, options: list[NodeOption], tiers: set[Tier]
                 ) -> tuple[list[NodeOption], str | None]:
    """The builds whose NICs carry their traffic; a tier left with none is an error that says why."""
    kept, note = traffic.nic_filter(options, wl, cat)
    for i, s in enumerate(wl.storage):
        had = s.tier in tiers and any(o.raw_tib.get(s.tier) for o in options)
        if had and not any(o.raw_tib.get(s.tier) for o in kept):
            raise Infeasible(f"no {s.tier.value} build's NICs carry its client, replication and recovery traffic: "
                             f"{note}", requirement=f"storage[{i}].tier")
    return kept, note


def _hypervisor_estimate(demand: milp.Demand, options: list[NodeOption]) -> int:
    """VM hosts at least (the largest host's vCPUs against the demand): the controllers' first size."""
    most = max((o.vcpus for o in options), default=0.0)
    return math.ceil(demand.vcpu / most) if most else 0


def _fixed(wl: Workload, cat: Catalog, hypervisors: int) -> milp.Fixed:
    """Controllers sized for ``hypervisors`` (none when the control plane is converged) and network nodes."""
    groups = []
    if not wl.policy.converged_control_plane:
        groups.append((control.controller_option(wl, cat, hypervisors), wl.policy.controllers))
    net = control.network_option(wl, cat)
    if net is not None:
        groups.append((net, wl.policy.network_nodes))
    return milp.Fixed(groups)


def _resize_controllers(wl: Workload, cat: Catalog, fixed: milp.Fixed, hypervisors: int) -> bool:
    """Whether the plan's controllers fall short of what ``hypervisors`` need (they only grow,
    so the rounds cannot cycle)."""
    need = control.controller_need(wl, hypervisors)
    return any(o.threads < need.threads or o.ram_gib < need.ram_gib - 1e-9
               or (o.local_drive is not None and o.local_drive.capacity_tb * 1000 < need.disk_gb)
               for o, _ in fixed.groups if o.role == NodeRole.control)


def _state_optimality(bp: Blueprint, first: Scope, sol: milp.Solution, gap: float) -> None:
    """Say over what the plan is optimal and against which bound; "optimal" only when the plan is
    within ``gap`` of a lower bound that holds for the whole catalog.

    Later rounds only add requirements (exact placement, layout) to the first MILP, so the
    first round's bounds hold for every plan; the plan is compared with them.
    """
    bp.optimal_over = first.describe()
    bp.candidate_gap = max(0.0, 1 - first.candidate_bound_usd / sol.objective_usd)
    bp.mip_gap = max(bp.mip_gap if math.isfinite(bp.mip_gap) else 0.0, bp.candidate_gap)
    if first.catalog_bound_usd is not None:
        bp.catalog_lower_bound_usd = round(first.catalog_bound_usd, 2)
        bp.catalog_gap = max(0.0, 1 - first.catalog_bound_usd / sol.objective_usd)
    proven = bp.catalog_gap is not None and bp.catalog_gap <= gap + 1e-9
    bp.status = "optimal" if proven else "feasible"
    where = (f"within {bp.catalog_gap:.2%} of a lower bound that holds for every plan over the whole catalog"
             if bp.catalog_gap is not None else "no bound is known over the whole catalog")
    bp.notes.insert(0, f"{first.describe()}; the plan is within {bp.candidate_gap:.2%} of the bound over those "
                       f"configurations and {where}")


def _compare_aggregate(bp: Blueprint, wl: Workload, aggregate_bp: Blueprint, aggregate: milp.Solution,
                       sol: milp.Solution, gap: float) -> None:
    """What a totals-only plan would have cost (the exact plan's extra is what it under-bought),
    and how far the exact plan is from the aggregate MILP's lower bound.

    The last MILP's gap is measured against its own lower bounds (the exact placement's
    hosts); the aggregate MILP's bound holds for any plan of its candidates.
    """
    bp.placement.aggregate_only_tco_usd = aggregate_bp.cost.tco_usd
    if wl.policy.failure_domain == FailureDomain.host:
        above = max(sol.objective_usd / _lower_bound(aggregate, gap) - 1, 0.0)
        bp.notes.insert(0, f"exact placement: the plan is within {above:.2%} of the aggregate MILP's lower bound")
        # Report the gap against that bound, which holds for every plan, not the last MILP's own.
        bp.mip_gap = max(bp.mip_gap if math.isfinite(bp.mip_gap) else 0.0, above / (1 + above))


def _lower_bound(sol: milp.Solution, gap: float) -> float:
    """The solver's proven lower bound of a MILP (its plan less the gap; the requested gap if unknown)."""
    solved_gap = sol.mip_gap if math.isfinite(sol.mip_gap) else gap
    return sol.objective_usd * (1 - max(solved_gap, 0.0))


def _cheap_repair(wl: Workload, aggregate: milp.Solution, gap: float, repaired_usd: float) -> bool:
    """Whether a repaired plan stays within KEEP_CONFIGS_WITHIN of the aggregate MILP's bound.

    By host only: by rack, each rack count has its own MILP and its bound holds for that count.
    """
    if wl.policy.failure_domain != FailureDomain.host:
        return False
    return repaired_usd <= _lower_bound(aggregate, gap) * (1 + KEEP_CONFIGS_WITHIN)


def lays_out(bp: Blueprint) -> bool:
    """Whether the layout's own dealing puts every node in a rack within its units and power."""
    try:
        rack_plan(bp)
    except Infeasible:
        return False
    return True


def _chosen(options: list[NodeOption], sol: milp.Solution) -> list[tuple[NodeOption, int]]:
    by_key = {o.key: o for o in options}
    return sorted(((by_key[k], n) for k, n in sol.counts.items()), key=lambda x: (x[0].role.value, x[0].key))


def to_blueprint(wl: Workload, cat: Catalog, options: list[NodeOption], fixed: milp.Fixed,
                 demand: milp.Demand, sol: milp.Solution) -> Blueprint:
    chosen = _chosen(options, sol)
    mb = wl.policy.reserved_host_memory_mb
    nodes = [_group(o, n, reserved_mb=mb) for o, n in chosen] + [_group(o, n) for o, n in fixed.groups if n]
    racks = sum(sol.racks.values())
    switches, rack_groups = _network(cat, sol), _racks(cat, sol)
    cables = _cables(cat, nodes, switches, racks)
    capacity = compute_capacity(wl, chosen, racks, demand.vcpu, demand.ram_gib)
    cost = price_plan(wl, cat.price_book, nodes, switches, rack_groups,
                      {wl.grown_storage(s).tier.value: wl.grown_storage(s).usable_tib for s in wl.storage}, cables)
    bp = Blueprint(name=wl.name, status=sol.status, solver=sol.solver, mip_gap=sol.mip_gap,
                   solve_seconds=round(sol.seconds, 3), catalog_date=cat.price_book.date.isoformat(),
                   racks_count=racks, nodes=nodes, switches=switches, racks=rack_groups, capacity=capacity,
                   cost=cost, cables=cables, notes=_notes(wl, nodes, racks) + _fabric_notes(switches, cat),
                   workload=wl)
    bp.capacity.tiers = storage_tiers(bp, chosen)
    bp.recovery = traffic.tier_recovery(bp, chosen, cat)
    bp.control_plane = _control_sizing(wl, chosen, fixed)
    return bp


def _cables(cat: Catalog, nodes: list[NodeGroup], switches: list[SwitchGroup], racks: int) -> list[CableLine]:
    count = {s.role: s.count for s in switches}
    ports = {n.chassis: c.nic_ports for c in cat.chassis for n in nodes if n.chassis == c.name}
    lines = fabric.cables([(ports[n.chassis], n.count) for n in nodes], racks, count.get("leaf", 0),
                          count.get("management", 0), count.get("spine", 0), cat.cheapest(SwitchRole.leaf),
                          cat.cheapest(SwitchRole.management))
    return [CableLine(kind=c.kind, purpose=c.purpose, count=c.count, unit_price_usd=c.unit_price_usd) for c in lines]


def _fabric_notes(switches: list[SwitchGroup], cat: Catalog) -> list[str]:
    spine = next((s for s in switches if s.role == "spine" and s.count), None)
    leaf = cat.cheapest(SwitchRole.leaf)
    if spine is None:
        return []
    leaves = next(s.count for s in switches if s.role == "leaf")
    return [f"spine layer: {spine.count} x {spine.model} for {leaves} leaves x {leaf.uplinks} uplinks "
            f"({leaf.uplinks // spine.count} to each spine, even ECMP); it holds "
            f"{spine.count * next(s.ports for s in cat.switches if s.name == spine.model) // leaf.uplinks} leaves"]


def _control_sizing(wl: Workload, chosen: list[tuple[NodeOption, int]], fixed: milp.Fixed) -> ControlPlaneSizing:
    hypervisors = sum(n for o, n in chosen if o.vcpus > 0)
    need = control.controller_need(wl, hypervisors)
    return ControlPlaneSizing(hypervisors=hypervisors, vms=sum(wl.grown_count(f) for f in wl.flavors),
                              controller_threads=need.threads, controller_ram_gib=need.ram_gib,
                              controller_disk_gb=need.disk_gb, converged=wl.policy.converged_control_plane,
                              network_nodes=sum(n for o, n in fixed.groups if o.role == NodeRole.network))


__all__ = ["size_cloud", "demand_for", "to_blueprint", "Tier"]
