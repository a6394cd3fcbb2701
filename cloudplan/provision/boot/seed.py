"""The seed a virtual-media or HTTP boot carries on its ISO, with a static address.

Network boot learns its address from DHCP; a node booted from a virtual CD
has no DHCP to ask, so its provisioning address, prefix and gateway come from
the inventory: as cloud-init network-config v2 for the ramdisk's userspace,
and as the kernel's ``ip=`` argument for an initramfs that configures the
network itself.
"""

from __future__ import annotations

import ipaddress
import uuid as uuidlib

import yaml

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import BootSpec, Inventory, Node
from cloudplan.provision import cloudinit

PROVISIONING = "provisioning"


def static_address(inv: Inventory, node: Node) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, str | None]:
    """The node's provisioning address with its prefix, and the gateway (if any)."""
    net = inv.networks.get(PROVISIONING)
    addr = node.addresses.get(PROVISIONING)
    if net is None or addr is None:
        raise ProvisioningFailed("a static provisioning address is needed (addresses.provisioning and "
                                 "networks.provisioning)", node=node.name, step="vmedia-seed")
    iface = ipaddress.ip_interface(f"{addr}/{net.network.prefixlen}")
    if iface.ip not in net.network:
        raise ProvisioningFailed(f"provisioning address {addr} is outside {net.cidr}", node=node.name,
                                 step="vmedia-seed")
    return iface, net.gateway


def network_config(inv: Inventory, node: Node) -> str:
    """cloud-init network-config v2: the provisioning NIC (by MAC when known) with its static address."""
    iface, gateway = static_address(inv, node)
    nic: dict = {"match": {"macaddress": node.mac} if node.mac else {"name": "e*"},
                 "addresses": [str(iface)], "dhcp4": False, "dhcp6": False}
    if gateway:
        nic["routes"] = [{"to": "default", "via": gateway}]
    return "# network-config for " + node.name + ", written by cloudplan\n" + yaml.safe_dump(
        {"version": 2, "ethernets": {"prov0": nic}}, sort_keys=False)


def kernel_ip_arg(inv: Inventory, node: Node) -> str:
    """``ip=<addr>::<gw>:<netmask>:<hostname>::off`` (the kernel's nfsroot syntax, which
    dracut and initramfs-tools read); the device is left empty so the first link is used."""
    iface, gateway = static_address(inv, node)
    if iface.version == 6:
        return f"ip=[{iface.ip}]::{f'[{gateway}]' if gateway else ''}:{iface.network.prefixlen}:{node.name}::off"
    return f"ip={iface.ip}::{gateway or ''}:{iface.netmask}:{node.name}::off"


def render_seed(inv: Inventory, node: Node, *, phone_home_url: str, ssh_authorized_keys: list[str]) -> dict[str, str]:
    """The NoCloud files at the root of the node's ISO."""
    instance_id = f"{node.name}-{uuidlib.uuid4().hex[:12]}"   # new per boot: cloud-init runs its first boot again
    return {
        "user-data": cloudinit.render_user_data(node.name, phone_home=phone_home_url,
                                                ssh_authorized_keys=ssh_authorized_keys),
        "meta-data": cloudinit.render_meta_data(node.name, instance_id),
        "network-config": network_config(inv, node),
    }


def kernel_cmdline(inv: Inventory, node: Node, boot: BootSpec) -> str:
    """The installer's command line, the static address, and NoCloud pointed at the CD (label CIDATA)."""
    return " ".join(x for x in (boot.cmdline.strip(), kernel_ip_arg(inv, node), "ds=nocloud") if x)
