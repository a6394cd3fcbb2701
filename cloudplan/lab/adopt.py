"""The lab as the rack integrator: machines built to match a laid-out inventory.

``cloudplan lab up --inventory INVENTORY`` takes what ``cloudplan layout``
wrote (names, racks, the networks of the site, each node's addresses, BMC
address and driver, boot mode and path) and builds one machine per node to
match it: the BMC on the planned address, speaking the planned protocol
(IPMI, or Redfish with a certificate from the lab's CA), UEFI or legacy
firmware, a provisioning NIC on the provisioning bridge and two API NICs on
the API bridge. It then writes the inventory an integrator hands back: the
planned one with what only the built machines know (MACs, system UUIDs, disk
serials, the BMC credentials and CA) and the lab's own provisioning block (its
boot service address, deploy ramdisk, OS image and SSH key).

What the lab cannot match it says, rather than pretend: its machines are far
smaller than the plan's servers (1-2 vCPUs, 2 GiB), so each node's ``expect``
becomes what the machine has; each has one data disk, not the planned drives.
The API network must be untagged (the lab's namespace, where cloudplan and
ansible run, joins no VLAN); the storage network may be a VLAN, which the API
bridge passes between the machines.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
import uuid as uuidlib
from pathlib import Path

from cloudplan.errors import LabError
from cloudplan.inventory import BMC, BMCDriver, Bond, BondMode, BootMode, Expect, Inventory, Node, RootDisk
from cloudplan.lab.bmcsim.ipmi import Fault
from cloudplan.lab.state import LabNode, LabState, lab_paths

REQUIRED_NETWORKS = ("provisioning", "bmc", "api")
API_NICS = ("lan0", "lan1")      # names no NIC has at boot (udev cannot rename onto a name another NIC holds)
ROOT_DISK_SPARE_MIB = 512


def _bmc_host_port(node: Node) -> tuple[str, int]:
    if node.bmc.driver is BMCDriver.ipmi:
        return node.bmc.address, node.bmc.port
    url = urllib.parse.urlsplit(node.bmc.url)
    return url.hostname or "", url.port or 443


def _check(inv: Inventory, source: str) -> None:
    def fail(message: str, field: str) -> LabError:
        return LabError(f"{source}: {field}: {message}")

    for name in REQUIRED_NETWORKS:
        if name not in inv.networks:
            raise fail("the lab needs this network (provisioning, bmc and api)", f"networks.{name}")
    api = inv.networks["api"]
    if api.vlan is not None:
        raise fail(f"VLAN {api.vlan}: the lab carries the API network untagged (cloudplan and ansible run in "
                   "the lab's namespace, which joins no VLAN); a storage VLAN is fine", "networks.api.vlan")
    if not api.gateway:
        raise fail("the lab puts the API gateway on its API bridge: give one", "networks.api.gateway")
    if not 1 <= len(inv.nodes) <= 50:
        raise fail(f"the lab builds 1 to 50 machines, the inventory has {len(inv.nodes)}", "nodes")
    bmc_net = inv.networks["bmc"].network
    # the lab's own addresses: its boot service on the provisioning network's first
    # host, the namespace on the API gateway; a node there would answer for it
    taken = {"provisioning": (str(next(inv.networks["provisioning"].network.hosts())), "the lab's boot service"),
             "api": (api.gateway, "the API gateway, which the lab holds")}
    for i, n in enumerate(inv.nodes):
        for net in ("provisioning", "api"):
            if not n.addresses.get(net):
                raise fail(f"{n.name} needs an address on {net}", f"nodes[{i}].addresses.{net}")
            if str(ipaddress.ip_interface(n.addresses[net]).ip) == taken[net][0]:
                raise fail(f"{n.name}'s {n.addresses[net]} is taken by {taken[net][1]}",
                           f"nodes[{i}].addresses.{net}")
        host, _ = _bmc_host_port(n)
        try:
            inside = ipaddress.ip_address(host) in bmc_net
        except ValueError:
            inside = False
        if not inside:
            raise fail(f"{n.name}'s BMC {host!r} is not an address on the bmc network {bmc_net}",
                       f"nodes[{i}].bmc.address")
    if len(inv.bonds) > 1 or any(len(b.members) != 2 for b in inv.bonds.values()):
        raise fail("the lab cables two API NICs into one bond", "bonds")


def lab_state(inv: Inventory, source: str, *, namespace: str, kernel: Path, initrd: Path, cpus: int,
              memory_mib: int, os_image, miscabled: list[str] | None, planned: Path) -> LabState:
    """The lab's description for the machines of ``inv`` (an image deploy: ``os_image`` is required)."""
    _check(inv, source)
    names = {n.name for n in inv.nodes}
    unknown = sorted(set(miscabled or ()) - names)
    if unknown:
        raise LabError(f"--miscabled names nodes the inventory does not have: {', '.join(unknown)}")
    nodes = []
    for i, n in enumerate(inv.nodes, start=1):
        host, port = _bmc_host_port(n)
        nodes.append(LabNode(
            **machine_identity(i, n.name, namespace, os_image),
            bmc_address=host, bmc_port=port, cpus=cpus, memory_mib=memory_mib, fault=Fault.none,
            address=_ip(n.addresses["provisioning"]), api_address=_ip(n.addresses["api"]),
            storage_address=_ip(n.addresses["storage"]) if n.addresses.get("storage") else None,
            uefi=n.boot_mode is BootMode.uefi, redfish=n.bmc.driver is BMCDriver.redfish,
            miscabled=n.name in (miscabled or ())))
    nets = inv.networks
    storage = nets.get("storage")
    return LabState(namespace=namespace, kernel=str(kernel), initrd=str(initrd), nodes=nodes,
                    os_image=str(os_image.path), os_image_sha256=os_image.sha256,
                    network_cidr=nets["provisioning"].cidr, bmc_cidr=nets["bmc"].cidr, api_cidr=nets["api"].cidr,
                    api_gateway_address=nets["api"].gateway,
                    storage_cidr=storage.cidr if storage else LabState.model_fields["storage_cidr"].default,
                    storage_vlan=(storage.vlan if storage and storage.vlan else
                                  LabState.model_fields["storage_vlan"].default),
                    planned_inventory=str(planned))


def machine_identity(index: int, name: str, namespace: str, os_image) -> dict:
    """What makes the ``index``-th lab machine itself: MACs, SMBIOS UUID, taps, disk
    serials and, for an image deploy (``os_image``), the root disk's size."""
    ident = {"name": name, "mac": f"52:54:00:77:00:{index:02x}", "tap": f"labtap{index:02d}",
             "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{namespace}.{name}"))}
    if os_image is None:
        return ident | {"root_disk_mib": 0}
    return ident | {
        # the root disk leaves room past the image for the seed partition and cloud-init's growpart
        "root_disk_mib": (os_image.size_bytes >> 20) + ROOT_DISK_SPARE_MIB,
        "api_macs": [f"52:54:00:78:00:{index:02x}", f"52:54:00:79:00:{index:02x}"],
        "api_taps": [f"labtap{index:02d}a", f"labtap{index:02d}b"],
        "root_serial": f"ROOT-{index:02d}", "data_serial": f"DATA-{index:02d}"}


def _ip(text: str) -> str:
    return str(ipaddress.ip_interface(text).ip)


def integrated(inv: Inventory, state: LabState, lab_dir: Path, prov) -> Inventory:
    """``inv`` as the integrator hands it back: the lab's provisioning block, and per node what the built
    machine is (MACs, UUID, disk serials, BMC credentials and CA, its size as ``expect``)."""
    p = lab_paths(lab_dir)
    by_name = {n.name: n for n in state.nodes}
    bond_name, bond = next(iter(inv.bonds.items()), (None, None))
    nic_names = tuple(bond.members) if bond else API_NICS
    if bond_name is None:
        bond_name = (inv.networks["api"].interface or "bond0").split(".")[0]
        bond = Bond(members=list(nic_names), mode=BondMode.active_backup)
    nodes = []
    for n in inv.nodes:
        lab = by_name[n.name]
        bmc = BMC(driver=n.bmc.driver, address=n.bmc.address, port=n.bmc.port, username=state.bmc_username,
                  password_file=str(p["password"]), system=n.bmc.system,
                  ca_file=str(p["ca"] / "ca.pem") if lab.redfish else None)
        nodes.append(n.model_copy(update={
            "bmc": bmc, "mac": lab.mac, "uuid": lab.uuid, "nics": dict(zip(nic_names, lab.api_macs)),
            "root_disk": RootDisk(serial=lab.root_serial), "data_disk_serials": [lab.data_serial],
            # The kernel keeps ~60 MiB + 1.6 % for itself: 2 GiB shows as ~1.92 GiB, inside the 5 % tolerance.
            "expect": Expect(cores=lab.cpus, ram_gib=lab.memory_mib / 1024, disks=1)}))
    return inv.model_copy(update={"provisioning": prov, "nodes": nodes, "bonds": {bond_name: bond}})
