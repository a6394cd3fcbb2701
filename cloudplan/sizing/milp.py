"""The sizing MILP: build, solve, extract.

Variables (all in dicts keyed by option key, names deterministic):
  n[o]      nodes of option o bought
  used[o]   1 when n[o] >= 1 (host failure domain: the largest host lost)
  top[o]    nodes of option o in the fullest rack (rack failure domain)
  bottom[o] nodes of option o in the emptiest rack (rack failure domain, storage)
  racks[r]  racks of model r; leaves, mgmt, spines: switches
  spine_pick[i]  1 for the spine layer chosen (model and ECMP count, :mod:`fabric`)
One ``add_*`` function per constraint family; each returns quietly when it has
nothing to add. Controllers (and network nodes) are a fixed part of every plan.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import pulp

from cloudplan.catalog import Catalog, Rack, Switch, SwitchRole
from cloudplan.errors import Infeasible, SolverError
from cloudplan.sizing import fabric
from cloudplan.sizing.options import NodeOption, count_bound, lifetime_cost, opt_capacity
from cloudplan.spec import Tier

log = logging.getLogger(__name__)

SWITCH_U_PER_RACK = 3      # two leaves and one management switch at the top of every rack
LEAVES_PER_RACK = 2        # MLAG pair: every node has a link to each
RACK_COUNT_BOUND = 1000    # big-M on racks of one model when the site sets no max_racks


@dataclass
class Demand:
    """What the fleet must offer, in option-capacity units, before any failure."""

    vcpu: float
    ram_gib: float
    raw_tib: dict[Tier, float] = field(default_factory=dict)
    client_iops: dict[Tier, float] = field(default_factory=dict)
    min_tier_hosts: int = 0
    min_vm_hosts: int = 0          # a converged control plane needs its quorum of VM hosts
    flavors: list[tuple[str, float, float, int]] = field(default_factory=list)  # name, vcpus, ram_gib, count
    # CRUSH: copies (size, or k+m) per tier and the raw TiB each copy needs (below nearfull);
    # raw_tib[t] == copies[t] * per_copy_tib[t].
    copies: dict[Tier, int] = field(default_factory=dict)
    per_copy_tib: dict[Tier, float] = field(default_factory=dict)

    def capacity(self, opt: NodeOption, resource: str) -> float:
        """What one node of ``opt`` adds to ``resource``: for raw TiB, at most one copy's worth
        (CRUSH puts no two copies of an object in one failure domain)."""
        cap = opt_capacity(opt, resource)
        kind, _, tier = resource.partition(":")
        if kind == "raw" and Tier(tier) in self.per_copy_tib:
            return min(cap, self.per_copy_tib[Tier(tier)])
        return cap

    def storage_resources(self) -> dict[str, float]:
        return {k: v for k, v in self.resources().items() if k not in ("vcpu", "ram")}

    def resources(self) -> dict[str, float]:
        res = {"vcpu": self.vcpu, "ram": self.ram_gib}
        res.update({f"raw:{t.value}": v for t, v in self.raw_tib.items() if v > 0})
        res.update({f"iops:{t.value}": v for t, v in self.client_iops.items() if v > 0})
        return res


@dataclass
class Fixed:
    """Hardware every plan carries regardless of the choice: controllers, network nodes."""

    groups: list[tuple[NodeOption, int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(n for _, n in self.groups)

    def total(self, per_node) -> float:
        return sum(per_node(o) * n for o, n in self.groups)

    def per_rack(self, racks: int, per_node) -> float:
        """What the fullest of ``racks`` racks holds of them (each kind dealt evenly)."""
        return sum(per_node(o) * math.ceil(n / racks) for o, n in self.groups)


@dataclass
class Model:
    prob: pulp.LpProblem
    options: dict[str, NodeOption]
    demand: Demand
    fixed: Fixed
    catalog: Catalog
    months: float
    n: dict[str, pulp.LpVariable] = field(default_factory=dict)
    used: dict[str, pulp.LpVariable] = field(default_factory=dict)
    top: dict[str, pulp.LpVariable] = field(default_factory=dict)
    bottom: dict[str, pulp.LpVariable] = field(default_factory=dict)
    racks: dict[str, pulp.LpVariable | int] = field(default_factory=dict)
    switches: dict[str, pulp.LpVariable | int] = field(default_factory=dict)
    spine_pick: dict[int, tuple[fabric.SpineChoice, pulp.LpVariable]] = field(default_factory=dict)
    uplink_links: pulp.LpVariable | None = None     # leaf-spine links (0 in a single rack)
    fixed_racks: int | None = None          # rack failure domain: racks of ``rack_model``, fixed
    rack_model: Rack | None = None
    max_racks: int | None = None
    max_configs: int = 1
    min_racks: int = 1                      # a cut: plans with fewer racks did not lay out

    @property
    def total_racks(self):
        return pulp.lpSum(self.racks.values())

    @property
    def total_nodes(self):
        return pulp.lpSum(self.n.values()) + self.fixed.count


@dataclass
class Solution:
    counts: dict[str, int]
    racks: dict[str, int]
    switches: dict[str, int]
    objective_usd: float
    status: str
    mip_gap: float
    seconds: float
    solver: str
    spine_model: str | None = None


def _name(prefix: str, i: int) -> str:
    return f"{prefix}_{i:03d}"


def _lin(terms, constant: float = 0.0) -> pulp.LpAffineExpression:
    """A linear expression from (variable, coefficient) pairs.

    PuLP builds ``coef * var`` sums one temporary expression per term: with a
    thousand options that alone takes a quarter second per model built.
    """
    acc: dict[pulp.LpVariable, float] = {}
    for v, c in terms:
        acc[v] = acc.get(v, 0.0) + c
    return pulp.LpAffineExpression(acc, constant)


def new_model(options: list[NodeOption], demand: Demand, fixed: Fixed, cat: Catalog, months: float,
              fixed_racks: tuple[Rack, int] | None = None, max_racks: int | None = None,
              max_configs: int = 1, min_counts: dict[str, int] | None = None, min_racks: int = 1) -> Model:
    rack_model, racks = fixed_racks if fixed_racks else (None, None)
    m = Model(pulp.LpProblem("cloudplan_sizing", pulp.LpMinimize), {o.key: o for o in options}, demand, fixed,
              cat, months, fixed_racks=racks, rack_model=rack_model, max_racks=max_racks, max_configs=max_configs,
              min_racks=min_racks)
    resources = demand.resources()
    for i, o in enumerate(options):
        # The bound doubles as the big-M of the used indicator: it must admit any required minimum.
        # By rack every rack holds at least floor(n / R) of a storage kind: a spread needs R more at most.
        extra = 4 + demand.min_tier_hosts + (racks or 0)
        ub = max(count_bound(o, resources, extra, demand.capacity), (min_counts or {}).get(o.key, 0) + 4)
        m.n[o.key] = pulp.LpVariable(_name("n", i), lowBound=0, upBound=ub, cat="Integer")
    if racks is None:
        for i, rack in enumerate(cat.racks):
            m.racks[rack.name] = pulp.LpVariable(_name("racks", i), lowBound=0, cat="Integer")
    else:
        m.racks[rack_model.name] = racks
    m.switches["leaf"] = pulp.LpVariable("sw_leaf", lowBound=0, cat="Integer")
    m.switches["management"] = pulp.LpVariable("sw_mgmt", lowBound=0, cat="Integer")
    if cat.cheapest(SwitchRole.spine) is not None:
        m.switches["spine"] = pulp.LpVariable("sw_spine", lowBound=0, cat="Integer")
    return m


def add_demand(m: Model) -> None:
    """All hosts up: every resource meets demand."""
    for res, d in m.demand.resources().items():
        terms = [(m.n[k], c) for k, o in m.options.items() if (c := m.demand.capacity(o, res)) > 0]
        if not terms:
            raise Infeasible(f"no hardware option in the catalog offers {res.replace(':', ' ')}", requirement=res)
        m.prob += _lin(terms) >= d, f"demand_{res.replace(':', '_')}"


def add_configs(m: Model) -> None:
    """``used[o]`` marks options bought; each group (compute, hyperconverged per tier,
    storage per tier) uses at most ``max_configs`` configurations: a homogeneous
    fleet needs one spare-parts kit and one burn-in procedure per role."""
    for i, (k, o) in enumerate(m.options.items()):
        m.used[k] = pulp.LpVariable(_name("used", i), cat="Binary")
        m.prob += _lin([(m.n[k], 1.0), (m.used[k], -m.n[k].upBound)]) <= 0, f"link_used_{i:03d}"
    for g, keys in sorted(groups(m).items()):
        m.prob += _lin((m.used[k], 1.0) for k in keys) <= m.max_configs, f"configs_{g.replace(':', '_')}"
    carriers = [(m.used[k], 1.0) for k, o in m.options.items() if o.vcpus > 0]
    if m.demand.vcpu > 0 and carriers:
        m.prob += _lin(carriers) >= 1, "vm_carrier"
    if m.demand.min_vm_hosts:
        m.prob += _lin((m.n[k], 1.0) for k, o in m.options.items() if o.vcpus > 0) >= m.demand.min_vm_hosts, \
            "converged_control_hosts"


def groups(m: Model) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, o in m.options.items():
        out.setdefault(o.group, []).append(k)
    return out


def add_host_failure(m: Model) -> None:
    """N+1 by host: demand still met without the largest node in use.

    For raw TiB this is the CRUSH bound exactly: with per-copy need S (a constant of
    the demand), a host adds min(c, S), and the tier holds S on n domains after losing
    the largest host iff sum(n_o * min(c_o, S)) - max_used min(c_o, S) >= n * S.
    ``loss[r]`` is at least the capacity of the configuration in use in each group.
    Summing ``cap * used`` over a group is exact when a group has one configuration
    and makes the LP relaxation pay a convex combination of losses, not nothing.
    """
    if m.fixed_racks is not None:
        return
    grp = groups(m)
    for r, d in m.demand.storage_resources().items():
        slug = r.replace(":", "_")
        caps = {k: c for k, o in m.options.items() if (c := m.demand.capacity(o, r)) > 0}
        loss = pulp.LpVariable(f"loss_{slug}", lowBound=0)
        for g, keys in sorted(grp.items()):
            terms = [(m.used[k], -caps[k]) for k in keys if k in caps]
            if not terms:
                continue
            if m.max_configs == 1:
                m.prob += _lin([(loss, 1.0)] + terms) >= 0, f"nplus1_{slug}_{g.replace(':', '_')}"
            else:
                for i, term in enumerate(terms):
                    m.prob += _lin([(loss, 1.0), term]) >= 0, f"nplus1_{slug}_{g.replace(':', '_')}_{i:03d}"
        m.prob += _lin([(m.n[k], cap) for k, cap in caps.items()] + [(loss, -1.0)]) >= d, f"nplus1_{slug}"


def add_rack_failure(m: Model) -> None:
    """N+1 by rack (rack count R fixed): nodes spread evenly, demand met without the fullest rack.

    ``top[o]`` is the most nodes of o in one rack (ceil(n / R) or more), ``bottom[o]`` the
    fewest (floor(n / R) or less), as the round-robin layout deals them. For raw TiB the
    CRUSH bound with racks as domains: every rack holds at least C = sum(c_o * bottom_o),
    so the R - 1 racks left hold S per copy on n racks when R - 1 >= n and C >= n * S / (R - 1)
    (sufficient; exact when the racks hold the same).
    """
    if m.fixed_racks is None:
        return
    R = m.fixed_racks
    for i, k in enumerate(m.options):
        m.top[k] = pulp.LpVariable(_name("top", i), lowBound=0, cat="Integer")
        m.prob += R * m.top[k] >= m.n[k], f"spread_{i:03d}"
    for r, d in m.demand.storage_resources().items():
        slug = r.replace(":", "_")
        kind, _, tier = r.partition(":")
        if kind == "raw" and Tier(tier) in m.demand.copies:
            _add_rack_crush(m, Tier(tier), slug)
            continue
        terms = [(v, c * sign) for k, o in m.options.items() if (c := opt_capacity(o, r)) > 0
                 for v, sign in ((m.n[k], 1.0), (m.top[k], -1.0))]
        m.prob += _lin(terms) >= d, f"rackloss_{slug}"


def _add_rack_crush(m: Model, tier: Tier, slug: str) -> None:
    R, n, per_copy = m.fixed_racks, m.demand.copies[tier], m.demand.per_copy_tib[tier]
    if R - 1 < n:
        raise Infeasible(f"{tier.value}: {n} copies on distinct racks need {n + 1} racks to survive a rack loss, "
                         f"not {R}", requirement="policy.failure_domain")
    terms = []
    for i, (k, o) in enumerate(m.options.items()):
        c = o.raw_tib.get(tier, 0.0)
        if c <= 0:
            continue
        if k not in m.bottom:
            m.bottom[k] = pulp.LpVariable(_name("bottom", i), lowBound=0, cat="Integer")
            m.prob += R * m.bottom[k] <= m.n[k], f"spread_low_{i:03d}"
        terms.append((m.bottom[k], c))
    m.prob += _lin(terms) >= n * per_copy / (R - 1), f"rack_crush_{slug}"


def add_vm_assignment(m: Model) -> None:
    """Flavors are assigned to VM-carrying groups, and each group carries what it is
    assigned with its failure share lost (one host per configuration, or the
    fullest rack's share).

    Totals alone let RAM-rich hosts "carry" RAM that no flavor's vCPU:RAM shape can
    use; assigning whole flavors to groups keeps each group's two dimensions
    honest. Fragments inside a host are left to the exact placement check.
    """
    vm_groups = {g: keys for g, keys in groups(m).items() if any(m.options[k].vcpus > 0 for k in keys)}
    if not m.demand.flavors or not vm_groups:
        return
    y = {(f, g): pulp.LpVariable(f"assign_{i:03d}_{j:02d}", lowBound=0)
         for i, (f, *_rest) in enumerate(m.demand.flavors) for j, g in enumerate(sorted(vm_groups))}
    for i, (f, _v, _r, count) in enumerate(m.demand.flavors):
        m.prob += _lin((y[f, g], 1.0) for g in vm_groups) >= count, f"assign_{i:03d}"
    lost = m.used if m.fixed_racks is None else m.top
    for j, (g, keys) in enumerate(sorted(vm_groups.items())):
        for dim, col in (("vcpu", 1), ("ram", 2)):
            load = [(y[fl[0], g], fl[col]) for fl in m.demand.flavors]
            cap = [(v, c * sign) for k in keys if (c := opt_capacity(m.options[k], dim))
                   for v, sign in ((m.n[k], -1.0), (lost[k], 1.0))]
            m.prob += _lin(load + cap) <= 0, f"group_{j:02d}_{dim}"


def add_ceph_hosts(m: Model) -> None:
    """Each tier on enough hosts (or racks) for its replicas or EC chunks, plus one to heal into."""
    for t, d in m.demand.raw_tib.items():
        if d <= 0:
            continue
        need = m.demand.copies.get(t, m.demand.min_tier_hosts - 1) + 1
        holders = [(m.n[k], 1.0) for k, o in m.options.items() if o.raw_tib.get(t, 0) > 0]
        m.prob += _lin(holders) >= (need if m.fixed_racks is None else max(need, m.fixed_racks)), f"ceph_hosts_{t.value}"


def add_racks(m: Model) -> None:
    """Rack units and peak power against each rack's derated feed: per rack model (host domain)
    or for the fullest rack (rack domain). Typical power is for the energy bill only."""
    fx = m.fixed
    if m.fixed_racks is None:
        space = pulp.lpSum((r.usable_u - SWITCH_U_PER_RACK) * m.racks[r.name] for r in m.catalog.racks)
        power = pulp.lpSum(r.usable_power_w * m.racks[r.name] for r in m.catalog.racks)
        used_u = _lin(((m.n[k], o.height_u) for k, o in m.options.items()), fx.total(lambda o: o.height_u))
        used_w = _lin(((m.n[k], o.peak_power_w) for k, o in m.options.items()), fx.total(lambda o: o.peak_power_w))
        used_u += _spines(m, lambda c: c.count * c.model.form_factor_u)
        m.prob += used_u <= space, "rack_space"
        m.prob += used_w + _switch_power(m) <= power, "rack_power"
        m.prob += m.total_racks >= max(1, m.min_racks), "rack_min"
        # One rack model per plan: the layout deals every kind evenly over the racks, so a mix of
        # small and large racks would overflow the small ones while the totals look fine.
        if len(m.catalog.racks) > 1:
            big = m.max_racks or RACK_COUNT_BOUND
            pick = {r.name: pulp.LpVariable(_name("rack_model", i), cat="Binary") for i, r in enumerate(m.catalog.racks)}
            for i, r in enumerate(m.catalog.racks):
                m.prob += _lin([(m.racks[r.name], 1.0), (pick[r.name], -big)]) <= 0, f"rack_model_{i:03d}"
            m.prob += _lin((v, 1.0) for v in pick.values()) <= 1, "one_rack_model"
        if m.max_racks is not None:
            m.prob += m.total_racks <= m.max_racks, "rack_max"
        return
    rack = m.rack_model
    R = m.fixed_racks
    used_u = (pulp.lpSum(o.height_u * m.top[k] for k, o in m.options.items()) + fx.per_rack(R, lambda o: o.height_u)
              + _spines(m, lambda c: fabric.spines_in_fullest_rack(c.count, R) * c.model.form_factor_u))
    used_w = (pulp.lpSum(o.peak_power_w * m.top[k] for k, o in m.options.items())
              + fx.per_rack(R, lambda o: o.peak_power_w)
              + _spines(m, lambda c: fabric.spines_in_fullest_rack(c.count, R) * c.model.power_w))
    m.prob += used_u <= rack.usable_u - SWITCH_U_PER_RACK, "fullest_rack_space"
    m.prob += used_w + _per_rack_switch_power(m) <= rack.usable_power_w, "fullest_rack_power"


def _spines(m: Model, per_choice) -> pulp.LpAffineExpression:
    """A linear expression of the chosen spine layer: ``per_choice(choice)`` of the one picked."""
    return _lin((v, per_choice(c)) for c, v in m.spine_pick.values())


def _switches(cat: Catalog) -> tuple[Switch, Switch, Switch | None]:
    return cat.cheapest(SwitchRole.leaf), cat.cheapest(SwitchRole.management), cat.cheapest(SwitchRole.spine)


def _switch_power(m: Model):
    leaf, mgmt, _ = _switches(m.catalog)
    expr = leaf.power_w * m.switches.get("leaf", 0) + mgmt.power_w * m.switches.get("management", 0)
    return expr + _spines(m, lambda c: c.count * c.model.power_w)


def _per_rack_switch_power(m: Model) -> float:
    leaf, mgmt, _ = _switches(m.catalog)
    return LEAVES_PER_RACK * leaf.power_w + mgmt.power_w


def add_network(m: Model) -> None:
    """Two leaves per rack with a port per node link and per management-switch uplink; one
    management switch per rack with a port per BMC and per switch management port; beyond one
    rack a spine layer (:mod:`fabric`) with a port for every leaf uplink."""
    leaf, mgmt, _ = _switches(m.catalog)
    L, M = m.switches["leaf"], m.switches["management"]
    links = _lin(((m.n[k], o.chassis.nic_ports) for k, o in m.options.items()),
                 m.fixed.total(lambda o: o.chassis.nic_ports))
    m.prob += L >= LEAVES_PER_RACK * m.total_racks, "leaf_per_rack"
    m.prob += leaf.ports * L >= links + fabric.mgmt_uplinks(mgmt) * M, "leaf_ports"
    m.prob += M >= m.total_racks, "mgmt_per_rack"
    choices = fabric.spine_choices(m.catalog, leaf)
    if not choices:
        m.prob += mgmt.ports * M >= m.total_nodes + L, "mgmt_ports"
        m.prob += m.total_racks <= 1, "single_rack_without_spines"
        return
    multi = pulp.LpVariable("multi_rack", cat="Binary")
    big = m.max_racks or RACK_COUNT_BOUND
    m.prob += m.total_racks <= 1 + big * multi, "multi_rack_link"
    m.spine_pick = {i: (c, pulp.LpVariable(_name("spine_pick", i), cat="Binary")) for i, c in enumerate(choices)}
    m.prob += _lin((v, 1.0) for _, v in m.spine_pick.values()) == multi, "one_spine_layer"
    m.prob += m.switches["spine"] == _spines(m, lambda c: c.count), "spine_count"
    m.prob += mgmt.ports * M >= m.total_nodes + L + m.switches["spine"], "mgmt_ports"
    # Every leaf cables all its uplinks once there are spines (none in a single rack's pair).
    m.uplink_links = pulp.LpVariable("uplink_links", lowBound=0)
    needed = leaf.uplinks * L - leaf.uplinks * LEAVES_PER_RACK * (1 - multi)
    m.prob += m.uplink_links >= needed, "uplink_links"
    m.prob += _spines(m, lambda c: c.count * c.model.ports) >= needed, "spine_ports"


def add_min_counts(m: Model, minimum: dict[str, int], hard: bool = False) -> None:
    """Lower bounds from the exact placement. Conditional (default): a configuration,
    if bought, comes in at least the count its VMs need host by host, so the plan
    that failed is cut off and another configuration stays free to win. ``hard``:
    plain lower bounds, which keep the configurations and always converge."""
    for i, (k, n) in enumerate(sorted(minimum.items())):
        if k not in m.n:
            continue
        if hard:
            m.n[k].lowBound = n
        else:
            m.prob += m.n[k] >= n * m.used[k], f"exact_fit_{i:03d}"


def add_objective(m: Model, node_penalty_usd: float) -> None:
    """Minimise TCO; a small per-node penalty prefers fewer, RAM-heavier nodes at equal cost."""
    pb, months = m.catalog.price_book, m.months
    leaf, mgmt, spine = _switches(m.catalog)
    nodes = _lin((m.n[k], o.tco_usd(pb, months) + node_penalty_usd + fabric.node_cables_usd(o.chassis.nic_ports, leaf))
                 for k, o in m.options.items())
    sw = {"leaf": leaf, "management": mgmt}
    net = pulp.lpSum(lifetime_cost(sw[r].price_usd, sw[r].power_w, pb, months) * v for r, v in m.switches.items()
                     if r in sw)
    net += _spines(m, lambda c: c.count * lifetime_cost(c.model.price_usd, c.model.power_w, pb, months))
    net += _cables(m, leaf, mgmt)
    racks = pulp.lpSum(rack_cost(r, pb, months) * m.racks[r.name] for r in m.catalog.racks if r.name in m.racks)
    m.prob += nodes + net + racks, "tco_usd"


def _cables(m: Model, leaf: Switch, mgmt: Switch):
    """Cables the plan's switches need; a leaf-spine link at the cheapest kind, so the
    objective never exceeds what the plan's cables cost (its bounds stay lower bounds)."""
    price = fabric.CABLE_PRICE_USD
    expr = (price["cat6"] * (m.switches["leaf"] + m.switches.get("spine", 0))
            + price[fabric.mgmt_uplink_cable(leaf, mgmt)] * fabric.mgmt_uplinks(mgmt) * m.switches["management"])
    if m.uplink_links is not None:
        expr += fabric.cheapest_uplink_usd() * m.uplink_links
    return expr


def rack_cost(rack: Rack, pb, months: float) -> float:
    return rack.price_usd + pb.rack_usd_per_month * months


def build(options: list[NodeOption], demand: Demand, fixed: Fixed, cat: Catalog, months: float,
          node_penalty_usd: float, fixed_racks: tuple[Rack, int] | None = None,
          max_racks: int | None = None, max_configs: int = 1, min_counts: dict[str, int] | None = None,
          hard_min: bool = False, min_racks: int = 1) -> Model:
    m = new_model(options, demand, fixed, cat, months, fixed_racks, max_racks, max_configs, min_counts, min_racks)
    add_demand(m)
    add_configs(m)
    add_host_failure(m)
    add_rack_failure(m)
    add_vm_assignment(m)
    add_ceph_hosts(m)
    add_network(m)
    add_racks(m)
    add_min_counts(m, min_counts or {}, hard_min)
    add_objective(m, node_penalty_usd)
    return m


def _solver(name: str, time_limit_s: float, gap: float, objective_bound: float | None = None):
    if name == "highs":
        extra = {} if objective_bound is None else {"objective_bound": objective_bound}
        return pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=gap, **extra)
    if name == "cbc":
        cbc = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap)
        if not cbc.available():
            raise SolverError("the CBC solver is not available in this installation; use --solver highs")
        return cbc
    raise SolverError(f"unknown solver {name!r}; choose highs or cbc")


def solve(m: Model, solver: str = "highs", time_limit_s: float = 60.0, gap: float = 0.001,
          cutoff_usd: float | None = None) -> Solution:
    """Solve ``m``. ``cutoff_usd``: only plans cheaper than it are wanted (HiGHS prunes every
    branch whose bound reaches it, so a model that cannot beat it ends in a fraction of its
    solve); none found is :class:`NoBetterPlan`. CBC ignores the cutoff."""
    t0 = time.perf_counter()
    bound = None if cutoff_usd is None or solver != "highs" else cutoff_usd - m.prob.objective.constant
    try:
        m.prob.solve(_solver(solver, time_limit_s, gap, bound))
    except pulp.PulpSolverError as err:
        raise SolverError(f"{solver} failed: {err}") from err
    seconds = time.perf_counter() - t0
    if bound is not None and _above_cutoff(m, cutoff_usd):
        raise NoBetterPlan(f"no plan below ${cutoff_usd:,.0f} ({seconds:.1f} s)")
    status = pulp.LpStatus[m.prob.status]
    if status == "Infeasible":
        raise Infeasible("no plan meets every requirement together" + (
            f" within {m.max_racks} racks (policy.max_racks)" if m.max_racks else ""),
            requirement="policy.max_racks" if m.max_racks else None)
    if m.prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        raise SolverError(f"{solver} stopped without a plan (status {status}) after {seconds:.1f} s; "
                          "raise --time-limit")
    return extract(m, solver, seconds)


class NoBetterPlan(Infeasible):
    """The model has no plan below the cutoff it was solved with (it may have dearer ones)."""


def _above_cutoff(m: Model, cutoff_usd: float) -> bool:
    # PuLP reports HiGHS' "objective bound reached" as a feasible solution with whatever values
    # were left in the columns: only a plan under the cutoff is one.
    if m.prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return True
    status = m.prob.solverModel.getModelStatus()
    return status.name == "kObjectiveBound" or float(pulp.value(m.prob.objective)) >= cutoff_usd


def _mip_gap(m: Model) -> float:
    highs = getattr(m.prob, "solverModel", None)
    if highs is not None and hasattr(highs, "getInfo"):
        info = highs.getInfo()
        return max(0.0, float(info.mip_gap)) if math.isfinite(info.mip_gap) else 0.0
    return 0.0 if m.prob.sol_status == pulp.LpSolutionOptimal else float("nan")


def extract(m: Model, solver: str, seconds: float) -> Solution:
    val = lambda v: int(round(v.value() or 0)) if isinstance(v, pulp.LpVariable) else int(v)  # noqa: E731
    counts = {k: val(v) for k, v in m.n.items() if val(v) > 0}
    objective = float(pulp.value(m.prob.objective))
    gap = _mip_gap(m)
    optimal = m.prob.sol_status == pulp.LpSolutionOptimal
    spine = next((c.model.name for c, v in m.spine_pick.values() if val(v)), None)
    return Solution(counts=counts, racks={k: val(v) for k, v in m.racks.items() if val(v) > 0},
                    switches={k: val(v) for k, v in m.switches.items()}, objective_usd=objective,
                    status="optimal" if optimal else "feasible", mip_gap=gap, seconds=seconds, solver=solver,
                    spine_model=spine)


@dataclass
class Relaxation:
    objective_usd: float
    reduced_cost: dict[str, float]   # per option key, of its count variable
    support: set[str]                # options the LP uses
    racks: float = 0.0               # racks in the LP solution (a lower bound on the integer count)
    racks_by_model: dict[str, float] = field(default_factory=dict)


def relax(m: Model) -> Relaxation:
    """Solve the LP relaxation with HiGHS (whatever MILP solver is chosen) for bounds and reduced costs."""
    try:
        m.prob.solve(pulp.HiGHS(msg=False, mip=False))
    except pulp.PulpSolverError as err:
        raise SolverError(f"LP relaxation failed: {err}") from err
    if m.prob.status != pulp.LpStatusOptimal:
        raise Infeasible("no plan meets every requirement together, even fractionally" + (
            f" within {m.max_racks} racks (policy.max_racks)" if m.max_racks else ""),
            requirement="policy.max_racks" if m.max_racks else None)
    duals = m.prob.solverModel.getSolution().col_dual
    return Relaxation(objective_usd=float(pulp.value(m.prob.objective)),
                      reduced_cost={k: float(duals[v.index]) for k, v in m.n.items()},
                      support={k for k, v in m.n.items() if (v.value() or 0) > 1e-6},
                      racks=float(pulp.value(m.total_racks) or 0.0),
                      racks_by_model={k: float(v.value() or 0.0) for k, v in m.racks.items()
                                      if isinstance(v, pulp.LpVariable)})
