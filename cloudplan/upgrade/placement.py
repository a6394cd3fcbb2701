"""Reading where the cloud's VMs run, and how big each host and flavor is.

Inputs are what operators already have:

* ``openstack server list --all-projects --long -f json``: a list of servers
  with ``ID``, ``Name``, ``Status``, ``Host`` and the flavor as ``Flavor``
  (compute API >= 2.47, the flavor's original name) or ``Flavor Name`` (older
  clients); or a CSV with columns ``vm,flavor,host``.
* ``openstack flavor list --long -f json``: ``Name``, ``VCPUs``, ``RAM`` (MiB),
  ``Disk`` (GiB); or a YAML/CSV table (``name, vcpus, ram_gib`` or ``ram_mib``,
  optional ``count``), or a workload file with a ``flavors:`` list.
* ``openstack hypervisor list --long -f json``: ``Hypervisor Hostname``,
  ``vCPUs`` and ``Memory MB`` (physical; clients on compute API >= 2.88 no
  longer print them, and the inventory's ``expect`` is used instead).

Without a placement, :func:`cloud_from_blueprint` takes the blueprint's
planned placement at full load, or :func:`fill_to_load` puts the flavor mix
on the hosts the way Nova's default weighers would (most free RAM first).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import logging
from pathlib import Path
from typing import Any

from cloudplan.blueprint import Blueprint
from cloudplan.errors import SpecError, UpgradeError
from cloudplan.inventory import Inventory, Role
from cloudplan.io import load_model, read_text, read_yaml
from cloudplan.sizing.reserve import osd_reservation
from cloudplan.upgrade.models import MIB_PER_GIB, Cloud, FlavorSize, Host, UpgradeDefaults

log = logging.getLogger(__name__)

# Server states that hold no allocation on a compute host.
_NO_HOST_STATES = {"SHELVED_OFFLOADED", "DELETED", "SOFT_DELETED", "BUILD"}


def _short(hostname: str) -> str:
    """Nova reports the compute service host; hypervisors often report the FQDN."""
    return hostname.split(".", 1)[0].lower()


def _read_text(path: Path) -> str:
    return read_text(path)   # the shared input checks: regular file, size, UTF-8


def _rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON list, a YAML list or a CSV with a header line."""
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"JSON syntax error: {err.msg}", path=str(path), line=err.lineno, column=err.colno) from None
        except RecursionError:
            raise SpecError("nested too deeply", path=str(path)) from None
    else:
        data = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("flavors"), list):
        data = data["flavors"]
    if not isinstance(data, list):
        raise SpecError("expected a list of objects (the JSON an `openstack ... list -f json` prints)", path=str(path))
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise SpecError("expected an object", path=str(path), field=f"[{i}]")
    return data


def _pick(row: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return row[k]
    return None


def _number(value: Any, path: Path, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(f"expected a number, got {value!r}", path=str(path), field=where) from None


def read_flavors(path: str | Path) -> tuple[dict[str, FlavorSize], dict[str, int]]:
    """Flavor sizes by name, and the VM counts when the table has them."""
    p = Path(path)
    sizes: dict[str, FlavorSize] = {}
    counts: dict[str, int] = {}
    for i, row in enumerate(_rows(p)):
        name = _pick(row, "Name", "name")
        if name is None:
            raise SpecError("flavor without a name", path=str(p), field=f"[{i}]")
        vcpus = _pick(row, "VCPUs", "vcpus", "vCPUs")
        if vcpus is None:
            raise SpecError("missing VCPUs/vcpus", path=str(p), field=f"[{i}]")
        ram_mib = _pick(row, "RAM", "ram_mib", "ram_mb", "ram")
        if ram_mib is not None:
            ram = _number(ram_mib, p, f"[{i}].RAM")
        elif _pick(row, "ram_gib") is not None:
            ram = _number(row["ram_gib"], p, f"[{i}].ram_gib") * MIB_PER_GIB
        else:
            raise SpecError("missing RAM (MiB) or ram_gib", path=str(p), field=f"[{i}]")
        disk = _pick(row, "Disk", "disk_gib", "disk")
        sizes[str(name)] = FlavorSize(name=str(name), vcpus=int(_number(vcpus, p, f"[{i}].vcpus")), ram_mib=int(ram),
                                      disk_gib=_number(disk, p, f"[{i}].disk") if disk is not None else 0.0)
        count = _pick(row, "count")
        if count is not None:
            counts[str(name)] = int(_number(count, p, f"[{i}].count"))
    if not sizes:
        raise SpecError("no flavors in the file", path=str(p))
    return sizes, counts


def read_hypervisors(path: str | Path) -> dict[str, tuple[float, float]]:
    """Physical (CPUs, RAM MiB) per short hostname; empty when the client no longer prints them."""
    p = Path(path)
    out: dict[str, tuple[float, float]] = {}
    for i, row in enumerate(_rows(p)):
        name = _pick(row, "Hypervisor Hostname", "hypervisor_hostname", "host")
        vcpus, mem = _pick(row, "vCPUs", "vcpus"), _pick(row, "Memory MB", "memory_mb")
        if name is None:
            raise SpecError("missing 'Hypervisor Hostname'", path=str(p), field=f"[{i}]")
        if vcpus is None or mem is None:
            continue
        out[_short(str(name))] = (_number(vcpus, p, f"[{i}].vCPUs"), _number(mem, p, f"[{i}].Memory MB"))
    return out


def read_servers(path: str | Path) -> list[tuple[str, str, str | None, str]]:
    """(server, flavor name, host or None, status) for every server in the file."""
    p = Path(path)
    out = []
    for i, row in enumerate(_rows(p)):
        flavor = _pick(row, "Flavor Name", "Flavor", "flavor")
        if isinstance(flavor, dict):  # raw API/SDK output embeds the flavor
            flavor = flavor.get("original_name") or flavor.get("name")
        if flavor is None:
            raise SpecError("server without a flavor ('Flavor Name' or 'Flavor')", path=str(p), field=f"[{i}]")
        name = _pick(row, "Name", "vm", "name", "ID", "id") or f"server-{i}"
        host = _pick(row, "Host", "host", "OS-EXT-SRV-ATTR:host")
        status = str(_pick(row, "Status", "status") or "ACTIVE").upper()
        out.append((str(name), str(flavor), _short(str(host)) if host else None, status))
    return out


def _compute_hosts(inventory: Inventory, hypervisors: dict[str, tuple[float, float]],
                   defaults: UpgradeDefaults, fallback: tuple[float, float] | None = None) -> list[Host]:
    hosts = []
    for i, node in enumerate(inventory.nodes):
        if node.role != Role.compute:
            continue
        phys = hypervisors.get(_short(node.name))
        if phys is None:
            exp = node.expect
            if exp is not None and exp.cores is not None and exp.ram_gib is not None:
                phys = (float(exp.cores), exp.ram_gib * MIB_PER_GIB)
            elif fallback is not None:
                phys = (fallback[0], fallback[1] * MIB_PER_GIB)
            else:
                raise SpecError(f"compute node {node.name} has no expect.cores/expect.ram_gib: give them, "
                                "pass --hypervisors with `openstack hypervisor list --long -f json`, or "
                                "--host-cores/--host-ram-gib", field=f"nodes[{i}].expect")
        vcpus, ram = defaults.host_capacity(*_less_osds(node, *phys))
        hosts.append(Host(name=node.name, rack=node.rack, vcpu_capacity=vcpus, ram_mib_capacity=ram))
    if not hosts:
        raise UpgradeError("the inventory has no compute node: nothing to drain")
    return hosts


def _less_osds(node, threads: float, ram_mib: float) -> tuple[float, float]:
    """A hyperconverged host keeps its OSDs' physical cores (both threads of each) and RAM, one OSD
    per data drive, by the function sizing planned it with: the VMs get the rest, and a drain
    must not count on the OSDs' share. ``threads`` is what Nova counts as the host's CPUs."""
    osds = osd_reservation(node.drives)
    return max(0.0, threads - osds.threads), max(0.0, ram_mib - osds.ram_gib * MIB_PER_GIB)


def cloud_from_blueprint(inventory: Inventory, blueprint: Blueprint, *,
                         hypervisors: dict[str, tuple[float, float]] | None = None,
                         defaults: UpgradeDefaults | None = None,
                         fallback: tuple[float, float] | None = None) -> Cloud:
    """The blueprint's planned placement at full load: each host pattern of its exact
    placement (the grown VM counts) laid on an inventory compute host of that kind
    (role and chassis); hosts left over are the plan's spare capacity and stay empty."""
    if blueprint.placement is None or not blueprint.placement.patterns:
        raise UpgradeError(f"blueprint {blueprint.name} has no planned placement: size it again with "
                           "`cloudplan size -o`, or pass --placement")
    defaults = defaults or UpgradeDefaults()
    flavors = {f.name: FlavorSize(f.name, f.vcpus, int(round(f.ram_gib * MIB_PER_GIB)), f.disk_gib)
               for f in blueprint.workload.flavors}
    hosts = _compute_hosts(inventory, hypervisors or {}, defaults, fallback)
    nodes = {n.name: n for n in inventory.nodes}
    free: dict[tuple[str, str], list[Host]] = {}
    for h in hosts:
        node = nodes[h.name]
        free.setdefault(("hyperconverged" if node.drives else "compute", node.chassis or ""), []).append(h)
    left: dict[str, int] = {}
    for pat in blueprint.placement.patterns:
        role, chassis = pat["kind"].split("|")[:2]
        pool = free.get((role, chassis), [])
        for _ in range(int(pat["multiplicity"])):
            if pool:
                host = pool.pop(0)
                for name, n in pat["vms"].items():
                    host.add(flavors[name], int(n))
            else:
                for name, n in pat["vms"].items():
                    left[name] = left.get(name, 0) + int(n)
    notes = []
    if left:
        notes.append(f"{sum(left.values())} planned VM(s) found no host of their planned kind in the inventory; "
                     "they were spread over the others as Nova's RAM weigher would")
        _place_counts(hosts, sorted((flavors[f] for f in left), key=lambda f: (-f.ram_mib, f.name)), left, notes)
    return Cloud(hosts=hosts, flavors=flavors, notes=notes,
                 source=f"the planned placement of blueprint {blueprint.name} at full load (grown counts)")


def cloud_from_placement(inventory: Inventory, servers_path: str | Path, *,
                         flavors: dict[str, FlavorSize],
                         hypervisors: dict[str, tuple[float, float]] | None = None,
                         defaults: UpgradeDefaults | None = None,
                         fallback: tuple[float, float] | None = None) -> Cloud:
    """The cloud as it runs: servers from ``servers_path`` on the inventory's compute hosts."""
    defaults = defaults or UpgradeDefaults()
    hosts = _compute_hosts(inventory, hypervisors or {}, defaults, fallback)
    by_name = {_short(h.name): h for h in hosts}
    roles = {_short(n.name): n.role.value for n in inventory.nodes}
    notes: list[str] = []
    unplaced = 0
    for name, flavor, host, status in read_servers(servers_path):
        if host is None or status in _NO_HOST_STATES:
            unplaced += 1
            continue
        size = flavors.get(flavor)
        if size is None:
            raise SpecError(f"server {name}: flavor {flavor!r} is not in the flavor table (pass --flavors with "
                            "`openstack flavor list --long -f json`)", path=str(servers_path))
        target = by_name.get(host)
        if target is None:
            what = f"a {roles[host]} node" if host in roles else "not in the inventory"
            raise SpecError(f"server {name} runs on host {host}, which is {what}", path=str(servers_path))
        target.add(size)
    if unplaced:
        notes.append(f"{unplaced} server(s) without a host (shelved, building or deleted) hold no capacity and "
                     "were left out")
    over = [h.name for h in hosts if h.used_vcpus > h.vcpu_capacity or h.used_ram_mib > h.ram_mib_capacity]
    if over:
        notes.append(f"{len(over)} host(s) hold more than their schedulable capacity at the allocation ratios "
                     f"used here (e.g. {over[0]}): check --cpu-allocation-ratio/--ram-allocation-ratio")
    used = {f for h in hosts for f in h.vms}
    return Cloud(hosts=hosts, flavors={k: v for k, v in flavors.items() if k in used},
                 source=f"servers from {Path(servers_path).name}", notes=notes)


def fill_to_load(inventory: Inventory, flavors: dict[str, FlavorSize], counts: dict[str, int] | None = None, *,
                 hypervisors: dict[str, tuple[float, float]] | None = None,
                 defaults: UpgradeDefaults | None = None, load_fraction: float = 1.0,
                 fallback: tuple[float, float] | None = None) -> Cloud:
    """A placement when the cloud's own is not given.

    With ``counts`` (a flavor table or workload that says how many VMs of each
    flavor the cloud carries), those VMs are placed largest first, each on the
    host with the most free RAM (Nova's default RAM weigher spreads this way).
    Without counts, every host is filled round-robin with the flavor mix until
    ``load_fraction`` of its RAM or vCPUs is taken: the cloud at full load.
    """
    defaults = defaults or UpgradeDefaults()
    hosts = _compute_hosts(inventory, hypervisors or {}, defaults, fallback)
    mix = sorted(flavors.values(), key=lambda f: (-f.ram_mib, -f.vcpus, f.name))
    notes: list[str] = []
    if counts:
        _place_counts(hosts, mix, counts, notes)
        source = "flavor counts placed as Nova's RAM weigher spreads them"
    else:
        _fill_round_robin(hosts, mix, load_fraction)
        source = f"every compute host filled to {load_fraction:.0%} with the flavor mix"
        notes.append(f"No placement was given: {source}. At full load no host has room for another's VMs; "
                     "pass --placement with the cloud's `openstack server list --long -f json` for a real check.")
    return Cloud(hosts=hosts, flavors=dict(flavors), source=source, notes=notes)


def _place_counts(hosts: list[Host], mix: list[FlavorSize], counts: dict[str, int], notes: list[str]) -> None:
    heap = [(-h.free[1], i) for i, h in enumerate(hosts)]
    heapq.heapify(heap)
    unplaced = 0
    for flavor in mix:
        for _ in range(counts.get(flavor.name, 0)):
            tried = []
            placed = False
            while heap:
                neg_free, i = heapq.heappop(heap)
                h = hosts[i]
                tried.append((-h.free[1], i))
                if h.free[0] >= flavor.vcpus and h.free[1] >= flavor.ram_mib:
                    h.add(flavor)
                    tried[-1] = (-h.free[1], i)
                    placed = True
                    break
                if -neg_free < flavor.ram_mib:
                    break  # the host with most free RAM cannot take it: none can
            for item in tried:
                heapq.heappush(heap, item)
            unplaced += not placed
    if unplaced:
        notes.append(f"{unplaced} VM(s) of the flavor counts did not fit on the compute hosts at all")


def _fill_round_robin(hosts: list[Host], mix: list[FlavorSize], load_fraction: float) -> None:
    for h in hosts:
        cap_cpu, cap_ram = h.vcpu_capacity * load_fraction, h.ram_mib_capacity * load_fraction
        progress = True
        while progress:
            progress = False
            for f in mix:
                if h.used_vcpus + f.vcpus <= cap_cpu and h.used_ram_mib + f.ram_mib <= cap_ram:
                    h.add(f)
                    progress = True


def load_cloud(inventory: Inventory, *, placement: str | Path | None = None, flavors: str | Path | None = None,
               hypervisors: str | Path | None = None, defaults: UpgradeDefaults | None = None,
               host_cores: float | None = None, host_ram_gib: float | None = None,
               load_fraction: float = 1.0, blueprint: str | Path | None = None) -> Cloud:
    """The cloud to rehearse on, from whichever inputs were given.

    ``placement`` (servers JSON or CSV) needs ``flavors`` for the flavor sizes.
    Without a placement, a ``blueprint`` gives its planned placement at full
    load (:func:`cloud_from_blueprint`); else ``flavors`` is spread over the
    hosts by :func:`fill_to_load`. Host sizes come from ``hypervisors``, else
    the inventory's ``expect``, else ``host_cores``/``host_ram_gib`` when given.
    """
    if placement is None and flavors is None and blueprint is not None:
        hyp = read_hypervisors(hypervisors) if hypervisors else {}
        return cloud_from_blueprint(inventory, load_model(Blueprint, blueprint), hypervisors=hyp,
                                    defaults=defaults, fallback=_fallback(host_cores, host_ram_gib))
    if flavors is None:
        what = "the flavor sizes of the placement" if placement else "a flavor mix to fill the hosts with"
        raise UpgradeError(f"--flavors is needed for {what} (`openstack flavor list --long -f json`, "
                           "a flavor table, or a workload file)")
    sizes, counts = read_flavors(flavors)
    hyp = read_hypervisors(hypervisors) if hypervisors else {}
    fallback = _fallback(host_cores, host_ram_gib)
    if placement is not None:
        return cloud_from_placement(inventory, placement, flavors=sizes, hypervisors=hyp, defaults=defaults,
                                    fallback=fallback)
    return fill_to_load(inventory, sizes, counts, hypervisors=hyp, defaults=defaults, load_fraction=load_fraction,
                        fallback=fallback)


def _fallback(host_cores: float | None, host_ram_gib: float | None) -> tuple[float, float] | None:
    if host_cores is None and host_ram_gib is None:
        return None
    if host_cores is None or host_ram_gib is None:
        raise UpgradeError("give both --host-cores and --host-ram-gib")
    return float(host_cores), float(host_ram_gib)
