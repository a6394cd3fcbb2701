"""`cloudplan provision`, `cloudplan status`, `cloudplan events`: zero-touch bring-up."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from cloudplan.commands import err, out
from cloudplan.errors import CloudplanError, StateMissing, UsageError
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.provision.states import NodeState

STATE_HELP = ("Where this cloud's provisioning state lives: an SQLite file (created on first use; also "
              "sqlite:///PATH) or a PostgreSQL database several hosts share, postgresql://USER@HOST[:PORT]/DB "
              "(password from ~/.pgpass or PGPASSWORD).")


def _split_names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _counts_table(counts: dict[NodeState, int], total: int, elapsed_s: float) -> Table:
    table = Table(title=f"provisioning {total} node(s), {elapsed_s:.0f} s", title_justify="left")
    for state in NodeState:
        table.add_column(state.value, justify="right")
    table.add_row(*(str(counts.get(s, 0)) for s in NodeState))
    return table


class _Progress:
    """Counts per state: a live table on a terminal, a line per change otherwise."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.live: Live | None = None
        self.last: tuple | None = None

    def __enter__(self) -> "_Progress":
        if err.is_terminal:
            self.live = Live(console=err, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def __call__(self, counts: dict[NodeState, int], total: int) -> None:
        elapsed = time.monotonic() - self.t0
        if self.live is not None:
            self.live.update(_counts_table(counts, total, elapsed))
            return
        key = tuple(counts.get(s, 0) for s in NodeState)
        if key != self.last:
            self.last = key
            parts = ", ".join(f"{s.value} {n}" for s, n in counts.items() if n)
            err.print(f"[{elapsed:6.1f} s] {parts}", markup=False, highlight=False)


def provision_cmd(
    inventory: Path = typer.Argument(..., help="Inventory YAML (from `cloudplan layout` or written by hand)."),
    state: str = typer.Option(..., "--state", help=STATE_HELP),
    concurrency: int = typer.Option(32, "--concurrency", min=1,
                                    help="Nodes talking to their BMC or over SSH at once."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be done; touch no BMC, start nothing."),
    dhcp: bool | None = typer.Option(None, "--dhcp/--no-dhcp",
                                     help="Start dnsmasq for DHCP/TFTP (default: the inventory's provisioning.dhcp)."),
    boot_timeout: float = typer.Option(1800.0, "--boot-timeout", min=1,
                                       help="Seconds from power-on to phone-home before a node fails."),
    bmc_timeout: float = typer.Option(120.0, "--bmc-timeout", min=1,
                                      help="Seconds for each BMC step, retries included."),
    ssh_timeout: float = typer.Option(300.0, "--ssh-timeout", min=1,
                                      help="Seconds for SSH verification to succeed, retries included."),
    power_check: float = typer.Option(20.0, "--power-check", min=1,
                                      help="While waiting for a phone-home, read the BMC's power this often "
                                           "(seconds): a node that went dark is booted again once."),
    only: list[str] = typer.Option(None, "--only", help="Provision only these nodes (comma-separated, repeatable)."),
    deploy_timeout: float = typer.Option(1800.0, "--deploy-timeout", min=1,
                                         help="Image deploys: seconds from the deploy ramdisk's first report to "
                                              "its last (image written and read back, seed written)."),
    first_boot_timeout: float = typer.Option(900.0, "--first-boot-timeout", min=1,
                                             help="Image deploys: seconds from the power-on from disk to the "
                                                  "installed OS's phone-home."),
) -> None:
    """Bring the inventory's nodes from off to deployed (BMC, boot, phone-home, SSH check).

    For each node: verify its BMC (IPMI or Redfish, as bmc.driver says), arm its
    boot path (boot: pxe sets a one-time network boot; vmedia inserts a per-node
    ISO as a virtual CD; http sets a UEFI HTTP boot to that ISO's URL), power on,
    wait for the phone-home, eject the ISO, set disk boot, verify over SSH.

    With provisioning.image in the inventory (a `cloudplan image build` file, or
    a URL and sha256) the node boots the deploy ramdisk instead: it writes the
    image and the node's seed to the root disk, reports each step and powers
    off; cloudplan sets disk boot, powers it on, and the installed OS phones
    home; SSH verification then checks /, the networks and the data disks.

    Re-running resumes from the state file: deployed nodes are left alone, failed
    ones are retried. Exit code 0 only when every node asked for is deployed.

    With --state postgresql://... several hosts (one per site or rack row) share
    one state: each node is worked on by one run at a time, and a node another
    live run holds is left to it (named in the result).

    Example: cloudplan provision inventory.yaml --state cloud.db --concurrency 50

    Example: cloudplan provision inventory.yaml --state postgresql://cloudplan@db1/cloud --only r1-cmp-01,r1-cmp-02
    """
    from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions
    from cloudplan.provision.planning import password_problems, plan, preflight, select_nodes
    from cloudplan.provision.store import describe_state, open_store, state_exists

    inv = load_model(Inventory, inventory)
    options = ProvisionOptions(concurrency=concurrency, boot_timeout_s=boot_timeout, bmc_timeout_s=bmc_timeout,
                               ssh_timeout_s=ssh_timeout, power_check_s=power_check, dhcp=dhcp,
                               only=_split_names(only), deploy_timeout_s=deploy_timeout,
                               first_boot_timeout_s=first_boot_timeout)
    if dry_run:
        try:
            store = open_store(state, create=False) if state_exists(state) else None
        except StateMissing:   # a database no run has written to yet: every node is new
            store = None
        try:
            planned = plan(inv, store, options)
        finally:
            if store is not None:
                store.close()
        if inv.provisioning is not None:
            try:
                preflight(inv.provisioning, source=str(inventory), paths={inv.boot_path(n) for n in inv.nodes})
            except CloudplanError as e:
                err.print(f"Warning: {e} (the real run stops here)", markup=False, highlight=False)
        for e in password_problems(select_nodes(inv, options.only), str(inventory)):
            err.print(f"Warning: {e} (the real run stops here)", markup=False, highlight=False)
        table = Table(title=f"dry run: {len(planned)} node(s); nothing was done", title_justify="left")
        for col in ("node", "stored state", "starts at", "would do"):
            table.add_column(col)
        for p in planned:
            table.add_row(p.name, p.stored.value if p.stored else "(new)", p.resume_at.value, "; ".join(p.actions))
        out.print(table)
        return
    if inv.provisioning is None:
        raise UsageError(f"{inventory}: no 'provisioning' section (http, boot, ssh_user ...)")
    # The run checks the password sources itself, node by node, before any BMC is touched.
    preflight(inv.provisioning, source=str(inventory), paths={inv.boot_path(n) for n in inv.nodes})
    try:
        with open_store(state, exclusive=True) as store, _Progress() as progress:
            result = Orchestrator(inv, store, options, on_progress=progress, source=str(inventory)).run()
    except KeyboardInterrupt:
        err.print(f"Interrupted; the state is kept in {describe_state(state)}: run the same command again to resume.",
                  markup=False, highlight=False)
        raise typer.Exit(130) from None
    _print_result(result)
    if not result.ok:
        raise typer.Exit(1)


def _print_result(result) -> None:
    counts = {s.value: n for s, n in result.counts().items() if n}
    out.print(f"{len(result.asked)} node(s) in {result.wall_s:.1f} s: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()), markup=False, highlight=False)
    for name, msg in sorted(result.errors.items()):
        out.print(f"  {name}: {msg}", markup=False, highlight=False)


def status_cmd(
    state: str = typer.Option(..., "--state", help=STATE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects (name, state, step, error, "
                                                        "seconds_in_state, ...)."),
) -> None:
    """Show each node's state, step, error and time in state.

    Example: cloudplan status --state cloud.db --json

    Example: cloudplan status --state postgresql://cloudplan@db1/cloud
    """
    from cloudplan.provision.store import open_store

    with open_store(state, create=False) as store:
        now = store.clock()
        rows = [r.as_status(now) for r in store.nodes()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table()
    for col in ("node", "state", "step", "in state", "error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["state"], r["step"] or "", f"{r['seconds_in_state']:.0f} s", r["error"] or "")
    out.print(table)


def events_cmd(
    node: str = typer.Argument(..., help="Node name."),
    state: str = typer.Option(..., "--state", help=STATE_HELP),
) -> None:
    """Show one node's history: every transition and what happened in between.

    Example: cloudplan events --state cloud.db r1-cmp-01
    """
    from cloudplan.provision.store import open_store

    with open_store(state, create=False) as store:
        if not store.has_node(node):
            raise CloudplanError(f"{store.where}: no node named {node!r} in the state file")
        events = store.events(node)
    table = Table(title=node, title_justify="left")
    for col in ("time (UTC)", "event", "step", "detail"):
        table.add_column(col)
    for e in events:
        at = datetime.fromtimestamp(e.at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        what = f"{e.from_state or '-'} -> {e.to_state}" if e.kind == "transition" else e.kind
        table.add_row(at, what, e.step or "", e.detail)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("provision")(provision_cmd)
    app.command("status")(status_cmd)
    app.command("events")(events_cmd)
