"""What-if sweeps: change one thing a buyer asks about, re-size with the real optimizer, compare.

    from cloudplan.whatif import sweep
    df = sweep(workload, catalog, "dimm_price_factor", [0.5, 1.0, 2.0])

Every point is a full :func:`cloudplan.sizing.plan.size_cloud` call: the plan
is re-optimized (a dearer DRAM can move the optimum to fewer, leaner nodes),
not re-priced. The parameters:

- ``dimm_price_factor``, ``cpu_price_factor``, ``drive_price_factor``: multiply
  every DIMM / CPU / drive price of the price book;
- ``dimm_size_gib``: only buy DIMMs of this size (a vendor's or a contract's limit);
- ``cpu_allocation_ratio``: Nova's vCPUs per hardware thread;
- ``protection``: Ceph replicas (``"3x"``, ``"2x"``) or erasure coding (``"ec4+2"``);
- ``growth_per_year``: compound yearly growth (the plan is sized for the end of the horizon);
- ``vm_count_factor``: multiply the VM count of every flavor (a busier or a quieter cloud).

A point the catalog cannot satisfy is kept as a row whose ``status`` is
``infeasible`` and whose ``error`` says why, so one impossible corner does not
hide the rest of the sweep.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from cloudplan.blueprint import Blueprint, NodeRole
from cloudplan.catalog import Catalog
from cloudplan.errors import Infeasible, SpecError
from cloudplan.io import validate
from cloudplan.sizing.plan import size_cloud
from cloudplan.spec import Protection, Workload

log = logging.getLogger(__name__)

# What the notebook sweeps by default: a handful of points each, so a small workload runs in seconds.
DEFAULT_SWEEPS: dict[str, list[Any]] = {
    "dimm_price_factor": [0.5, 1.0, 2.0, 3.0],
    "dimm_size_gib": [32, 64, 128],
    "cpu_allocation_ratio": [1.0, 2.0, 4.0, 8.0],
    "protection": ["2x", "3x", "ec4+2"],
    "growth_per_year": [0.0, 0.15, 0.3],
}

COLUMNS = ["parameter", "value", "label", "status", "tco_usd", "capex_usd", "opex_usd_per_month",
           "usd_per_vm_month", "usd_per_vcpu_month", "usd_per_gib_month", "nodes", "vm_hosts", "racks",
           "vm_host_ram_gib", "ram_per_core_gib", "vm_host_config", "error"]

# Errors say they come from a what-if change, not from the user's workload file.
WHERE = "what-if"
_EC = re.compile(r"^ec\s*(\d+)\s*\+\s*(\d+)$", re.IGNORECASE)
_REPLICAS = re.compile(r"^(\d+)\s*x$", re.IGNORECASE)


def parse_protection(value: str | Mapping | Protection) -> Protection:
    """``"3x"`` -> 3 replicas, ``"ec4+2"`` -> EC 4+2; a mapping or a Protection passes through."""
    if isinstance(value, Protection):
        return value
    if isinstance(value, Mapping):
        return validate(Protection, dict(value), path=WHERE)
    text = str(value).strip()
    if m := _REPLICAS.match(text):
        return Protection(replicas=int(m.group(1)))
    if m := _EC.match(text):
        return Protection(ec_k=int(m.group(1)), ec_m=int(m.group(2)))
    raise SpecError(f"{value!r} is not a protection scheme: use e.g. '3x' or 'ec4+2'", path=WHERE, field="protection")


def _price_factor(name: str) -> Callable[[Workload, Catalog, Any], tuple[Workload, Catalog]]:
    def change(wl: Workload, cat: Catalog, value: Any) -> tuple[Workload, Catalog]:
        if float(value) <= 0:
            raise SpecError(f"must be > 0 (got {value!r})", path=WHERE, field=f"price_book.{name}")
        pb = cat.price_book.model_copy(update={name: float(value)})
        return wl, cat.model_copy(update={"price_book": pb})
    return change


def _dimm_size(wl: Workload, cat: Catalog, value: Any) -> tuple[Workload, Catalog]:
    dimms = [d for d in cat.dimms if d.size_gib == int(value)]
    if not dimms:
        sizes = sorted({d.size_gib for d in cat.dimms})
        raise SpecError(f"the catalog has no {value} GiB DIMM (sizes: {sizes})", path=WHERE, field="dimms")
    return wl, cat.model_copy(update={"dimms": dimms})


def _policy(name: str, convert: Callable[[Any], Any]) -> Callable[[Workload, Catalog, Any], tuple[Workload, Catalog]]:
    def change(wl: Workload, cat: Catalog, value: Any) -> tuple[Workload, Catalog]:
        # Re-validate so a ratio of 0 is refused here, with the field named, not deep in the optimizer.
        policy = {**wl.policy.model_dump(), name: convert(value)}
        return validate(Workload, {**wl.model_dump(), "policy": policy}, path=WHERE), cat
    return change


def _growth(wl: Workload, cat: Catalog, value: Any) -> tuple[Workload, Catalog]:
    return validate(Workload, {**wl.model_dump(), "growth_per_year": float(value)}, path=WHERE), cat


def _vm_count(wl: Workload, cat: Catalog, value: Any) -> tuple[Workload, Catalog]:
    if float(value) <= 0:
        raise SpecError(f"must be > 0 (got {value!r})", path=WHERE, field="vm_count_factor")
    flavors = [{**f.model_dump(), "count": math.ceil(f.count * float(value) - 1e-9)} for f in wl.flavors]
    return validate(Workload, {**wl.model_dump(), "flavors": flavors}, path=WHERE), cat


PARAMETERS: dict[str, Callable[[Workload, Catalog, Any], tuple[Workload, Catalog]]] = {
    "dimm_price_factor": _price_factor("dimm_price_factor"),
    "cpu_price_factor": _price_factor("cpu_price_factor"),
    "drive_price_factor": _price_factor("drive_price_factor"),
    "dimm_size_gib": _dimm_size,
    "cpu_allocation_ratio": _policy("cpu_allocation_ratio", float),
    "protection": _policy("protection", parse_protection),
    "growth_per_year": _growth,
    "vm_count_factor": _vm_count,
}


def _check(name: str) -> None:
    if name not in PARAMETERS:
        raise SpecError(f"unknown parameter {name!r}; known: {', '.join(PARAMETERS)}", path=WHERE, field=name)


def apply(wl: Workload, cat: Catalog, **changes: Any) -> tuple[Workload, Catalog]:
    """Copies of ``wl`` and ``cat`` with ``changes`` (parameter=value) applied; the inputs are untouched."""
    for name, value in changes.items():
        _check(name)
        wl, cat = PARAMETERS[name](wl, cat, value)
    return wl, cat


def label(parameter: str, value: Any) -> str:
    """How a point reads on a plot axis."""
    if parameter == "protection":
        return parse_protection(value).describe()
    if parameter.endswith("_factor"):  # price and VM-count multipliers
        return f"{float(value):g}x"
    if parameter == "dimm_size_gib":
        return f"{int(value)} GiB"
    if parameter == "growth_per_year":
        return f"{float(value):.0%}/yr"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _row(bp: Blueprint) -> dict[str, Any]:
    c = bp.cost
    vm_hosts = [n for n in bp.nodes if n.role in (NodeRole.compute, NodeRole.hyperconverged)]
    main = max(vm_hosts, key=lambda n: n.count, default=None)
    return {"status": bp.status, "tco_usd": c.tco_usd, "capex_usd": c.capex_usd,
            "opex_usd_per_month": c.opex_usd_per_month, "usd_per_vm_month": c.usd_per_vm_month,
            "usd_per_vcpu_month": c.usd_per_vcpu_month, "usd_per_gib_month": c.usd_per_gib_month,
            "nodes": bp.node_count, "vm_hosts": sum(n.count for n in vm_hosts), "racks": bp.racks_count,
            "vm_host_ram_gib": main.ram_gib if main else math.nan, "ram_per_core_gib": bp.capacity.ram_per_core_gib,
            "vm_host_config": f"{main.count}x {main.role.value} {main.sockets}x {main.cpu}, "
                              f"{main.dimm_count}x {main.dimm}" if main else "", "error": ""}


def evaluate(wl: Workload, cat: Catalog, *, solver: str = "highs", time_limit_s: float = 60.0, gap: float = 0.001,
             **changes: Any) -> dict[str, Any]:
    """Size one variant and return its figures as a dict (one row of :func:`sweep`)."""
    wl2, cat2 = apply(wl, cat, **changes)
    try:
        bp = size_cloud(wl2, cat2, solver=solver, time_limit_s=time_limit_s, gap=gap)
    except Infeasible as err:
        log.warning("what-if %s: infeasible: %s", changes, err)
        return {c: math.nan for c in COLUMNS if c not in ("parameter", "value", "label")} | {
            "status": "infeasible", "error": str(err), "vm_host_config": ""}
    return _row(bp)


def sweep(wl: Workload, cat: Catalog, parameter: str, values: Iterable[Any], *, solver: str = "highs",
          time_limit_s: float = 60.0, gap: float = 0.001, **fixed: Any) -> pd.DataFrame:
    """One sizing per value of ``parameter`` (others held at the workload's, or at ``fixed``)."""
    _check(parameter)
    rows = []
    for value in values:
        log.info("what-if %s = %s", parameter, value)
        fig = evaluate(wl, cat, solver=solver, time_limit_s=time_limit_s, gap=gap, **{**fixed, parameter: value})
        rows.append({"parameter": parameter, "value": value, "label": label(parameter, value), **fig})
    return pd.DataFrame(rows, columns=COLUMNS)


def sweeps(wl: Workload, cat: Catalog, grid: Mapping[str, Iterable[Any]] | None = None, **kw: Any) -> pd.DataFrame:
    """Every sweep of ``grid`` (default :data:`DEFAULT_SWEEPS`), one after the other, in one table."""
    grid = DEFAULT_SWEEPS if grid is None else grid
    return pd.concat([sweep(wl, cat, p, v, **kw) for p, v in grid.items()], ignore_index=True)
