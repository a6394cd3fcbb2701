"""The inventory: every physical node with its rack, addresses and BMC.

`cloudplan layout` writes it from a blueprint; people also write it by hand
from a rack integrator's sheet. Provisioning and the manifests read it.
Passwords are never stored here: only the name of an environment variable or
of a 0600 file that holds them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from enum import Enum
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from cloudplan.controlplane import ControlPlane
from cloudplan.errors import SpecError
from cloudplan.spec import Strict, Tier

HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


class Role(str, Enum):
    compute = "compute"
    storage = "storage"
    control = "control"
    network = "network"


class BootMode(str, Enum):
    uefi = "uefi"
    legacy = "legacy"


class BootSpec(Strict):
    kernel: str = Field(description="URL of the installer kernel")
    initrd: str = Field(description="URL of the installer initrd")
    cmdline: str = Field(default="", description="kernel command line")


class ProvisioningConfig(Strict):
    http: str = Field(description="host:port where nodes reach cloudplan's boot and phone-home service")
    dhcp: bool = Field(default=True, description="start dnsmasq for DHCP/TFTP on the provisioning network")
    interface: str | None = Field(default=None, description="provisioning network interface for dnsmasq")
    range: str | None = Field(default=None, description="DHCP range 'first,last'")
    boot: BootSpec | None = Field(default=None, description="the installer to boot")
    ssh_user: str = Field(default="root", description="user for SSH verification after install")
    ssh_port: int = Field(default=22, gt=0, lt=65536, description="TCP port of sshd on the installed nodes")
    ssh_private_key_file: str | None = Field(default=None, description="private key for SSH verification")
    ssh_public_key_file: str | None = Field(default=None, description="public key injected through cloud-init")

    @field_validator("http")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        return v


class BMC(Strict):
    address: str = Field(description="BMC IP address or hostname")
    port: int = Field(default=623, gt=0, lt=65536, description="IPMI UDP port")
    username: str = Field(description="BMC user name")
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    password_file: str | None = Field(default=None, description="file (mode 0600) holding the password")
    driver: str = Field(default="ipmi", description="BMC protocol driver")

    @model_validator(mode="after")
    def _one_secret_source(self) -> "BMC":
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_env or password_file (never the password itself)")
        return self

    def password(self, node: str = "") -> str:
        """Resolve the password at the moment of use; errors never contain it."""
        if self.password_env is not None:
            val = os.environ.get(self.password_env)
            if val is None:
                raise SpecError(f"environment variable {self.password_env} is not set",
                                field=f"{node}.bmc.password_env" if node else "bmc.password_env")
            return val
        p = Path(self.password_file)
        try:
            mode = p.stat().st_mode
        except OSError:
            raise SpecError("password file not found", path=str(p)) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SpecError("password file must not be readable by group or others (chmod 600)", path=str(p))
        return p.read_text(encoding="utf-8").strip()


class Expect(Strict):
    cores: int | None = Field(default=None, ge=1, description="logical CPUs the installed node must report")
    ram_gib: float | None = Field(default=None, gt=0, description="RAM the node must report, GiB (5 % tolerance)")
    disks: int | None = Field(default=None, ge=0, description="data disks the node must report")


class Node(Strict):
    name: str = Field(description="hostname")
    role: Role = Field(description="compute | storage | control | network")
    rack: str = Field(description="rack name")
    u: int | None = Field(default=None, ge=1, description="lowest rack unit the node occupies")
    height_u: int = Field(default=1, ge=1, description="rack units the node occupies")
    chassis: str | None = Field(default=None, description="catalog chassis name")
    bmc: BMC = Field(description="how to reach the node's BMC")
    mac: str | None = Field(default=None, description="provisioning NIC MAC; learned when absent")
    uuid: str | None = Field(default=None, description="SMBIOS system UUID, if known")
    boot_mode: BootMode = Field(default=BootMode.uefi, description="uefi or legacy network boot")
    addresses: dict[str, str] = Field(default_factory=dict,
                                      description="address per network name: provisioning, api, storage, ...")
    drives: dict[Tier, int] = Field(default_factory=dict,
                                    description="data drives (one Ceph OSD each) per storage tier")
    expect: Expect | None = Field(default=None, description="what SSH verification checks after install")
    power_w: float | None = Field(default=None, ge=0, description="typical power, W (from the blueprint)")

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not HOSTNAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid hostname (lowercase letters, digits, '-')")
        return v

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower().replace("-", ":")
        if not MAC_RE.match(v):
            raise ValueError(f"{v!r} is not a MAC address")
        return v


class Network(Strict):
    cidr: str = Field(description="network in CIDR form")
    interface: str | None = Field(default=None, description="interface name on the nodes")
    gateway: str | None = Field(default=None, description="default gateway, if any")
    vlan: int | None = Field(default=None, ge=1, le=4094, description="802.1Q VLAN id")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError as err:
            raise ValueError(str(err)) from None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)


class RackDevice(Strict):
    name: str = Field(description="device name, e.g. r1-leaf-a")
    role: str = Field(description="leaf, spine or management switch")
    model: str = Field(description="catalog model")
    u: int = Field(ge=1, description="lowest rack unit")
    height_u: int = Field(default=1, ge=1, description="rack units")
    power_w: float = Field(default=0, ge=0, description="typical power, W")


class RackInfo(Strict):
    name: str = Field(description="rack name")
    model: str | None = Field(default=None, description="catalog rack model")
    height_u: int = Field(default=42, ge=1, description="rack units in total")
    power_budget_w: float | None = Field(default=None, gt=0, description="power budget, W")
    devices: list[RackDevice] = Field(default_factory=list, description="switches and other non-node devices")


class Inventory(Strict):
    name: str | None = Field(default=None, description="cloud name")
    provisioning: ProvisioningConfig | None = Field(default=None, description="boot service settings")
    networks: dict[str, Network] = Field(default_factory=dict,
                                         description="site networks by name: provisioning, api, bmc, storage, external")
    nodes: list[Node] = Field(min_length=1, description="every physical node")
    racks: list[RackInfo] = Field(default_factory=list, description="rack models and their switches, if known")
    control_plane: ControlPlane | None = Field(default=None, description="registry, VIPs, TLS, Magnum options "
                                               "(from the site file; read by `cloudplan manifests`)")

    @model_validator(mode="after")
    def _unique(self) -> "Inventory":
        for attr in ("name", "mac"):
            seen: dict[str, int] = {}
            for i, n in enumerate(self.nodes):
                key = getattr(n, attr)
                if key is None:
                    continue
                if key in seen:
                    raise ValueError(f"nodes[{i}].{attr} {key!r} repeats nodes[{seen[key]}]")
                seen[key] = i
        return self

    def by_role(self, role: Role) -> list[Node]:
        return [n for n in self.nodes if n.role == role]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SpecError(f"no node named {name!r} in the inventory")
