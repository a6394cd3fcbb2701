"""Expansion on an installed base: keep every node bought, buy the cheapest addition.

The installed nodes enter the sizing MILP as options of their own whose counts
are fixed (lower and upper bound) and whose cost is nil: only what is added is
priced, so the objective is the TCO of the addition. Each installed group is a
configuration group of its own, so the host N+1 constraints take the largest
node of the mixed old+new fleet (for raw TiB that is the CRUSH bound of
:mod:`cloudplan.sizing.crush` on every host, old or new) and the
one-configuration-per-role rule applies to what is bought, not to what is
there. Racks and switches already there are lower bounds of their counts,
priced out of the objective the same way. The exact placement of every VM on
the mixed fleet is checked as for a plan sized from nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from datetime import date
from functools import cached_property

from cloudplan.blueprint import Blueprint, CableLine, Expansion, NodeGroup, NodeRole
from cloudplan.catalog import Catalog, PriceBook
from cloudplan.cost import price_plan
from cloudplan.errors import Infeasible, SpecError
from cloudplan.sizing import fit, milp
from cloudplan.sizing.capacity import storage_tiers
from cloudplan.sizing.bluestore import DbLayout
from cloudplan.sizing.control import _with_local_disks, controller_option
from cloudplan.sizing.options import NodeOption, _make, build_options, lifetime_cost
from cloudplan.sizing.plan import (DEFAULT_GAP, MAX_FIT_ROUNDS, REPAIR_GAP, _cheap_repair, _chosen,
                                   _cables, _state_optimality, demand_for, solve_exact, to_blueprint)
from cloudplan.sizing.plan import _fixed as plan_fixed
from cloudplan.sizing.tiers import osd_client_iops
from cloudplan.spec import FailureDomain, Workload

log = logging.getLogger(__name__)

DAYS_PER_MONTH = 365.25 / 12
# A repair cut: when the installed VM hosts alone fail the exact placement, some VM host must be bought.
ANY_NEW_VM_HOST = "any new VM host"
# How much dearer than the dearest SKU bought an installed-only kind is to the repair's packer.
UNBOUGHT_COST_FACTOR = 100.0


@dataclass(frozen=True)
class InstalledOption(NodeOption):
    """Nodes of one installed group: already paid for, a configuration group of their own."""

    slot: int = 0                 # index of the group in the installed blueprint
    installed_count: int = 0

    @cached_property
    def key(self) -> str:
        return f"installed{self.slot:02d}|{self.sku}"

    @property
    def sku(self) -> str:
        """The key the same hardware has as an option to buy."""
        return NodeOption.key.func(self)

    @property
    def group(self) -> str:
        return f"installed{self.slot:02d}"

    def tco_usd(self, pb: PriceBook, months: float) -> float:
        return 0.0

    def new_tco_usd(self, pb: PriceBook, months: float) -> float:
        """What one more such node would cost today."""
        return NodeOption.tco_usd(self, pb, months)


def _find(items, name: str, where: str):
    for x in items:
        if x.name == name:
            return x
    raise SpecError(f"{name!r} is not in the hardware catalog: an installed node must be described by it",
                    path=where.split(":")[0], field=where.split(":", 1)[1])


def fleet_option(g: NodeGroup, i: int, wl: Workload, cat: Catalog, source: str) -> NodeOption:
    """The catalog's build of installed group ``g``, with its capacities under today's policy."""
    at = f"{source}:nodes[{i}]"
    ch = _find(cat.chassis, g.chassis, f"{at}.chassis")
    cpu = _find(cat.cpus, g.cpu, f"{at}.cpu")
    dimm = _find(cat.dimms, g.dimm, f"{at}.dimm")
    if len(g.drives) > 1:
        raise SpecError("a node group with several drive models cannot be sized on", path=source,
                        field=f"nodes[{i}].drives")
    drive = _find(cat.drives, g.drives[0].model, f"{at}.drives[0].model") if g.drives else None
    n_drive = g.drives[0].count if g.drives else 0
    db = None
    if g.db_drives and drive is not None:
        db_drive = _find(cat.drives, g.db_drives[0].model, f"{at}.db_drives[0].model")
        per_osd = wl.policy.block_db_share * drive.capacity_tb
        db = DbLayout(db_drive, g.db_drives[0].count, g.osds_per_db_drive or -(-n_drive // g.db_drives[0].count),
                      per_osd)
    o = _make(cat.price_book, wl.policy, g.role, ch, cpu, dimm, g.dimm_count, drive, n_drive,
              osd_client_iops(wl, drive, db is not None) if drive else 0.0, db)
    if g.local_drives:   # a controller's fast local disks (Galera, RabbitMQ, OVN)
        o = _with_local_disks(o, _find(cat.drives, g.local_drives[0].model, f"{at}.local_drives[0].model"), cat)
    return o


def _installed(o: NodeOption, slot: int, count: int) -> InstalledOption:
    return InstalledOption(**{f.name: getattr(o, f.name) for f in fields(NodeOption)}, slot=slot,
                           installed_count=count)


@dataclass
class Fleet:
    """The installed cloud, as the MILP sees it."""

    options: list[InstalledOption]
    groups: dict[str, NodeGroup]          # installed option key -> its group in the blueprint
    controllers: list[NodeGroup]
    controller: NodeOption
    racks: dict[str, int]
    switches: dict[str, int]


def fleet_of(installed: Blueprint, wl: Workload, cat: Catalog, source: str) -> Fleet:
    opts, groups, ctrl, ctrl_opt = [], {}, [], None
    for i, g in enumerate(installed.nodes):
        if g.count == 0:
            continue
        base = fleet_option(g, i, wl, cat, source)
        if g.role == NodeRole.control:
            ctrl.append(g)
            ctrl_opt = ctrl_opt or base
            continue
        o = _installed(base, i, g.count)
        opts.append(o)
        groups[o.key] = g
    rack_names = {r.name for r in cat.racks}
    for i, r in enumerate(installed.racks):
        if r.model not in rack_names:
            raise SpecError(f"rack model {r.model!r} is not in the hardware catalog", path=source,
                            field=f"racks[{i}].model")
    sw: dict[str, int] = {}
    for s in installed.switches:
        sw[s.role] = sw.get(s.role, 0) + s.count
    hypervisors = sum(o.installed_count for o in opts if o.vcpus > 0)
    return Fleet(opts, groups, ctrl, ctrl_opt or controller_option(wl, cat, hypervisors),
                 {r.model: r.count for r in installed.racks if r.count}, sw)


def new_options(wl: Workload, cat: Catalog, fleet: Fleet, prefer_fleet_skus: bool) -> list[NodeOption]:
    """What may be bought: the catalog's builds, and the fleet's own (a dominated one is simply not chosen).

    With ``prefer_fleet_skus`` every VM-carrying node and every holder of a tier the fleet
    already has is one of the fleet's configurations: one spares kit. Tiers new to the
    fleet are free to take any build.
    """
    demand = demand_for(wl)
    tiers = set(demand.raw_tib) | set(demand.client_iops)
    opts = {o.key: o for o in build_options(wl, cat, tiers)}
    skus = {}
    for f in fleet.options:
        base = _plain(f)
        skus[base.key] = base
    opts.update(skus)
    if not prefer_fleet_skus:
        return list(opts.values())
    fleet_vm = any(f.vcpus > 0 for f in fleet.options)
    fleet_tiers = {t for f in fleet.options for t in f.raw_tib}

    def allowed(o: NodeOption) -> bool:
        if o.key in skus:
            return True
        if o.vcpus > 0 and fleet_vm:
            return False
        return not (set(o.raw_tib) & fleet_tiers)
    return [o for o in opts.values() if allowed(o)]


def _builder(wl: Workload, cat: Catalog, demand: milp.Demand, fixed: milp.Fixed, fleet: Fleet,
             min_hosts: dict[str, int], hard: bool = False):
    pb, months = cat.price_book, wl.horizon_months
    penalty = wl.policy.node_penalty_usd
    counts = {o.key: o.installed_count for o in fleet.options}

    def build(opts: list[NodeOption]) -> milp.Model:
        m = milp.build(opts, demand, fixed, cat, months, penalty, max_racks=wl.policy.max_racks,
                       max_configs=wl.policy.max_configs_per_role, min_counts={**min_hosts, **counts}, hard_min=hard)
        paid = 0.0
        for k, c in counts.items():
            m.n[k].lowBound = m.n[k].upBound = c      # exactly what is installed (min_counts made room)
            paid += penalty * c
        for r in cat.racks:
            have = fleet.racks.get(r.name, 0)
            if have and r.name in m.racks:
                m.racks[r.name].lowBound = have
                paid += milp.rack_cost(r, pb, months) * have
        for role, var in m.switches.items():
            have = fleet.switches.get(role, 0)
            sw = milp._switches(cat)[("leaf", "management", "spine").index(role)]
            if have:
                var.lowBound = have
                paid += lifetime_cost(sw.price_usd, sw.power_w, pb, months) * have
        if min_hosts.get(ANY_NEW_VM_HOST):
            bought = [(m.n[o.key], 1.0) for o in opts if o.vcpus > 0 and o.key not in counts]
            m.prob += milp._lin(bought) >= min_hosts[ANY_NEW_VM_HOST], "expansion_new_vm_hosts"
        # What is there costs nothing more: the objective is the TCO of the addition.
        m.prob.objective.constant -= paid
        return m
    return build


def expand_cloud(wl: Workload, cat: Catalog, installed: Blueprint, *, prefer_fleet_skus: bool = False,
                 solver: str = "highs", time_limit_s: float = 60.0, gap: float = DEFAULT_GAP,
                 source: str = "installed blueprint") -> Blueprint:
    """The cheapest (TCO) addition to ``installed`` that carries ``wl`` with N+1 by host,
    as a blueprint of the whole cloud with the nodes bought marked ``new``."""
    t0 = time.perf_counter()
    if wl.policy.failure_domain != FailureDomain.host:
        raise Infeasible("expansion sizing keeps the installed nodes where the layout put them, which the rack "
                         "failure domain's even spread cannot assume: it needs failure_domain: host",
                         requirement="policy.failure_domain")
    if wl.policy.network_nodes or wl.policy.converged_control_plane:
        # The installed blueprint's network nodes or converged hosts are not carried into the grown one yet.
        raise Infeasible("expansion sizing does not handle dedicated network nodes or a converged control plane "
                         "yet: size the grown cloud anew", requirement="policy.network_nodes")
    fleet = fleet_of(installed, wl, cat, source)
    demand = demand_for(wl)
    options = new_options(wl, cat, fleet, prefer_fleet_skus)
    all_opts = list(fleet.options) + options
    have_ctrl = sum(g.count for g in fleet.controllers)
    fixed = _fixed(wl, cat, fleet, have_ctrl)
    min_hosts: dict[str, int] = {}
    proof, hard, first = None, False, None
    by_key = {o.key: o for o in all_opts}
    pb, months = cat.price_book, wl.horizon_months
    for attempt in range(MAX_FIT_ROUNDS):
        sol, round_scope = solve_exact(_builder(wl, cat, demand, fixed, fleet, min_hosts, hard), all_opts, solver,
                                       time_limit_s, gap if attempt == 0 else max(gap, REPAIR_GAP))
        # Later rounds only add requirements: the first round's bounds hold for every plan.
        scope, first = (round_scope, sol) if attempt == 0 else (scope, first)
        vm_hosts = by_sku(_chosen(all_opts, sol))
        placement = fit.check(wl, vm_hosts, 1, proof=proof)
        if not (placement.feasible and placement.feasible_degraded):
            bought = {k: n for k, n in sol.counts.items() if k not in fleet.groups}
            kept = min_hosts if not attempt else {k: n for k, n in min_hosts.items()
                                                  if k in bought or k == ANY_NEW_VM_HOST}
            need, proof = _repair(wl, cat, vm_hosts, fleet, kept, bought)
            # The packing that asked for these hosts is the proof when the plan has them already.
            placement = fit.check(wl, vm_hosts, 1, proof=proof)
            min_hosts = need
            # As in size_cloud: the first repair lets another configuration win unless keeping the
            # plan's costs little against the first bound; later repairs keep the plan's.
            added = sum(max(0, n - sol.counts.get(k, 0)) * by_key[k].tco_usd(pb, months)
                        for k, n in need.items() if k in by_key)
            hard = hard or attempt >= 1 or _cheap_repair(wl, first, gap, sol.objective_usd + added)
        if placement.feasible and placement.feasible_degraded:
            break
    else:
        raise Infeasible(f"{wl.name}: after {MAX_FIT_ROUNDS} rounds of adding hosts the VMs still cannot be placed "
                         "host by host on the grown fleet", requirement="exact placement")
    bp = to_blueprint(wl, cat, all_opts, fixed, demand, sol)
    _mark(bp, wl, cat, installed, fleet, all_opts, sol, have_ctrl, prefer_fleet_skus)
    bp.placement = placement
    _state_optimality(bp, scope, sol, gap)
    bp.solve_seconds = round(time.perf_counter() - t0, 3)
    return bp


def _fixed(wl: Workload, cat: Catalog, fleet: Fleet, have_ctrl: int) -> milp.Fixed:
    """What every plan carries, as for a new cloud, with the installed controllers (and no fewer) in place."""
    hypervisors = sum(o.installed_count for o in fleet.options if o.vcpus > 0)
    groups = [(fleet.controller, max(have_ctrl, n)) if o.role == NodeRole.control else (o, n)
              for o, n in plan_fixed(wl, cat, hypervisors).groups]
    return milp.Fixed(groups)


def by_sku(chosen: list[tuple[NodeOption, int]]) -> list[tuple[NodeOption, int]]:
    """VM hosts by hardware: installed and bought nodes of one SKU are one kind to Nova and to a host loss."""
    out: dict[str, tuple[NodeOption, int]] = {}
    for o, n in chosen:
        if o.vcpus <= 0:
            continue
        base = _plain(o) if isinstance(o, InstalledOption) else o
        out[base.key] = (base, out.get(base.key, (base, 0))[1] + n)
    return sorted(out.values(), key=lambda x: x[0].key)


def _plain(o: NodeOption) -> NodeOption:
    return NodeOption(**{f.name: getattr(o, f.name) for f in fields(NodeOption)})


def _repair(wl: Workload, cat: Catalog, vm_hosts, fleet: Fleet, min_hosts: dict[str, int],
            bought: dict[str, int]):
    """Hosts of each SKU an exact placement needs, less those installed: the new nodes' minimum if that
    SKU is bought (a conditional bound, so that another configuration may win instead).

    The VMs the surviving hosts cannot take go onto SKUs the plan buys: a bound on a SKU it
    does not buy would bind nothing (conditional) or break the one-configuration rule (hard).
    When it buys no VM host at all, the cut is that it must buy one.
    """
    pb, months = cat.price_book, wl.horizon_months
    # Prohibitive, not absent: the packer still proves a placement if only installed kinds can take a VM.
    tco = {o.key: o.tco_usd(pb, months) for o, _ in vm_hosts}
    dear = UNBOUGHT_COST_FACTOR * max(tco.values())
    tco = {k: v if bought.get(k) else dear for k, v in tco.items()}
    need, proof = fit.required_hosts(wl, vm_hosts, 1, tco)
    have: dict[str, int] = {}
    for f in fleet.options:
        have[f.sku] = have.get(f.sku, 0) + f.installed_count
    out = dict(min_hosts)
    if not any(bought.get(o.key) for o, _ in vm_hosts):
        out[ANY_NEW_VM_HOST] = 1
    for k, n in need.items():
        if n - have.get(k, 0) > 0 and bought.get(k):
            out[k] = max(out.get(k, 0), n - have.get(k, 0))
    log.info("expansion: the exact placement needs, of what is bought, %s", out)
    return out, proof


def _added_cables(bp: Blueprint, installed: Blueprint, cat: Catalog) -> list[CableLine]:
    """The grown cloud's cables less those the installed one has (counted as its plan would)."""
    have: dict[tuple[str, str], int] = {}
    racks = sum(r.count for r in installed.racks)
    for c in _cables(cat, installed.nodes, installed.switches, racks):
        have[(c.kind, c.purpose)] = have.get((c.kind, c.purpose), 0) + c.count
    return [c.model_copy(update={"count": c.count - have.get((c.kind, c.purpose), 0)}) for c in bp.cables
            if c.count > have.get((c.kind, c.purpose), 0)]


def _age_months(purchased: str, on: date) -> float:
    return round(max(0.0, (on - date.fromisoformat(purchased)).days / DAYS_PER_MONTH), 1)


def _mark(bp: Blueprint, wl: Workload, cat: Catalog, installed: Blueprint, fleet: Fleet, all_opts, sol,
          have_ctrl: int, prefer: bool) -> None:
    """Installed groups keep what they were bought at and when; bought groups are marked new; cost both."""
    nodes, new, ages = [], [], {}
    # to_blueprint writes one group per chosen option, in that order, then the controllers.
    for (o, _), g in zip(_chosen(all_opts, sol), bp.nodes):
        if isinstance(o, InstalledOption):
            old = fleet.groups[o.key]
            bought = old.purchased_on or installed.catalog_date
            nodes.append(g.model_copy(update={"unit_price_usd": old.unit_price_usd, "cpu_price_usd": old.cpu_price_usd,
                                              "dimm_price_usd": old.dimm_price_usd, "drives": old.drives,
                                              "purchased_on": bought, "new": False}))
            ages[old.key] = _age_months(bought, cat.price_book.date)
        else:
            new.append(g.model_copy(update={"new": True}))
    for g in fleet.controllers:
        bought = g.purchased_on or installed.catalog_date
        nodes.append(g.model_copy(update={"purchased_on": bought, "new": False}))
        ages[g.key] = _age_months(bought, cat.price_book.date)
    more_ctrl = max(0, wl.policy.controllers - have_ctrl)
    if more_ctrl:
        ctrl = next(g for g in bp.nodes if g.role == NodeRole.control)
        new.append(ctrl.model_copy(update={"count": more_ctrl, "new": True}))
    bp.nodes = nodes + new
    usable = {wl.grown_storage(s).tier.value: wl.grown_storage(s).usable_tib for s in wl.storage}
    bp.cost = price_plan(wl, cat.price_book, bp.nodes, bp.switches, bp.racks, usable, bp.cables)
    bp.capacity.tiers = storage_tiers(bp, _chosen(all_opts, sol))
    added_sw = [s.model_copy(update={"count": s.count - fleet.switches.get(s.role, 0)}) for s in bp.switches
                if s.count > fleet.switches.get(s.role, 0)]
    added_racks = [r.model_copy(update={"count": r.count - fleet.racks.get(r.model, 0)}) for r in bp.racks
                   if r.count > fleet.racks.get(r.model, 0)]
    add = price_plan(wl, cat.price_book, new, added_sw, added_racks, usable, _added_cables(bp, installed, cat))
    bp.expansion = Expansion(installed=installed.name, prefer_fleet_skus=prefer,
                             added_nodes=sum(g.count for g in new), added_racks=sum(r.count for r in added_racks),
                             added_switches={s.role: s.count for s in added_sw}, capex_usd=add.capex_usd,
                             opex_usd_per_month=add.opex_usd_per_month, tco_usd=add.tco_usd,
                             installed_age_months=ages)
    bp.notes.append(f"expansion of {installed.name}: keeps its {installed.node_count} nodes, buys "
                    f"{bp.expansion.added_nodes} node(s), {bp.expansion.added_racks} rack(s) and "
                    f"{sum(bp.expansion.added_switches.values())} switch(es); TCO of the addition "
                    f"${add.tco_usd:,.0f} over {wl.horizon_months / 12:g} years")



def grown(wl: Workload, factor: float) -> Workload:
    """``wl`` with every flavor's VM count and every tier's usable TiB scaled by ``factor`` (a what-if of growth)."""
    out = wl.model_copy(deep=True)
    for f in out.flavors:
        f.count = int(round(f.count * factor))
    for s in out.storage:
        s.usable_tib = s.usable_tib * factor
    return out
