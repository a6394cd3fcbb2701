"""`cloudplan bench provision`: many simulated BMCs from off to "waiting for boot".

``--driver ipmi`` (default): pyghmi-based IPMI simulators in one child process.
``--driver redfish``: sushy-tools' Redfish emulator (fake driver) in several child
processes over HTTPS, with faulty BMCs behind fault proxies."""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from cloudplan.commands import bench_app, out
from cloudplan.errors import UsageError

PASSWORD_ENV = "CLOUDPLAN_BENCH_BMC_PASSWORD"
# Faults cycled over the faulty share, from the field: some fail the node, some only slow it.
BENCH_FAULTS = ("unreachable", "wrong-password", "stops-answering", "slow", "ignores-boot", "busy")
# Redfish: no answer at all, 401, a hung web server (silent proxy), 503 to every third request.
REDFISH_FAULTS = ("unreachable", "wrong-password", "stops-answering", "busy")


@dataclass
class BenchResult:
    driver: str
    nodes: int
    faulty: int
    concurrency: int
    wall_s: float
    reached: int                     # nodes in "waiting-boot" at the end
    healthy_s: list[float]
    faulty_s: list[float]
    counts: dict[str, int]
    sim_power_ons: int
    failed: dict[str, int]           # failed nodes per fault ("none": a healthy BMC failed)
    errors: dict[str, int]           # "fault: error" (without node and address) -> failed nodes


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_bench(nodes: int = 500, faulty: float = 0.1, *, concurrency: int = 64, bmc_timeout_s: float = 15.0,
              call_timeout_s: float = 5.0, state: str | None = None) -> BenchResult:
    """Start ``nodes`` simulated BMCs in a child process (``faulty`` share of them
    faulty), run the orchestrator up to waiting-boot, and time every node. The
    state goes to a temporary SQLite file, or to ``state`` (an empty store, e.g.
    a scratch PostgreSQL database)."""
    from cloudplan.inventory import Inventory
    from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions
    from cloudplan.provision.states import NodeState
    from cloudplan.provision.store import open_store
    from cloudplan.lab.bmcsim.ipmi import Fault, FleetProcess, SimSpec

    password = secrets.token_urlsafe(12)
    os.environ[PASSWORD_ENV] = password          # the inventory names the variable, never the value
    n_faulty = round(nodes * faulty)
    step = nodes / n_faulty if n_faulty else 0
    faulty_idx = {int(i * step) for i in range(n_faulty)}
    specs, kinds = [], {}
    for i in range(nodes):
        name = f"sim-{i:04d}"
        fault = Fault(BENCH_FAULTS[len(kinds) % len(BENCH_FAULTS)]) if i in faulty_idx else Fault.none
        if i in faulty_idx:
            kinds[name] = fault
        specs.append(SimSpec(name=name, password=password if fault is not Fault.wrong_password else "other-pw",
                             fault=fault, silent_after=3))
    with FleetProcess(specs) as fleet, tempfile.TemporaryDirectory() as tmp:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            http_port = s.getsockname()[1]
        inv = Inventory.model_validate({
            "name": "bench",
            "provisioning": {"http": f"127.0.0.1:{http_port}", "dhcp": False},
            "nodes": [{"name": sp.name, "role": "compute", "rack": f"r{i // 40 + 1}",
                       "mac": f"52:54:00:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}",
                       "bmc": {"address": "127.0.0.1", "port": fleet.ports[sp.name], "username": "admin",
                               "password_env": PASSWORD_ENV}} for i, sp in enumerate(specs)],
        })
        opts = ProvisionOptions(concurrency=concurrency, bmc_timeout_s=bmc_timeout_s, call_timeout_s=call_timeout_s,
                                stop_at=NodeState.waiting_boot, dhcp=False)
        t0 = time.monotonic()
        with open_store(state or Path(tmp) / "bench.db", exclusive=True) as store:
            if store.nodes():
                raise UsageError(f"--state {store.where}: the benchmark needs an empty store")
            result = Orchestrator(inv, store, opts).run()
        wall = time.monotonic() - t0
        power_ons = sum(fleet.power_ons().values())
    counts = {s.value: n for s, n in result.counts().items() if n}
    return BenchResult(
        driver="ipmi", nodes=nodes, faulty=n_faulty, concurrency=concurrency, wall_s=wall,
        reached=counts.get("waiting-boot", 0),
        healthy_s=sorted(v for k, v in result.seconds.items() if k not in kinds),
        faulty_s=sorted(v for k, v in result.seconds.items() if k in kinds),
        counts=counts, sim_power_ons=power_ons,
        failed=_tally(kinds.get(n, Fault.none).value for n, s in result.states.items() if s.is_failed()),
        errors=_tally(f"{kinds.get(n, Fault.none).value}: {e.split('): ', 1)[-1]}" for n, e in result.errors.items()))


def _faulty_indexes(nodes: int, faulty: float) -> set[int]:
    n_faulty = round(nodes * faulty)
    step = nodes / n_faulty if n_faulty else 0
    return {int(i * step) for i in range(n_faulty)}


def run_bench_redfish(nodes: int = 500, faulty: float = 0.1, *, emulators: int = 4, concurrency: int = 64,
                      bmc_timeout_s: float = 15.0, call_timeout_s: float = 20.0) -> BenchResult:
    """The Redfish variant: ``nodes`` fake systems over ``emulators`` sushy-tools processes."""
    from cloudplan.inventory import Inventory
    from cloudplan.lab.bmcsim.proxy import FaultProxy
    from cloudplan.lab.bmcsim.redfish import EmulatorFleet, FakeSystem, free_tcp_port
    from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions
    from cloudplan.provision.states import NodeState
    from cloudplan.provision.store import StateStore

    password = secrets.token_urlsafe(12)
    os.environ[PASSWORD_ENV] = password
    os.environ[PASSWORD_ENV + "_WRONG"] = password + "-not"
    bad = _faulty_indexes(nodes, faulty)
    systems = [FakeSystem(f"rf-{i:04d}") for i in range(nodes)]
    kinds = {systems[i].name: REDFISH_FAULTS[k % len(REDFISH_FAULTS)] for k, i in enumerate(sorted(bad))}
    with tempfile.TemporaryDirectory() as tmp, \
            EmulatorFleet(systems, processes=emulators, workdir=Path(tmp), password=password) as fleet:
        proxies: dict[tuple[str, str], FaultProxy] = {}   # (fault, emulator URL) -> the proxy before it

        def proxy(kind: str, upstream: str) -> FaultProxy:
            if (kind, upstream) not in proxies:
                p = FaultProxy(upstream, fleet.ca.issue(f"proxy-{len(proxies)}"), upstream_ca=str(fleet.ca.cert_file))
                p.start()
                if kind == "stops-answering":
                    p.go_silent()
                else:
                    p.fail_every(3)
                proxies[kind, upstream] = p
            return proxies[kind, upstream]

        dead = f"https://127.0.0.1:{free_tcp_port()}"   # nothing listens there

        def bmc(s) -> dict:
            kind = kinds.get(s.name)
            url = fleet.url_of(s)
            if kind == "unreachable":
                url = dead
            elif kind in ("stops-answering", "busy"):
                url = proxy(kind, url).url
            return {"driver": "redfish", "address": url, "system": s.path, "ca_file": str(fleet.ca.cert_file),
                    "username": "admin",
                    "password_env": PASSWORD_ENV + ("_WRONG" if kind == "wrong-password" else "")}

        try:
            inv = Inventory.model_validate({
                "name": "bench-redfish",
                "provisioning": {"http": f"127.0.0.1:{free_tcp_port()}", "dhcp": False},
                "nodes": [{"name": s.name, "role": "compute", "rack": f"r{i // 40 + 1}",
                           "mac": f"52:54:01:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}",
                           "bmc": bmc(s)} for i, s in enumerate(systems)],
            })
            opts = ProvisionOptions(concurrency=concurrency, bmc_timeout_s=bmc_timeout_s,
                                    call_timeout_s=call_timeout_s, stop_at=NodeState.waiting_boot, dhcp=False)
            t0 = time.monotonic()
            with StateStore(Path(tmp) / "bench.db", exclusive=True) as store:
                result = Orchestrator(inv, store, opts).run()
            wall = time.monotonic() - t0
        finally:
            for p in proxies.values():
                p.stop()
        power_ons = sum(fleet.resets().values())
    counts = {s.value: n for s, n in result.counts().items() if n}
    return BenchResult(
        driver="redfish", nodes=nodes, faulty=len(bad), concurrency=concurrency, wall_s=wall,
        reached=counts.get("waiting-boot", 0),
        healthy_s=sorted(v for k, v in result.seconds.items() if k not in kinds),
        faulty_s=sorted(v for k, v in result.seconds.items() if k in kinds),
        counts=counts, sim_power_ons=power_ons,
        failed=_tally(kinds.get(n, "none") for n, s in result.states.items() if s.is_failed()),
        errors=_tally(f"{kinds.get(n, 'none')}: {e.split('): ', 1)[-1]}" for n, e in result.errors.items()))


def _tally(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in items:
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


@bench_app.command("provision")
def bench_provision(
    nodes: int = typer.Option(500, "--nodes", min=1, help="Simulated BMCs."),
    faulty: float = typer.Option(0.1, "--faulty", min=0.0, max=1.0,
                                 help="Share of faulty BMCs (unreachable, wrong password, stops answering, "
                                      "slow, ignores boot override, busy)."),
    concurrency: int = typer.Option(64, "--concurrency", min=1, help="Nodes talking to their BMC at once."),
    bmc_timeout: float = typer.Option(15.0, "--bmc-timeout", min=1, help="Seconds per BMC step, retries included."),
    driver: str = typer.Option("ipmi", "--driver", help="ipmi (pyghmi simulators) or redfish (sushy-tools "
                               "emulators over HTTPS)."),
    emulators: int = typer.Option(4, "--emulators", min=1, help="Redfish: emulator processes to spread the "
                                  "systems over."),
    state: str = typer.Option(None, "--state", help="IPMI: an empty state store to use instead of a temporary "
                              "SQLite file, e.g. a scratch PostgreSQL database (postgresql://USER@HOST/DB)."),
) -> None:
    """Bring simulated BMCs from off to "waiting for boot" (verify, one-time network
    boot, power on) and print the wall time and p50/p95 time per node.

    Example: cloudplan bench provision --nodes 500 --faulty 0.1 --driver redfish

    Example: cloudplan bench provision --nodes 200 --state postgresql://cloudplan@db1/scratch
    """
    if driver == "redfish":
        if state:
            raise UsageError("--state: only with --driver ipmi")
        r = run_bench_redfish(nodes, faulty, emulators=emulators, concurrency=concurrency, bmc_timeout_s=bmc_timeout)
    elif driver == "ipmi":
        r = run_bench(nodes, faulty, concurrency=concurrency, bmc_timeout_s=bmc_timeout, state=state)
    else:
        raise UsageError(f"--driver: expected ipmi or redfish, got {driver!r}")
    where = f" over {emulators} emulator processes" if r.driver == "redfish" else ""
    out.print(f"bench provision ({r.driver}): {r.nodes} simulated BMCs{where}, {r.faulty} faulty, "
              f"concurrency {r.concurrency}", markup=False, highlight=False)
    out.print(f"  wall time            {r.wall_s:8.2f} s", markup=False, highlight=False)
    out.print(f"  reached waiting-boot {r.reached:8d}   ({', '.join(f'{k} {v}' for k, v in r.counts.items())})",
              markup=False, highlight=False)
    out.print(f"  healthy per node     p50 {_pct(r.healthy_s, 50):6.2f} s   p95 {_pct(r.healthy_s, 95):6.2f} s"
              f"   max {max(r.healthy_s, default=float('nan')):6.2f} s", markup=False, highlight=False)
    out.print(f"  faulty per node      p50 {_pct(r.faulty_s, 50):6.2f} s   p95 {_pct(r.faulty_s, 95):6.2f} s"
              f"   max {max(r.faulty_s, default=float('nan')):6.2f} s", markup=False, highlight=False)
    out.print(f"  failed, by fault     {', '.join(f'{k} {v}' for k, v in r.failed.items()) or 'none'}",
              markup=False, highlight=False)
    for msg, n in sorted(r.errors.items(), key=lambda kv: -kv[1])[:8]:
        out.print(f"    {n:4d} x {msg}", markup=False, highlight=False)
    out.print(f"  power-on commands at the {'emulators' if r.driver == 'redfish' else 'simulators'}: "
              f"{r.sim_power_ons}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """The command hangs off the shared `bench` sub-app (registered at import)."""
