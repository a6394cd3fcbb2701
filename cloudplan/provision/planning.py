"""What a provisioning run will do, and what it needs, decided before any BMC is touched.

:func:`plan` lists each node's actions from its stored state (``provision
--dry-run`` prints it); :func:`preflight` checks once what every node would
otherwise find out alone after its boot timeout: an installer to boot, SSH
keys that can be read, the tools of each boot path in use, a readable BMC
password per node.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudplan.errors import SpecError, UsageError
from cloudplan.inventory import BMCDriver, BootMode, BootPath, Inventory, Node, ProvisioningConfig
from cloudplan.provision.boot import driver_for
from cloudplan.provision.cloudinit import read_public_keys
from cloudplan.provision.states import NodeState, resume_state
from cloudplan.provision.store import Store

if TYPE_CHECKING:
    from cloudplan.provision.orchestrator import ProvisionOptions


@dataclass
class PlannedNode:
    name: str
    stored: NodeState | None
    resume_at: NodeState
    actions: list[str]


def select_nodes(inv: Inventory, only: list[str] | None) -> list[Node]:
    if not only:
        return list(inv.nodes)
    names = {n.name for n in inv.nodes}
    missing = [n for n in only if n not in names]
    if missing:
        raise UsageError(f"--only: no node named {', '.join(map(repr, missing))} in the inventory")
    wanted = set(only)
    return [n for n in inv.nodes if n.name in wanted]


def bmc_where(node: Node) -> str:
    return node.bmc.url if node.bmc.driver is BMCDriver.redfish else f"{node.bmc.address}:{node.bmc.port}"


def _image_actions(start: list[str], at: NodeState, stop_at: NodeState | None, path: BootPath) -> list[str]:
    out: list[str] = []
    if at is NodeState.pending:
        out += start
        if stop_at is NodeState.waiting_boot:
            return out
        out += ["wait for the deploy ramdisk's reports (image written, verified, seed written, done)"]
    if at in (NodeState.pending, NodeState.image_written):
        out += ["wait for it to power off", *(["eject the virtual media"] if path is BootPath.vmedia else []),
                "set boot device to disk", "power on",
                "wait for the installed OS to phone home"]
    return out + ["SSH verification of the installed OS with its reported host key"]


def _actions(node: Node, at: NodeState, stop_at: NodeState | None, path: BootPath = BootPath.pxe,
             image: bool = False) -> list[str]:
    bmc = f"{node.bmc.driver.value.upper() if node.bmc.driver is BMCDriver.ipmi else 'Redfish'} BMC {bmc_where(node)}"
    mode = "UEFI" if node.boot_mode is BootMode.uefi else "legacy"
    iso = ("the deploy ramdisk, its arguments with the static address" if image
           else "static address in its seed")
    arm = {BootPath.pxe: [f"set one-time {mode} network boot, read it back"],
           BootPath.vmedia: [f"build the node's deploy ISO ({iso}), serve it",
                             "insert it as virtual media", f"set one-time {mode} boot from CD, read it back"],
           BootPath.http: [f"build the node's deploy ISO ({iso}), serve it",
                           "set one-time UEFI HTTP boot to its URL"]}[path]
    wait = {BootPath.pxe: "wait for iPXE, user-data and phone-home"}.get(path, "wait for the phone-home")
    steps = {
        NodeState.pending: [f"verify {bmc} (power state, system GUID)", *arm, "power on (or reset when on)"],
        NodeState.phoned_home: [wait],
        NodeState.deployed: (["eject the virtual media"] if path is BootPath.vmedia else [])
        + ["set boot device to disk", "SSH verification with the reported host key"],
    }
    if at.is_deployed():
        return ["nothing: already deployed (BMC not touched)"]
    if image:
        return _image_actions(steps[NodeState.pending], at, stop_at, path)
    out: list[str] = []
    if at is NodeState.pending:
        out += steps[NodeState.pending]
        if stop_at is NodeState.waiting_boot:
            return out
        out += steps[NodeState.phoned_home]
    out += steps[NodeState.deployed]
    return out


def _image_mode(inv: Inventory) -> bool:
    return inv.provisioning is not None and inv.provisioning.image is not None


def plan(inv: Inventory, store: Store | None, options: ProvisionOptions) -> list[PlannedNode]:
    """What a run would do to each node, from the stored states; touches nothing."""
    known = {r.name: r.state for r in store.nodes()} if store is not None else {}
    out = []
    for node in select_nodes(inv, options.only):
        stored = known.get(node.name)
        at = resume_state(stored) if stored is not None else NodeState.pending
        out.append(PlannedNode(node.name, stored, at, _actions(node, at, options.stop_at, inv.boot_path(node),
                                                               image=_image_mode(inv))))
    return out


def password_problems(nodes: list[Node], source: str | None = None) -> list[SpecError]:
    """The BMC password sources that cannot be read (unset variable, bad file), one error per
    problem naming its nodes; the password itself is read and dropped, never kept or shown."""
    found: dict[tuple, list[str]] = {}
    errors: dict[tuple, SpecError] = {}
    for n in nodes:
        try:
            n.bmc.password(n.name)
        except SpecError as err:
            key = (err.path, err.message)
            found.setdefault(key, []).append(n.name)
            errors.setdefault(key, err)
    out = []
    for key, names in found.items():
        err = errors[key]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        field = err.field if len(names) == 1 else f"bmc.{(err.field or '').rsplit('.', 1)[-1]}"
        out.append(SpecError(f"{err.message} (node{'s' if len(names) > 1 else ''} {shown})",
                             path=err.path or source, field=field))
    return out


def preflight(cfg: ProvisioningConfig, source: str | None = None, paths: set[BootPath] = frozenset(),
              nodes: list[Node] = ()) -> None:
    """What every node needs, checked once before any BMC is touched: an installer to
    boot, SSH keys that can be read, the tools of each boot path in use, and a readable
    BMC password for each of ``nodes``. Otherwise each node would find out alone,
    after its boot timeout."""
    for path in sorted(paths, key=lambda p: p.value):
        driver_for(path).preflight()
    problems = password_problems(list(nodes), source)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s); --dry-run lists them)" if len(problems) > 1 else ""
        raise SpecError(f"{problems[0].message}{more}", path=problems[0].path, field=problems[0].field)
    if cfg.boot is None:
        raise SpecError("no installer to boot: give provisioning.boot {kernel, initrd, cmdline}",
                        path=source, field="provisioning.boot")
    if cfg.ssh_public_key_file:
        read_public_keys(cfg.ssh_public_key_file)
    if cfg.ssh_private_key_file and not os.access(cfg.ssh_private_key_file, os.R_OK):
        raise SpecError("cannot read the SSH private key", path=cfg.ssh_private_key_file,
                        field="provisioning.ssh_private_key_file")


def static_address(node: Node) -> str | None:
    """The node's provisioning address from the inventory (``addresses.provisioning``), if any."""
    text = node.addresses.get("provisioning")
    if not text:
        return None
    try:
        return str(ipaddress.ip_interface(text).ip)
    except ValueError:
        raise SpecError(f"{text!r} is not an IP address", field=f"{node.name}.addresses.provisioning") from None
