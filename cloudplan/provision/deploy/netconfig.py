"""A node's networks as cloud-init network-config version 2, from the inventory.

Every network the node has an address on is configured with a static address
(the provisioning network included, so nodes never depend on dnsmasq after the
run): on a physical NIC (matched by the MAC in the node's ``nics``, or the
provisioning ``mac``, and given the inventory's name), on a bond, or on a VLAN
of either. An interface named ``parent.VID`` (Kolla's ``bond0.20``) is VLAN VID
on ``parent``. A network ``carried_by`` a node's role without an address on it
(the external network on network nodes) is brought up bare for Neutron. Only
the ``default_route_network``'s gateway becomes the default
route, with the site's resolvers; other gateways would fight over it.

Version 2 is netplan's format: cloud-init hands it to netplan on the installed
OS (Debian 12, Ubuntu) and the tests check it with the real ``netplan
generate`` and the real cloud-init booted from an image.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from cloudplan.errors import SpecError
from cloudplan.inventory import (BOND_HASH_POLICY, BOND_LACP_RATE, BOND_MII_MONITOR_MS, BondMode, Inventory,
                                 Network, Node)
from cloudplan.templating import render


@dataclass
class _Device:
    name: str
    kind: str  # ethernet, bond or vlan
    mtu: int | None = None
    addresses: list[str] = field(default_factory=list)
    routes: list[dict[str, str]] = field(default_factory=list)
    nameservers: bool = False
    mac: str | None = None
    members: list[str] = field(default_factory=list)
    mode: str | None = None
    vlan_id: int | None = None
    link: str | None = None


def _split_vlan(name: str, net: Network, where: str) -> tuple[str, int | None]:
    """``bond0.20`` -> (bond0, 20); the network's ``vlan`` must agree with the suffix."""
    parent, dot, suffix = name.rpartition(".")
    if dot and suffix.isdigit():
        if net.vlan is not None and net.vlan != int(suffix):
            raise SpecError(f"interface {name!r} is VLAN {suffix} but the network says vlan {net.vlan}",
                            field=f"{where}.interface")
        return parent, int(suffix)
    if net.vlan is not None:
        return name, net.vlan
    return name, None


class _Builder:
    def __init__(self, inv: Inventory, node: Node):
        self.inv, self.node = inv, node
        self.devices: dict[str, _Device] = {}

    def physical(self, name: str) -> _Device:
        dev = self.devices.get(name)
        if dev is None:
            mac = self.node.nics.get(name)
            prov = self.inv.networks.get("provisioning")
            if mac is None and prov is not None and prov.interface == name:
                mac = self.node.mac
            dev = self.devices[name] = _Device(name, "ethernet", mac=mac)
        return dev

    def link(self, name: str) -> _Device:
        """A device that can carry addresses or VLANs: a bond of the inventory, else a NIC."""
        bond = self.inv.bonds.get(name)
        if bond is None:
            if name in self.devices and self.devices[name].kind == "vlan":
                raise SpecError(f"VLAN {name!r} cannot carry another VLAN", field="networks")
            return self.physical(name)
        dev = self.devices.get(name)
        if dev is None:
            dev = self.devices[name] = _Device(name, "bond", mtu=bond.mtu, members=list(bond.members),
                                               mode=bond.mode.value)
            for m in bond.members:
                if m in self.inv.bonds:
                    raise SpecError(f"bond {name!r} lists bond {m!r} as a member", field=f"bonds.{name}.members")
                member = self.physical(m)
                member.mtu = bond.mtu
        return dev

    def place(self, net_name: str, net: Network) -> _Device:
        where = f"networks.{net_name}"
        if not net.interface:
            raise SpecError(f"node {self.node.name} has an address on {net_name} but the network names no "
                            "interface", field=f"{where}.interface")
        parent_name, vid = _split_vlan(net.interface, net, where)
        parent = self.link(parent_name)
        if vid is None:
            return parent
        name = f"{parent_name}.{vid}"
        dev = self.devices.get(name)
        if dev is None:
            dev = self.devices[name] = _Device(name, "vlan", vlan_id=vid, link=parent_name)
        return dev

    def address(self, net_name: str, net: Network) -> str:
        raw = self.node.addresses[net_name]
        where = f"nodes[{self.node.name}].addresses.{net_name}"
        try:
            ip = ipaddress.ip_address(raw)
        except ValueError:
            raise SpecError(f"{raw!r} is not an IP address", field=where) from None
        if ip not in net.network:
            raise SpecError(f"{raw} is outside {net_name}'s {net.cidr}", field=where)
        return f"{ip}/{net.network.prefixlen}"

    def build(self) -> dict[str, _Device]:
        for net_name, net in self.inv.networks.items():
            if net_name not in self.node.addresses:
                if self.node.role in net.carried_by and net.interface:
                    self.place(net_name, net)  # up, no address: Neutron plugs its bridge into it
                continue
            dev = self.place(net_name, net)
            dev.addresses.append(self.address(net_name, net))
            if net.mtu is not None:
                dev.mtu = net.mtu
            dev.routes += [{"to": r.to, "via": r.via} for r in net.routes]
            if net_name == self.inv.default_route_network and net.gateway:
                # netplan takes "default", but cloud-init before 23.x parses v2 routes itself and
                # refuses it ("Address default is not a valid ip address"): name the prefix.
                default = "0.0.0.0/0" if net.network.version == 4 else "::/0"
                dev.routes.append({"to": default, "via": net.gateway})
                dev.nameservers = True
        self._check_mtus()
        return self.devices

    def _check_mtus(self) -> None:
        for dev in self.devices.values():
            parent = self.devices.get(dev.link) if dev.link else None
            if parent and dev.mtu and (parent.mtu or 1500) < dev.mtu:
                raise SpecError(f"VLAN {dev.name} has MTU {dev.mtu} above its link {parent.name}'s "
                                f"{parent.mtu or 1500}", field="networks")


def _by_kind(devices: dict[str, _Device], kind: str) -> list[_Device]:
    return sorted((d for d in devices.values() if d.kind == kind), key=lambda d: d.name)


def network_config(inv: Inventory, node: Node) -> dict[str, list[_Device]]:
    """The node's devices by kind (ethernets, bonds, vlans), ready for the template."""
    devices = _Builder(inv, node).build()
    return {"ethernets": _by_kind(devices, "ethernet"), "bonds": _by_kind(devices, "bond"),
            "vlans": _by_kind(devices, "vlan")}


def render_network_config(inv: Inventory, node: Node) -> str:
    """network-config v2 (YAML) for ``node``."""
    ctx = {**network_config(inv, node), "dns_servers": inv.dns_servers, "dns_search": inv.dns_search,
           "lacp_rate": BOND_LACP_RATE, "hash_policy": BOND_HASH_POLICY, "mii_ms": BOND_MII_MONITOR_MS,
           "lacp": BondMode.lacp.value}
    return render("deploy/network-config.yaml.j2", ctx, error=SpecError)
