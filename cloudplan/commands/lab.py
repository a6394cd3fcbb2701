"""`cloudplan lab up|down|status`: a virtual rack to rehearse a zero-touch bring-up."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cloudplan.commands import err, out
from cloudplan.errors import UsageError
from cloudplan.lab import rack
from cloudplan.lab.bmcsim.ipmi import Fault

lab_app = typer.Typer(help="A virtual rack (QEMU machines behind IPMI BMCs on a PXE network) to rehearse "
                           "`cloudplan provision` on. Needs root.", no_args_is_help=True)

DIR_HELP = "Directory of the lab: its inventory, keys, disks, console logs."
DEFAULT_DIR = Path("cloudplan-lab")


def _faults(values: list[str] | None) -> dict[str, Fault]:
    faults: dict[str, Fault] = {}
    for v in values or []:
        name, sep, kind = v.partition("=")
        try:
            faults[name] = Fault(kind)
        except ValueError:
            raise UsageError(f"--fault {v!r}: give NODE=KIND with KIND one of "
                             f"{', '.join(f.value for f in Fault if f is not Fault.none)}") from None
        if not sep or not name:
            raise UsageError(f"--fault {v!r}: give NODE=KIND, e.g. lab-cmp-02=ignores-boot")
    return faults


@lab_app.command("up")
def up_cmd(
    nodes: int = typer.Option(3, "--nodes", "-n", help="Number of machines (1-50)."),
    lab_dir: Path = typer.Option(DEFAULT_DIR, "--dir", help=DIR_HELP),
    namespace: str = typer.Option(rack.DEFAULT_NAMESPACE, "--namespace", help="Network namespace to create."),
    fault: list[str] = typer.Option(None, "--fault", help="NODE=KIND: a BMC that misbehaves, e.g. "
                                    "lab-cmp-02=ignores-boot (repeatable)."),
    cache: Path = typer.Option(None, "--cache", help="Where the installer image is built and kept "
                               "(default: ~/.cache/cloudplan/lab)."),
    memory_mib: int = typer.Option(2048, "--memory-mib", help="Memory of each machine, MiB."),
    cpus: int = typer.Option(1, "--cpus", help="Virtual CPUs of each machine."),
    image_cache: Path = typer.Option(None, "--image", help="Deploy an OS image: the `cloudplan image build` "
                                     "cache to take it from (built there if missing). The machines get a root "
                                     "disk and boot the deploy ramdisk."),
    ramdisk_cache: Path = typer.Option(None, "--ramdisk-cache", help="With --image: where the deploy ramdisk "
                                       "is built and kept (default: CACHE/deploy-ramdisk)."),
    miscabled: list[str] = typer.Option(None, "--miscabled", help="With --image: NODE whose API NICs are "
                                        "cabled to a segment without the API network, a fault to rehearse "
                                        "(repeatable)."),
    uefi: list[str] = typer.Option(None, "--uefi", help="With --image: NODE boots UEFI firmware (OVMF) instead "
                                   "of legacy BIOS (repeatable)."),
    redfish: list[str] = typer.Option(None, "--redfish", help="With --image: NODE has a Redfish BMC (HTTPS, "
                                      "the lab's CA) and boots its deploy from virtual media, no DHCP or PXE "
                                      "(repeatable; needs sushy-tools: pip install 'cloudplan[lab]')."),
    inventory: Path = typer.Option(None, "--inventory", help="With --image: build one machine per node of "
                                   "this laid-out inventory (`cloudplan layout`), on its networks and "
                                   "addresses, with the BMC driver and firmware it names; the lab's "
                                   "inventory is that one completed with the machines' MACs, serials "
                                   "and credentials."),
) -> None:
    """Create the rack: a namespace with a bridge, N powered-off VMs each behind its own BMC,
    an installer image built from Debian packages (or, with --image, the deploy ramdisk and an
    OS image), and an inventory for them.

    Example: sudo cloudplan lab up --nodes 3 --dir lab/ --image .cache/os-image
    --redfish lab-cmp-02 --uefi lab-cmp-02

    Example: sudo cloudplan lab up --dir lab/ --image .cache/os-image --inventory inventory.yaml
    """
    res = rack.up(lab_dir, nodes=nodes, namespace=namespace, faults=_faults(fault), cache_dir=cache,
                  cpus=cpus, memory_mib=memory_mib, image_cache=image_cache, ramdisk_cache=ramdisk_cache,
                  miscabled=miscabled or None, uefi=uefi or None, redfish=redfish or None, inventory=inventory)
    out.print(f"{len(res.state.nodes)} machines, powered off, in namespace {res.state.namespace}; "
              f"inventory: {res.inventory}", markup=False, highlight=False)
    out.print("Bring them up with:", markup=False)
    out.print(f"  {res.command}", markup=False, highlight=False)


@lab_app.command("down")
def down_cmd(lab_dir: Path = typer.Option(DEFAULT_DIR, "--dir", help=DIR_HELP)) -> None:
    """Remove everything `lab up` made: VMs, BMCs, namespace, bridge, taps, and the lab
    directory with all in it (inventory, keys, disks, console logs, a provisioning state file).

    Example: sudo cloudplan lab down --dir lab/
    """
    for line in rack.down(lab_dir):
        err.print(line, markup=False, highlight=False)


@lab_app.command("status")
def status_cmd(
    lab_dir: Path = typer.Option(DEFAULT_DIR, "--dir", help=DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show what runs: the lab daemon, the namespace, and each machine's power.

    Example: cloudplan lab status --dir lab/ --json
    """
    st = rack.status(lab_dir)
    if as_json:
        out.print_json(json.dumps(st))
        return
    out.print(f"namespace {st['namespace']}: {'present' if st['namespace_exists'] else 'missing'}; "
              f"lab daemon: {'pid ' + str(st['daemon_pid']) if st['daemon_pid'] else 'not running'}",
              markup=False, highlight=False)
    table = Table("node", "power", "BMC", "MAC", "fault")
    for n in st["nodes"]:
        table.add_row(n["name"], n["power"], n["bmc"], n["mac"], n["fault"])
    out.print(table)
    out.print(f"provision with: {st['command']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")
