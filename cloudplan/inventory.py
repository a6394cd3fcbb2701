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
import urllib.parse
import uuid as uuidlib
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


class BootPath(str, Enum):
    """How a node reaches its deploy ramdisk."""

    pxe = "pxe"          # DHCP + TFTP/iPXE on the provisioning network
    vmedia = "vmedia"    # a per-node ISO inserted as a virtual CD through Redfish; no DHCP
    http = "http"        # UEFI HTTP boot of that ISO from a URL given through Redfish


class DataDiskErase(str, Enum):
    """How the deploy ramdisk clears the data disks before cephadm takes them."""

    signatures = "signatures"  # wipefs: partition tables, filesystems, RAID/LVM labels; the data stays
    secure = "secure"          # the device's own erase (NVMe Format with Secure Erase, ATA Security Erase)


class BMCDriver(str, Enum):
    ipmi = "ipmi"
    redfish = "redfish"


class BootSpec(Strict):
    kernel: str = Field(description="URL of the installer kernel")
    initrd: str = Field(description="URL of the installer initrd")
    cmdline: str = Field(default="", description="kernel command line")


class RelaySubnet(Strict):
    """A provisioning subnet behind a DHCP relay (the rack's router forwards DHCP to cloudplan)."""

    cidr: str = Field(description="the subnet, e.g. 10.20.1.0/24 (IPv4)")
    range: str = Field(description="DHCP range 'first,last' inside the subnet")
    router: str = Field(description="default gateway offered on that subnet (usually the relay): nodes reach the "
                                    "boot service through it")

    @model_validator(mode="after")
    def _inside(self) -> "RelaySubnet":
        try:
            net = ipaddress.ip_network(self.cidr, strict=False)
            first, last = (ipaddress.ip_address(p.strip()) for p in self.range.split(","))
            router = ipaddress.ip_address(self.router)
        except ValueError as err:
            raise ValueError(f"relay subnet {self.cidr[:40]!r}: {str(err)[:80]}") from None
        if net.version != 4:
            raise ValueError(f"relay subnet {net}: IPv6 provisioning is not supported")
        for what, ip in (("range start", first), ("range end", last), ("router", router)):
            if ip not in net:
                raise ValueError(f"relay subnet {net}: {what} {ip} is outside it")
        if int(first) > int(last):
            raise ValueError(f"relay subnet {net}: range {self.range!r} is not ascending")
        return self


# The deploy ramdisk streams the image's bytes onto the disk: a qcow2 file written that way boots nothing.
QCOW2_REFUSAL = ("a qcow2 image: the deploy ramdisk writes raw images (convert it once: qemu-img convert -O raw "
                 "IN.qcow2 OUT.raw, compressed with gzip, xz or zstd if you like)")


class DeployImage(Strict):
    """The OS image the deploy ramdisk writes to every node's root disk (raw, optionally compressed)."""

    path: str | None = Field(default=None, description="local raw image (from `cloudplan image build`), served "
                             "by the boot service")
    url: str | None = Field(default=None, description="an image the nodes fetch themselves (http/https)")
    sha256: str | None = Field(default=None, description="SHA-256 of the image as fetched (needed with url; "
                               "computed for path)")
    compression: str | None = Field(default=None, description="none | gzip | xz | zstd; default: the suffix")

    @model_validator(mode="after")
    def _one_source(self) -> "DeployImage":
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path and url")
        if self.url is not None and self.sha256 is None:
            raise ValueError("an image url needs its sha256 (the node checks what it wrote against it)")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ValueError("sha256 must be 64 hex digits")
        name = urllib.parse.urlsplit(self.url).path if self.url else (self.path or "")
        if re.search(r"\.qcow2?(\.[a-z0-9]+)?$", name.lower()):
            raise ValueError(QCOW2_REFUSAL)
        return self


class ProvisioningConfig(Strict):
    http: str = Field(description="host:port where nodes reach cloudplan's boot and phone-home service")
    dhcp: bool = Field(default=True, description="start dnsmasq for DHCP/TFTP on the provisioning network")
    interface: str | None = Field(default=None, description="provisioning network interface for dnsmasq")
    range: str | None = Field(default=None, description="DHCP range 'first,last'")
    relays: list[RelaySubnet] = Field(default_factory=list,
                                      description="provisioning subnets behind DHCP relays: one DHCP range each")
    boot: BootSpec | None = Field(default=None, description="the installer to boot; with image: the deploy "
                                  "ramdisk (its cmdline gets the deploy arguments appended)")
    image: DeployImage | None = Field(default=None, description="the OS image written to each node's root disk; "
                                      "none: the installer ramdisk itself is what gets verified")
    ssh_user: str = Field(default="root", description="user for SSH verification after install")
    ssh_port: int = Field(default=22, gt=0, lt=65536, description="TCP port of sshd on the installed nodes")
    ssh_private_key_file: str | None = Field(default=None, description="private key for SSH verification")
    ssh_public_key_file: str | None = Field(default=None, description="public key injected through cloud-init")
    boot_path: BootPath = Field(default=BootPath.pxe, description="site default for nodes without 'boot': "
                                "pxe | vmedia | http")
    data_disk_erase: DataDiskErase = Field(default=DataDiskErase.signatures, description="site default for "
                                           "nodes without their own: signatures | secure (a disk that offers no "
                                           "secure erase fails the deploy)")

    @field_validator("http")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        if host.strip("[]") in ("0.0.0.0", "::"):
            # Nodes are sent to this address: a wildcard would bind every interface and send them nowhere.
            raise ValueError(f"{host} is every address, not one nodes can reach: give the provisioning "
                             "interface's address")
        return v


class BMC(Strict):
    address: str = Field(description="IPMI: IP address or hostname; Redfish: https://host[:port] (a bare host "
                         "means https://host)")
    port: int = Field(default=623, gt=0, lt=65536, description="IPMI UDP port (IPMI only)")
    username: str = Field(description="BMC user name")
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    password_file: str | None = Field(default=None, description="file (mode 0600) holding the password")
    driver: BMCDriver = Field(default=BMCDriver.ipmi, description="BMC protocol: ipmi | redfish")
    system: str | None = Field(default=None, description="Redfish ComputerSystem path, e.g. "
                               "/redfish/v1/Systems/1; found by itself when the BMC has exactly one")
    ca_file: str | None = Field(default=None, description="Redfish: CA bundle (PEM) the BMC's certificate "
                                "must chain to; default: the system's trust store")
    cert_sha256: str | None = Field(default=None, description="Redfish: SHA-256 fingerprint (hex, colons "
                                    "allowed) of the BMC's own certificate, pinned instead of a CA")
    insecure: bool = Field(default=False, description="Redfish: skip TLS verification (an explicit opt-in; "
                           "plain http:// addresses need it too)")

    @model_validator(mode="after")
    def _one_secret_source(self) -> "BMC":
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_env or password_file (never the password itself)")
        return self

    @model_validator(mode="after")
    def _redfish_fields(self) -> "BMC":
        if self.driver is BMCDriver.ipmi:
            if self.system or self.ca_file or self.cert_sha256 or self.insecure:
                raise ValueError("system, ca_file, cert_sha256 and insecure are Redfish settings "
                                 "(bmc.driver: redfish)")
            return self
        if self.address.startswith("http://") and not self.insecure:
            raise ValueError("a plain http:// Redfish address sends the password in clear: use https:// "
                             "or set insecure: true")
        if self.cert_sha256 is not None:
            digest = self.cert_sha256.replace(":", "").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("cert_sha256 must be 64 hex digits (colons allowed)")
            self.cert_sha256 = digest
        if self.ca_file and self.cert_sha256:
            raise ValueError("give ca_file or cert_sha256, not both")
        if self.insecure and (self.ca_file or self.cert_sha256):
            raise ValueError("insecure: true contradicts ca_file/cert_sha256")
        if self.system is not None and not self.system.startswith("/redfish/v1/Systems/"):
            raise ValueError("system must be a path under /redfish/v1/Systems/")
        return self

    @property
    def url(self) -> str:
        """The Redfish base URL (scheme and authority)."""
        a = self.address.rstrip("/")
        return a if a.startswith(("https://", "http://")) else f"https://{a}"

    def password(self, node: str = "") -> str:
        """Resolve the password at the moment of use; errors never contain it."""
        if self.password_env is not None:
            val = os.environ.get(self.password_env)
            if val is None:
                raise SpecError(f"environment variable {self.password_env} is not set",
                                field=f"{node}.bmc.password_env" if node else "bmc.password_env")
            return val
        return read_password_file(Path(self.password_file), field=f"{node}.bmc.password_file" if node
                                  else "bmc.password_file")


MAX_PASSWORD_FILE_BYTES = 4096


def read_password_file(p: Path, *, field: str) -> str:
    """The password in ``p``: a regular file of the user running cloudplan, mode 0600 or
    stricter, UTF-8, not empty. Opened without blocking (a FIFO would hang the run) and
    checked on the open descriptor (no swap between check and read)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise SpecError("password file not found", path=str(p), field=field) from None
    except OSError as err:
        raise SpecError(f"cannot open the password file: {err.strerror}", path=str(p), field=field) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpecError("password file is not a regular file", path=str(p), field=field)
        if st.st_uid != os.geteuid():
            raise SpecError(f"password file is owned by uid {st.st_uid}, not by the user running cloudplan "
                            f"(uid {os.geteuid()})", path=str(p), field=field)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SpecError("password file must not be readable by group or others (chmod 600)", path=str(p),
                            field=field)
        raw = os.read(fd, MAX_PASSWORD_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        raise SpecError(f"password file is larger than {MAX_PASSWORD_FILE_BYTES} bytes", path=str(p), field=field)
    try:
        text = raw.decode("utf-8").strip()   # the message never shows a byte of it
    except UnicodeDecodeError:
        raise SpecError("password file is not UTF-8 text", path=str(p), field=field) from None
    if not text:
        raise SpecError("password file is empty", path=str(p), field=field)
    return text


class BondMode(str, Enum):
    lacp = "802.3ad"
    active_backup = "active-backup"


# Linux bonding and netplan defaults an operator would pick for a leaf pair with MLAG:
# fast LACP rate (1 s instead of 30 s to notice a dead link), hashing on L3+L4 so one
# host's flows spread over both links, and link checks every 100 ms.
BOND_LACP_RATE = "fast"
BOND_HASH_POLICY = "layer3+4"
BOND_MII_MONITOR_MS = 100


class Bond(Strict):
    members: list[str] = Field(min_length=1, description="member interface names (a node's nics give their MACs)")
    mode: BondMode = Field(default=BondMode.lacp, description="802.3ad (LACP) or active-backup")
    mtu: int | None = Field(default=None, ge=576, le=9216, description="MTU of the bond and its members, bytes")


class Route(Strict):
    to: str = Field(description="destination in CIDR form")
    via: str = Field(description="next hop")

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError as err:
            raise ValueError(str(err)) from None

    @field_validator("via")
    @classmethod
    def _via(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v))
        except ValueError as err:
            raise ValueError(str(err)) from None


class Expect(Strict):
    cores: int | None = Field(default=None, ge=1, description="logical CPUs the installed node must report")
    ram_gib: float | None = Field(default=None, gt=0, description="RAM the node must report, GiB (5 % tolerance)")
    disks: int | None = Field(default=None, ge=0, description="data disks the node must report")


class RootDisk(Strict):
    """Root disk hints (Ironic's root device hints); every hint given must match."""

    size_gib: int | None = Field(default=None, ge=1, description="size in whole GiB, rounded down")
    serial: str | None = Field(default=None, description="disk serial")
    model: str | None = Field(default=None, description="disk model")
    by_path: str | None = Field(default=None, description="a /dev/disk/by-path name, e.g. pci-0000:00:04.0")


class Node(Strict):
    name: str = Field(description="hostname")
    role: Role = Field(description="compute | storage | control | network")
    also: list[Role] = Field(default_factory=list, description="further roles the node carries, e.g. control on "
                             "a hyperconverged host of a converged edge site")
    rack: str = Field(description="rack name")
    u: int | None = Field(default=None, ge=1, description="lowest rack unit the node occupies")
    height_u: int = Field(default=1, ge=1, description="rack units the node occupies")
    chassis: str | None = Field(default=None, description="catalog chassis name")
    bmc: BMC = Field(description="how to reach the node's BMC")
    mac: str | None = Field(default=None, description="provisioning NIC MAC; learned when absent")
    uuid: str | None = Field(default=None, description="SMBIOS system UUID, if known")
    boot_mode: BootMode = Field(default=BootMode.uefi, description="uefi or legacy network boot")
    boot: BootPath | None = Field(default=None, description="pxe | vmedia | http; default: "
                                  "provisioning.boot_path")
    addresses: dict[str, str] = Field(default_factory=dict,
                                      description="address per network name: provisioning, api, storage, ...")
    drives: dict[Tier, int] = Field(default_factory=dict,
                                    description="data drives (one Ceph OSD each) per storage tier")
    db_devices: int = Field(default=0, ge=0, description="flash drives holding the block.db and WAL of the node's "
                            "HDD OSDs (no OSD of their own)")
    expect: Expect | None = Field(default=None, description="what SSH verification checks after install")
    root_disk: RootDisk | None = Field(default=None, description="root disk hints; default: the smallest disk "
                                       "that is not a planned data disk")
    root_disk_mirror: RootDisk | None = Field(default=None, description="hints of a second root disk: / on "
                                              "software RAID1 over both, each bootable alone (needs root_disk "
                                              "hints and an image that carries mdadm)")
    data_disk_serials: list[str] = Field(default_factory=list, description="serials of the planned data disks "
                                         "(wiped, left empty); none: every disk but the root disk")
    data_disk_erase: DataDiskErase | None = Field(default=None, description="signatures | secure; default: "
                                                  "provisioning.data_disk_erase")
    power_w: float | None = Field(default=None, ge=0, description="typical power, W (from the blueprint)")
    nics: dict[str, str] = Field(default_factory=dict,
                                 description="MAC of each physical NIC by the name the installed OS gives it")

    @model_validator(mode="after")
    def _mirror(self) -> "Node":
        # Without hints on both sides, either disk could be chosen as either.
        if self.root_disk_mirror is not None:
            if self.root_disk is None or not self.root_disk.model_dump(exclude_none=True):
                raise ValueError("root_disk_mirror needs root_disk hints too (which disk is which)")
            if not self.root_disk_mirror.model_dump(exclude_none=True):
                raise ValueError("root_disk_mirror needs at least one hint")
            if self.root_disk_mirror == self.root_disk:
                raise ValueError("root_disk_mirror has the same hints as root_disk: they would name one disk")
        return self

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not HOSTNAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid hostname (lowercase letters, digits, '-')")
        return v

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: dict[str, str]) -> dict[str, str]:
        for net, text in v.items():
            try:
                ipaddress.ip_interface(text)
            except ValueError:
                raise ValueError(f"addresses.{net}: {text[:60]!r} is not an IP address") from None
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

    @field_validator("nics")
    @classmethod
    def _nics(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, mac in v.items():
            mac = mac.lower().replace("-", ":")
            if not MAC_RE.match(mac):
                raise ValueError(f"nics.{name}: {mac!r} is not a MAC address")
            out[name] = mac
        return out


def _uuid_keys(n: Node) -> list[str]:
    if not n.uuid:
        return []
    try:
        u = uuidlib.UUID(n.uuid)
    except ValueError:
        return [n.uuid.lower()]
    return [str(u), str(uuidlib.UUID(bytes_le=u.bytes))]   # either byte order is the same machine


def _bmc_keys(n: Node) -> list[str]:
    # One Redfish service manages several systems (blade chassis, an emulator): the system is the identity.
    # With no system given, the service's only one is meant, so the URL alone must be unique.
    if n.bmc.driver is BMCDriver.redfish:
        return [f"{n.bmc.url.lower()} {n.bmc.system or '(its only system)'}"]
    return [f"{n.bmc.address.lower()}:{n.bmc.port}"]


def _ip_keys(n: Node) -> list[str]:
    out = []
    for text in n.addresses.values():
        try:
            out.append(str(ipaddress.ip_interface(text).ip))
        except ValueError:
            continue   # not an address: the field's own check says so
    return out


class Network(Strict):
    cidr: str = Field(description="network in CIDR form")
    interface: str | None = Field(default=None, description="interface name on the nodes")
    gateway: str | None = Field(default=None, description="default gateway, if any")
    vlan: int | None = Field(default=None, ge=1, le=4094, description="802.1Q VLAN id")
    mtu: int | None = Field(default=None, ge=576, le=9216, description="MTU on the nodes, bytes")
    routes: list[Route] = Field(default_factory=list, description="static routes through this network")
    carried_by: list[Role] = Field(default_factory=list,
                                   description="roles whose nodes bring the interface up without an address "
                                               "(e.g. external on network nodes, for Neutron)")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _gateway_in_network(self) -> "Network":
        if self.gateway is not None:
            try:
                gw = ipaddress.ip_address(self.gateway)
            except ValueError:
                raise ValueError(f"gateway {self.gateway[:60]!r} is not an IP address") from None
            if gw not in self.network:
                raise ValueError(f"gateway {gw} is not inside {self.cidr}")
        return self

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
    bonds: dict[str, Bond] = Field(default_factory=dict, description="bonds on every node, by interface name")
    default_route_network: str = Field(default="api", description="network whose gateway is the nodes' default route")
    dns_servers: list[str] = Field(default_factory=list, description="DNS resolvers the installed nodes use")
    dns_search: list[str] = Field(default_factory=list, description="DNS search domains")
    ntp_servers: list[str] = Field(default_factory=list, description="NTP servers the installed nodes use")
    control_plane: ControlPlane | None = Field(default=None, description="registry, VIPs, TLS, Magnum options "
                                               "(from the site file; read by `cloudplan manifests`)")

    @model_validator(mode="after")
    def _unique(self) -> "Inventory":
        """Two nodes sharing a name, BMC, MAC, UUID or IP address would have one machine
        provisioned (and power-cycled) twice, or the other never: refuse, naming both."""
        for what, keys in (("name", lambda n: [n.name]), ("MAC", lambda n: [n.mac] if n.mac else []),
                           ("SMBIOS UUID", _uuid_keys), ("BMC address", _bmc_keys), ("IP address", _ip_keys)):
            seen: dict[str, Node] = {}
            for n in self.nodes:
                for key in keys(n):
                    other = seen.setdefault(key, n)
                    if other is not n:
                        raise ValueError(f"nodes {other.name} and {n.name} have the same {what} {key}")
        return self

    @model_validator(mode="after")
    def _boot_paths(self) -> "Inventory":
        """vmedia and http boots need Redfish; vmedia needs the static address its seed carries."""
        site = self.provisioning.boot_path if self.provisioning else BootPath.pxe
        for i, n in enumerate(self.nodes):
            path = n.boot or site
            if path is BootPath.pxe:
                continue
            if n.bmc.driver is not BMCDriver.redfish:
                raise ValueError(f"nodes[{i}].boot {path.value} needs bmc.driver: redfish")
            if path is BootPath.http and n.boot_mode is not BootMode.uefi:
                raise ValueError(f"nodes[{i}].boot http is UEFI HTTP boot: boot_mode must be uefi")
            if "provisioning" not in n.addresses or "provisioning" not in self.networks:
                raise ValueError(f"nodes[{i}].boot {path.value} gives the node a static address: it needs "
                                 "addresses.provisioning and networks.provisioning")
        return self

    def boot_path(self, node: Node) -> BootPath:
        return node.boot or (self.provisioning.boot_path if self.provisioning else BootPath.pxe)

    def data_disk_erase(self, node: Node) -> DataDiskErase:
        return node.data_disk_erase or (self.provisioning.data_disk_erase if self.provisioning
                                        else DataDiskErase.signatures)

    def by_role(self, role: Role) -> list[Node]:
        return [n for n in self.nodes if n.role == role or role in n.also]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SpecError(f"no node named {name!r} in the inventory")
