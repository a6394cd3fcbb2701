"""The virtual rack's description, kept in ``DIR/lab.json``.

``lab up`` writes it, the lab daemon serves from it, ``lab status`` and
``lab down`` read it: whatever happened to the processes, this file says what
was made, so ``down`` can remove it all.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field

from cloudplan.errors import LabError
from cloudplan.io import write_text_atomic
from cloudplan.lab.bmcsim.ipmi import Fault

STATE_FILE = "lab.json"


class LabNode(BaseModel):
    name: str = Field(description="hostname the node gets")
    mac: str = Field(description="MAC of the VM's provisioning NIC")
    uuid: str = Field(description="SMBIOS system UUID of the VM, also the BMC's system GUID")
    bmc_address: str = Field(description="IPMI address of the node's BMC, inside the lab namespace")
    bmc_port: int = Field(default=623, description="IPMI UDP port, or the Redfish endpoint's HTTPS port")
    tap: str = Field(description="tap device of the VM's NIC, on the lab bridge")
    cpus: int = Field(default=1, ge=1, description="virtual CPUs")
    memory_mib: int = Field(default=2048, ge=256, description="VM memory, MiB")
    disk_mib: int = Field(default=64, ge=1, description="size of the VM's blank data disk, MiB")
    root_disk_mib: int = Field(default=0, ge=0, description="image deploys: size of the VM's blank root disk, "
                               "MiB (0: no root disk, the installer lab)")
    address: str | None = Field(default=None, description="image deploys: static provisioning address")
    api_macs: list[str] = Field(default_factory=list, description="image deploys: MACs of the two NICs on the "
                                "API bridge (bonded by the installed OS)")
    api_taps: list[str] = Field(default_factory=list, description="their tap devices")
    api_address: str | None = Field(default=None, description="image deploys: address on the API network")
    storage_address: str | None = Field(default=None, description="image deploys: address on the storage VLAN")
    root_serial: str | None = Field(default=None, description="image deploys: the root disk's serial")
    data_serial: str | None = Field(default=None, description="image deploys: the data disk's serial")
    uefi: bool = Field(default=False, description="image deploys: UEFI firmware (OVMF) instead of legacy BIOS")
    redfish: bool = Field(default=False, description="image deploys: a Redfish BMC (sushy-tools' emulator driving "
                          "QEMU) that boots the node from virtual media, instead of IPMI and PXE")
    miscabled: bool = Field(default=False, description="its API NICs are cabled to a segment without the API "
                            "network (a fault to rehearse)")
    fault: Fault = Field(default=Fault.none, description="fault the node's BMC plays (none, ignores-boot, ...)")


class LabState(BaseModel):
    namespace: str = Field(description="network namespace that holds the rack's network")
    bridge: str = Field(default="labbr0", description="bridge of the provisioning network, inside the namespace")
    network_cidr: str = Field(default="10.77.0.0/24", description="provisioning network")
    bmc_cidr: str = Field(default="10.77.1.0/24", description="BMC addresses, on the same bridge")
    http_port: int = Field(default=8080, description="cloudplan's boot and phone-home service port")
    image_port: int = Field(default=8081, description="port the lab serves the installer kernel/initrd on")
    bmc_username: str = Field(default="admin", description="BMC user name (the password is in DIR/bmc-password)")
    kernel: str = Field(description="installer kernel file")
    initrd: str = Field(description="installer initramfs file")
    nodes: list[LabNode] = Field(description="the machines")
    os_image: str | None = Field(default=None, description="image deploys: the OS image written to the root disks")
    api_bridge: str = Field(default="labbr1", description="image deploys: bridge of the API network (untagged) "
                            "and the storage VLAN (tagged, passed through between the nodes)")
    wrong_bridge: str = Field(default="labbr2", description="image deploys: the segment miscabled NICs end up on")
    api_cidr: str = Field(default="10.20.0.0/24", description="image deploys: API network, untagged on bond0")
    storage_cidr: str = Field(default="10.40.0.0/24", description="image deploys: storage network, on VLAN "
                              "storage_vlan")
    storage_vlan: int = Field(default=40, description="image deploys: the storage network's VLAN id")
    os_image_sha256: str | None = Field(default=None, description="its SHA-256")
    api_gateway_address: str | None = Field(default=None, description="image deploys: the API gateway the "
                                            "namespace holds; default: the API network's first address")
    planned_inventory: str | None = Field(default=None, description="`lab up --inventory`: the laid-out "
                                          "inventory the machines were built to match (a copy in the lab)")

    @property
    def gateway(self) -> str:
        """The bridge's address: where cloudplan's services listen for the nodes."""
        return str(next(ipaddress.ip_network(self.network_cidr).hosts()))

    @property
    def api_gateway(self) -> str:
        """The namespace's address on the API network: the nodes' gateway there, where ansible runs from."""
        return self.api_gateway_address or str(next(ipaddress.ip_network(self.api_cidr).hosts()))

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.network_cidr).prefixlen

    def dhcp_range(self) -> str:
        net = ipaddress.ip_network(self.network_cidr)
        return f"{net.network_address + 100},{net.network_address + 199}"


def lab_paths(lab_dir: Path) -> dict[str, Path]:
    """Every file the lab keeps, by role (one place, so up/down/daemon agree)."""
    d = Path(lab_dir)
    return {
        "state": d / STATE_FILE, "password": d / "bmc-password", "ssh_key": d / "ssh" / "id_ed25519",
        "inventory": d / "inventory.yaml", "provision_state": d / "state.db", "daemon_pid": d / "daemon.pid",
        "daemon_log": d / "daemon.log", "ready": d / "daemon.ready", "vms": d / "vms", "images": d / "images",
        "ca": d / "ca",
    }


def load_state(lab_dir: Path) -> LabState:
    path = lab_paths(lab_dir)["state"]
    try:
        return LabState.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabError(f"{path}: no lab here (run `cloudplan lab up --dir {lab_dir}` first)") from None
    except ValueError as err:
        raise LabError(f"{path}: not a lab description: {err}") from None


def save_state(lab_dir: Path, state: LabState) -> None:
    path = lab_paths(lab_dir)["state"]
    write_text_atomic(path, state.model_dump_json(indent=2))   # a crash never leaves half a description
