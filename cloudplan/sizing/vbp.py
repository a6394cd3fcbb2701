"""Vector bin packing benchmark: VPSolver ``.vbp`` instances through :func:`pack`.

``.vbp`` format: line 1 the number of dimensions d; line 2 the d capacities;
line 3 the number m of item types; then m lines of d sizes and a demand. Each
instance is solved as one bin type with unit cost. Paths may be files,
directories (searched recursively) or ``.tar.gz`` archives, read in place.

The published results (``--known``) are read only after all instances are
solved, to report the gap to the optimum; the solver never sees them.
"""

from __future__ import annotations

import csv
import logging
import os
import statistics
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cloudplan.errors import CloudplanError, SpecError
from cloudplan.sizing.packing import BinType, ItemType, pack, verify

log = logging.getLogger(__name__)


@dataclass
class VbpInstance:
    name: str
    capacity: tuple[int, ...]
    items: list[ItemType]

    @property
    def n_items(self) -> int:
        return sum(it.count for it in self.items)


@dataclass
class VbpRun:
    instance: str
    d: int
    n: int
    bins: int | None
    lower_bound: int
    optimal: bool
    seconds: float
    status: str


def parse_vbp(text: str, name: str = "<vbp>") -> VbpInstance:
    """Parse one instance; a malformed file raises :class:`SpecError` with the line."""
    tokens: list[tuple[int, list[str]]] = [(n + 1, ln.split()) for n, ln in enumerate(text.splitlines())
                                           if ln.strip() and not ln.lstrip().startswith("#")]
    pos = 0

    def ints(count: int | None, what: str) -> list[int]:
        nonlocal pos
        if pos >= len(tokens):
            raise SpecError(f"unexpected end of file, expected {what}", path=name)
        line, parts = tokens[pos]
        pos += 1
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise SpecError(f"expected integers for {what}, got {' '.join(parts)!r}", path=name, line=line) from None
        if count is not None and len(vals) != count:
            raise SpecError(f"expected {count} integers for {what}, got {len(vals)}", path=name, line=line)
        if any(v < 0 for v in vals):
            raise SpecError(f"negative value in {what}", path=name, line=line)
        return vals

    (d,) = ints(1, "the number of dimensions")
    if d < 1:
        raise SpecError("the number of dimensions must be at least 1", path=name, line=tokens[0][0])
    cap = tuple(ints(d, "the capacities"))
    (m,) = ints(1, "the number of item types")
    items = []
    for k in range(m):
        vals = ints(d + 1, f"item type {k + 1} (d sizes and a demand)")
        items.append(ItemType(f"item{k + 1}", tuple(vals[:d]), vals[d]))
    return VbpInstance(name, cap, items)


def iter_sources(paths: list[str | os.PathLike]) -> list[tuple[str, str]]:
    """(file name, text) of every ``.vbp`` under the given files, directories and tarballs."""
    out: list[tuple[str, str]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise SpecError("no such file or directory", path=str(p))
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.vbp") if f.is_file())
            out += [(f.name, f.read_text()) for f in files]
        elif p.name.endswith((".tar.gz", ".tgz", ".tar")):
            try:
                with tarfile.open(p) as tar:
                    members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".vbp")),
                                     key=lambda m: m.name)
                    out += [(Path(m.name).name, tar.extractfile(m).read().decode()) for m in members]
            except tarfile.TarError as e:
                raise SpecError(f"unreadable archive: {e}", path=str(p)) from e
        else:
            out.append((p.name, p.read_text()))
    if not out:
        raise SpecError("no .vbp instances found", path=", ".join(map(str, paths)))
    return out


def solve_instance(name: str, text: str, time_limit_s: float) -> VbpRun:
    """Solve one instance as one bin type of unit cost and check the packing."""
    inst = parse_vbp(text, name)
    bins = [BinType("bin", inst.capacity, 1.0)]
    try:
        res = pack(inst.items, bins, time_limit_s=time_limit_s)
    except CloudplanError as e:
        log.warning("%s: %s", name, e)
        return VbpRun(name, len(inst.capacity), inst.n_items, None, 0, False, time_limit_s, "error")
    verify(res, inst.items, bins)
    return VbpRun(name, len(inst.capacity), inst.n_items, res.bins, int(round(res.lower_bound)),
                  res.optimal, round(res.seconds, 3), res.status)


#: capacity per dimension of the generated triplet instances
TRIPLET_CAPACITY = 1000
#: the generated family: dimensions, item counts (multiples of 3) and instances per (d, n)
TRIPLET_DIMS = (3, 5, 10)
TRIPLET_SIZES = (60, 120, 249, 498)
TRIPLET_SEEDS = 5


def triplet_instance(d: int, n: int, seed: int, capacity: int = TRIPLET_CAPACITY) -> VbpInstance:
    """A tight instance whose optimum is ``n / 3`` bins by construction (seeded).

    Falkenauer's triplets in ``d`` dimensions: every optimal bin holds three items
    that fill it exactly in every dimension, and every size lies strictly between
    a quarter and a half of the capacity, so no bin holds four items and any
    packing into ``n / 3`` bins must be made of exactly full triplets."""
    if n % 3 or n <= 0 or d < 1:
        raise CloudplanError(f"a triplet instance needs n a positive multiple of 3 and d >= 1 (got n={n}, d={d})")
    rng = np.random.default_rng([seed, d, n])
    lo, hi = capacity // 4 + 1, (capacity - 1) // 2
    sizes = np.zeros((n, d), dtype=np.int64)
    for k in range(n // 3):
        for dim in range(d):
            # third = capacity - first - second must also lie in [lo, hi]
            first = int(rng.integers(lo, capacity - 2 * lo + 1))
            second = int(rng.integers(max(lo, capacity - first - hi), min(hi, capacity - first - lo) + 1))
            sizes[3 * k:3 * k + 3, dim] = rng.permutation([first, second, capacity - first - second])
    sizes = sizes[rng.permutation(n)]
    items = [ItemType(f"item{k + 1}", tuple(int(v) for v in row), 1) for k, row in enumerate(sizes)]
    return VbpInstance(f"triplet_{n}_{d}_{seed}.vbp", (capacity,) * d, items)


def format_vbp(inst: VbpInstance) -> str:
    """The instance in VPSolver's ``.vbp`` format (what :func:`parse_vbp` reads)."""
    lines = [str(len(inst.capacity)), " ".join(map(str, inst.capacity)), str(len(inst.items))]
    lines += [" ".join(map(str, it.size)) + f" {it.count}" for it in inst.items]
    return "\n".join(lines) + "\n"


def triplet_sources(dims=TRIPLET_DIMS, sizes=TRIPLET_SIZES, seeds: int = TRIPLET_SEEDS) -> list[tuple[str, str]]:
    """(name, .vbp text) of the generated triplet family, the same for every run."""
    out = []
    for d in dims:
        for n in sizes:
            for seed in range(seeds):
                inst = triplet_instance(d, n, seed)
                out.append((inst.name, format_vbp(inst)))
    return out


def triplet_known(sources: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """The optimum of each generated triplet instance (n / 3), in the ``--known`` form."""
    return {Path(name).stem: {"OPT": int(name.split("_")[1]) // 3} for name, _ in sources}


def _solve_star(args: tuple[str, str, float]) -> VbpRun:
    return solve_instance(*args)


def run_benchmark(paths: list[str | os.PathLike], time_limit_s: float = 5.0, jobs: int = 1,
                  progress=None, extra: list[tuple[str, str]] | None = None) -> list[VbpRun]:
    """Solve every instance found under ``paths`` plus ``extra`` (name, text) ones;
    ``progress(run)`` is called after each."""
    sources = (iter_sources(paths) if paths else []) + list(extra or [])
    if not sources:
        raise SpecError("no .vbp instances given", path="")
    tasks = [(name, text, time_limit_s) for name, text in sources]
    runs: list[VbpRun] = []
    if jobs <= 1:
        for t in tasks:
            runs.append(_solve_star(t))
            if progress:
                progress(runs[-1])
        return runs
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for run in pool.map(_solve_star, tasks, chunksize=1):
            runs.append(run)
            if progress:
                progress(run)
    return runs


def local_search_rate(name: str, text: str, seconds: float, seed: int = 0) -> dict:
    """The bin-elimination local search alone, from the best greedy packing, for
    ``seconds``: the steps it makes per second and the bins it reaches (no bound: it
    runs until the time is up or no move is left)."""
    from cloudplan.sizing.packing import local
    from cloudplan.sizing.packing.heur import best_greedy
    from cloudplan.sizing.packing.types import to_problem

    inst = parse_vbp(text, name)
    prob = to_problem(inst.items, [BinType("bin", inst.capacity, 1.0)])
    if not local.applicable(prob):
        raise SpecError(f"the local search does not apply (more than {local.MAX_COPIES} items, "
                        f"or an item larger than the bin)", path=name)
    start = best_greedy(prob)
    t0 = time.monotonic()
    reducer = local.Reducer(prob, start, seed)   # loads the compiled steps
    t1 = time.monotonic()
    reducer.run(1, t1 + seconds)
    ran = time.monotonic() - t1
    return {"instance": name, "n": inst.n_items, "greedy_bins": int(sum(k for _, _, k in start)),
            "bins": reducer.bins, "steps": reducer.steps, "seconds": round(ran, 3),
            "steps_per_s": round(reducer.steps / ran) if ran > 0 else 0, "setup_s": round(t1 - t0, 3)}


def read_known(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """The published summary (tab-separated: instance_name, LB, OPT, best_overall, ...)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", path=str(path)) from e
    if not rows or "instance_name" not in rows[0] or "OPT" not in rows[0]:
        raise SpecError("expected tab-separated columns instance_name, LB, OPT, best_overall", path=str(path))
    out = {}
    for n, r in enumerate(rows, start=2):
        try:
            out[r["instance_name"]] = {k: int(v) for k, v in r.items() if k != "instance_name" and v not in ("", None)}
        except ValueError:
            raise SpecError("non-integer value", path=str(path), line=n) from None
    return out


def _class_d(instance: str) -> tuple[str, int]:
    parts = Path(instance).stem.split("_")
    if len(parts) >= 3 and parts[2].isdigit():
        return parts[0], int(parts[2])
    return parts[0], 0


def compare_known(runs: list[VbpRun], known: dict[str, dict[str, int]]) -> list[dict]:
    """Per (class, d) and overall: instances with a known optimum, mean gap to it,
    how many reached it, and the same for the best published heuristic."""
    groups: dict[tuple[str, int], list[tuple[VbpRun, dict]]] = {}
    for r in runs:
        k = known.get(Path(r.instance).stem)
        if k and k.get("OPT", -1) > 0 and r.bins is not None:
            groups.setdefault(_class_d(r.instance), []).append((r, k))

    def row(label: str, d: str, pairs: list[tuple[VbpRun, dict]]) -> dict:
        gaps = [(r.bins - k["OPT"]) / k["OPT"] for r, k in pairs]
        pub = [(k["best_overall"] - k["OPT"]) / k["OPT"] for r, k in pairs if "best_overall" in k]
        return {"class": label, "d": d, "known": len(pairs),
                "mean_gap_pct": round(100 * statistics.mean(gaps), 2) if gaps else None,
                "at_opt": sum(r.bins == k["OPT"] for r, k in pairs),
                "proven": sum(r.optimal for r, _ in pairs),
                "best_overall_gap_pct": round(100 * statistics.mean(pub), 2) if pub else None,
                "best_overall_at_opt": sum(k.get("best_overall") == k["OPT"] for _, k in pairs),
                "better_than_best_overall": sum(r.bins < k.get("best_overall", 10**9) for r, k in pairs)}

    table = [row(c, str(d), groups[(c, d)]) for c, d in sorted(groups)]
    table.append(row("all", "all", [p for g in groups.values() for p in g]))
    return table


def summary(runs: list[VbpRun]) -> dict:
    solved = [r for r in runs if r.bins is not None]
    return {"instances": len(runs), "solved": len(solved), "proven_optimal": sum(r.optimal for r in runs),
            "total_seconds": round(sum(r.seconds for r in runs), 1),
            "mean_seconds": round(statistics.mean(r.seconds for r in runs), 3) if runs else 0.0}


def as_dicts(runs: list[VbpRun]) -> list[dict]:
    return [asdict(r) for r in runs]
