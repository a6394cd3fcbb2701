"""How a node gets to its deploy ramdisk: one :class:`BootPathDriver` per way.

- :class:`~.pxe.PxeBoot` (``boot: pxe``): DHCP/TFTP hands firmware iPXE, which
  chains to the boot service; the BMC is asked for a one-time network boot
  (IPMI or Redfish).
- :class:`~.vmedia.VirtualMediaBoot` (``boot: vmedia``): a per-node ISO
  (:mod:`.iso`, holding the ramdisk and a seed with a static address,
  :mod:`.seed`) is served by the boot service, inserted through Redfish
  ``VirtualMedia``, booted once from CD and ejected once the node reported in.
- :class:`~.vmedia.HttpBoot` (``boot: http``): the same ISO booted by the
  firmware's UEFI HTTP boot from a URL given in the Redfish boot override
  (``UefiHttp``), where the BMC offers it.

The orchestrator calls :meth:`BootPathDriver.arm` before powering the node
on, and :meth:`BootPathDriver.after_phone_home` before setting the disk as the
boot device; every BMC call goes through ``ctx.bmc``, the orchestrator's
retried, slot-bounded step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import BootMode, BootPath, Inventory, Node
from cloudplan.provision.bmc import BMC, Clock
from cloudplan.provision.deploy.cmdline import DeployArgs


@dataclass(frozen=True)
class DeployMedia:
    """The deploy ramdisk and this boot's arguments, for a path that carries them on an ISO.

    Given, the node's ISO boots cloudplan's deploy ramdisk (``grub.cfg`` holding ``args``, which
    must give the static address); not given, it boots ``provisioning.boot``'s installer with its
    NoCloud seed on the CD."""

    kernel: Path
    initrd: Path
    args: DeployArgs
    console: str | None = None   # the site's kernel arguments (``provisioning.boot.cmdline``); None: ttyS0


@dataclass
class BootContext:
    """What a boot path needs from the orchestrator for one node and one boot."""

    inv: Inventory
    node: Node                   # as the boot service must recognise it (GUID filled in when learned)
    token: str                   # this boot's phone-home token
    client: BMC
    boot: object                 # the BootServer
    state_dir: Path              # where per-node artifacts (ISOs) are written
    bmc: Callable[[str, Callable], object]   # run one retried BMC step: bmc(what, fn)
    on_event: Callable[[str, str], None]
    clock: Clock
    bootdev_attempts: int
    ssh_public_keys: list[str]
    retired: list[str] = field(default_factory=list)   # token hashes of this node's earlier boot attempts
    deploy: DeployMedia | None = None   # the deploy ramdisk to put on an ISO, instead of the installer

    def register(self, *, static: bool = False) -> None:
        """Expect this boot at the boot service, held until the orchestrator arms it right before
        the power command (an earlier boot asking first is refused). ``static``: the boot fetches
        no iPXE script, so the attempt is bound to the node's static provisioning address now."""
        if self.boot is None:
            return
        bound = None
        if static:
            text = self.node.addresses.get("provisioning", "")
            try:
                bound = str(ipaddress.ip_interface(text).ip)
            except ValueError:
                raise ProvisioningFailed("a boot from virtual media or UEFI HTTP needs a static "
                                         "addresses.provisioning (no DHCP is involved)", node=self.node.name,
                                         step="set-boot") from None
        self.boot.register(self.node, self.token, retired=self.retired, armed=False, bound_address=bound)

    @property
    def uefi(self) -> bool:
        return self.node.boot_mode is BootMode.uefi


class BootPathDriver(Protocol):
    path: BootPath
    describe: str                # "network", "virtual media", "UEFI HTTP": for state details

    def preflight(self) -> None:
        """What this path needs on the provisioning host, checked before any BMC is touched."""

    def arm(self, ctx: BootContext) -> str:
        """Make the next boot reach the ramdisk; returns a detail for the state log."""

    def after_phone_home(self, ctx: BootContext) -> None:
        """Undo what :meth:`arm` left on the BMC once the node reported in (the installer's phone-home,
        or the deploy ramdisk's ``done`` report), before the disk boots (idempotent: also run on resume)."""

    def release(self, boot: object, name: str) -> None:
        """Stop serving what :meth:`arm` published for ``name``."""


def driver_for(path: BootPath) -> BootPathDriver:
    from cloudplan.provision.boot.pxe import PxeBoot
    from cloudplan.provision.boot.vmedia import HttpBoot, VirtualMediaBoot

    return {BootPath.pxe: PxeBoot, BootPath.vmedia: VirtualMediaBoot, BootPath.http: HttpBoot}[path]()


__all__ = ["BootContext", "BootPathDriver", "DeployMedia", "driver_for"]
