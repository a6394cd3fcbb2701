"""PXE/iPXE: the node's NIC boots from the network; DHCP/TFTP (dnsmasq) and the
boot service's iPXE scripts do the rest (see :mod:`cloudplan.provision.pxe`)."""

from __future__ import annotations

from cloudplan.inventory import BootPath
from cloudplan.provision.bmc import set_boot_network
from cloudplan.provision.boot import BootContext


class PxeBoot:
    path = BootPath.pxe
    describe = "network"

    def preflight(self) -> None:
        pass   # dnsmasq is checked when it starts

    def arm(self, ctx: BootContext) -> str:
        ctx.register()
        confirmed = ctx.bmc("set boot device", lambda: set_boot_network(
            ctx.client, uefi=ctx.uefi, attempts=ctx.bootdev_attempts, clock=ctx.clock, on_event=ctx.on_event))
        return f"network boot {'confirmed' if confirmed else 'not confirmed by the BMC'}"

    def after_phone_home(self, ctx: BootContext) -> None:
        pass   # a one-time network boot is consumed by the boot itself

    def release(self, boot: object, name: str) -> None:
        pass
