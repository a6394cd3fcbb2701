"""A virtual rack on one machine: rehearse a zero-touch bring-up before the hardware arrives.

``up`` makes, as root, a network namespace holding a bridge (the
provisioning network), one tap device and one blank disk per machine, and
starts the lab daemon inside the namespace (every node's IPMI BMC on its own
address, and the installer files over HTTP). The VMs stay off until their BMC
powers them on. It writes an inventory in the provisioning format and returns
the one ``cloudplan provision`` command that brings the rack up. ``down``
removes everything ``up`` made; ``status`` says what runs.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from cloudplan.errors import LabError
from cloudplan.inventory import (BMC, BMCDriver, Bond, BondMode, BootMode, BootPath, BootSpec, DeployImage, Expect,
                                 Inventory, Network, Node, ProvisioningConfig, Role, RootDisk)
from cloudplan.io import write_model, write_text_atomic
from cloudplan.lab.adopt import API_NICS, machine_identity
from cloudplan.lab.state import LabNode, LabState, lab_paths, load_state, save_state
from cloudplan.lab.bmcsim.ipmi import Fault

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "cloudplan-lab"
DAEMON_START_TIMEOUT_S = 90.0   # a Redfish BMC (an emulator process) takes seconds to answer on a busy host
DAEMON_STOP_TIMEOUT_S = 15.0
# QEMU's NIC ROMs (Debian ipxe-qemu) are iPXE: the machines network-boot with no pxelinux.
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-e1000.rom")
REQUIRED_TOOLS = {"ip": "iproute2", "qemu-system-x86_64": "qemu-system-x86", "dnsmasq": "dnsmasq"}
REDFISH_PORT = 8443     # each Redfish BMC's HTTPS endpoint, on the BMC's own address


@dataclass
class LabUp:
    state: LabState
    inventory: Path
    command: str


# -- helpers -------------------------------------------------------------------------


def _run(*cmd: str, what: str) -> str:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise LabError(f"{what}: `{' '.join(cmd)}` failed: {res.stderr.strip() or res.returncode}")
    return res.stdout


def check_host(*, redfish: bool = False) -> None:
    """Root and the tools the lab drives; one error naming everything missing."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates a network namespace, a bridge and tap devices)")
    missing = [f"{tool} (Debian {pkg})" for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool)]
    if redfish:
        import importlib.util

        from cloudplan.provision.boot.iso import missing_tools

        if importlib.util.find_spec("sushy_tools") is None:
            missing.append("sushy-tools, the Redfish BMCs' emulator (pip install 'cloudplan[lab]')")
        missing += [f"Debian {pkg} (the virtual-media ISO)" for pkg in missing_tools()]
    if not IPXE_ROM.exists():
        missing.append(f"{IPXE_ROM} (Debian ipxe-qemu)")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun (the tun kernel module)")
    if missing:
        raise LabError("missing on this host: " + ", ".join(missing))


def namespace_exists(ns: str) -> bool:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return any(line.split()[0] == ns for line in res.stdout.splitlines() if line.strip())


def _pid_alive(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process still runs and is ours (its command line has ``marker``)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    return pid if marker in cmdline else None


# -- planning ------------------------------------------------------------------------


def plan(lab_dir: Path, *, nodes: int, namespace: str, faults: dict[str, Fault] | None = None,
         kernel: Path, initrd: Path, cpus: int = 1, memory_mib: int = 2048, os_image=None,
         miscabled: list[str] | None = None, uefi: list[str] | None = None,
         redfish: list[str] | None = None) -> LabState:
    """The lab's description: names, MACs, UUIDs, BMC addresses, taps."""
    if not 1 <= nodes <= 50:
        raise LabError(f"--nodes must be 1 to 50 (got {nodes})")
    faults = faults or {}
    lab_nodes = []
    for i in range(1, nodes + 1):
        name = f"lab-cmp-{i:02d}"
        lab_nodes.append(LabNode(
            **machine_identity(i, name, namespace, os_image),
            bmc_address=f"10.77.1.{10 + i}", bmc_port=REDFISH_PORT if name in (redfish or ()) else 623,
            cpus=cpus, memory_mib=memory_mib, fault=faults.get(name, Fault.none),
            address=f"10.77.0.{10 + i}" if os_image else None,
            api_address=f"10.20.0.{10 + i}" if os_image else None,
            storage_address=f"10.40.0.{10 + i}" if os_image else None,
            miscabled=name in (miscabled or ()), uefi=name in (uefi or ()), redfish=name in (redfish or ())))
    unknown = (set(faults) | set(miscabled or ()) | set(uefi or ()) | set(redfish or ())) - {n.name for n in lab_nodes}
    if unknown:
        raise LabError(f"--fault, --miscabled, --uefi and --redfish name unknown nodes: {', '.join(sorted(unknown))}")
    _require_image(miscabled, uefi, redfish, os_image is not None)
    if set(faults) & set(redfish or ()):
        raise LabError("--fault plays IPMI BMC faults; a --redfish node has no IPMI BMC")
    return LabState(namespace=namespace, kernel=str(kernel), initrd=str(initrd), nodes=lab_nodes,
                    os_image=str(os_image.path) if os_image else None,
                    os_image_sha256=os_image.sha256 if os_image else None)


def lab_provisioning(state: LabState, lab_dir: Path) -> ProvisioningConfig:
    """The boot service on the bridge address, the lab's boot files and SSH key; with --image the OS image."""
    p = lab_paths(lab_dir)
    gw = state.gateway
    prov = ProvisioningConfig(
        http=f"{gw}:{state.http_port}", dhcp=True, interface=state.bridge, range=state.dhcp_range(),
        boot=BootSpec(kernel=f"http://{gw}:{state.image_port}/vmlinuz",
                      initrd=f"http://{gw}:{state.image_port}/initrd.img", cmdline="console=ttyS0"),
        ssh_user="root", ssh_private_key_file=str(p["ssh_key"]), ssh_public_key_file=f"{p['ssh_key']}.pub")
    if state.os_image:
        prov = prov.model_copy(update={"image": DeployImage(path=state.os_image, sha256=state.os_image_sha256)})
    return prov


def inventory_for(state: LabState, lab_dir: Path) -> Inventory:
    """The inventory a rack integrator would hand over for these machines."""
    from cloudplan.io import load_model
    from cloudplan.lab import adopt

    p = lab_paths(lab_dir)
    prov = lab_provisioning(state, lab_dir)
    if state.planned_inventory:
        planned = load_model(Inventory, state.planned_inventory)
        return adopt.integrated(planned, state, lab_dir, prov)
    nodes = [Node(name=n.name, role=Role.compute, rack="r1", u=i, bmc=BMC(
                      address=n.bmc_address, port=n.bmc_port, username=state.bmc_username,
                      password_file=str(p["password"])),
                  mac=n.mac, uuid=n.uuid, boot_mode=BootMode.legacy,
                  # The kernel keeps ~60 MiB + 1.6 % for itself: 2 GiB shows as ~1.92 GiB, inside the 5 %
                  # tolerance (1 GiB would show 6 % less and fail, as a real node short of RAM would).
                  expect=Expect(cores=n.cpus, ram_gib=n.memory_mib / 1024, disks=1))
             for i, n in enumerate(state.nodes, start=1)]
    if state.os_image:
        return _image_inventory(state, prov, nodes, lab_dir)
    return Inventory(name=f"lab-{state.namespace}", provisioning=prov,
                     networks={"provisioning": Network(cidr=state.network_cidr, interface="eth0")}, nodes=nodes)


def _redfish_node(lab: LabNode, ipmi: BMC, lab_dir: Path) -> dict:
    """A Redfish BMC on the node's BMC address (its certificate signed by the lab's CA), booting the
    node from virtual media: no DHCP or TFTP is involved in its deploy."""
    bmc = BMC(driver=BMCDriver.redfish, address=f"https://{lab.bmc_address}:{lab.bmc_port}",
              username=ipmi.username, password_file=ipmi.password_file,
              ca_file=str(lab_paths(lab_dir)["ca"] / "ca.pem"))
    return {"bmc": bmc, "boot": BootPath.vmedia}


def _image_inventory(state: LabState, prov: ProvisioningConfig, nodes: list[Node], lab_dir: Path) -> Inventory:
    """An image deploy: the boot files are the deploy ramdisk, each node has a static provisioning
    address (kept by the installed OS), a root disk named by serial and one planned data disk."""
    by_name = {n.name: n for n in state.nodes}
    nodes = [n.model_copy(update={
        "addresses": {"provisioning": by_name[n.name].address, "api": by_name[n.name].api_address,
                      "storage": by_name[n.name].storage_address},
        "nics": dict(zip(API_NICS, by_name[n.name].api_macs)),
        "root_disk": RootDisk(serial=by_name[n.name].root_serial),
        "data_disk_serials": [by_name[n.name].data_serial],
        "boot_mode": BootMode.uefi if by_name[n.name].uefi else BootMode.legacy,
        **(_redfish_node(by_name[n.name], n.bmc, lab_dir) if by_name[n.name].redfish else {})})
        for n in nodes]
    api = Network(cidr=state.api_cidr, interface="bond0", gateway=state.api_gateway)
    storage = Network(cidr=state.storage_cidr, interface=f"bond0.{state.storage_vlan}", vlan=state.storage_vlan)
    return Inventory(name=f"lab-{state.namespace}", provisioning=prov, default_route_network="api",
                     networks={"provisioning": Network(cidr=state.network_cidr, interface="prov0"), "api": api,
                               "storage": storage},
                     bonds={"bond0": Bond(members=list(API_NICS), mode=BondMode.active_backup)}, nodes=nodes)


# -- up ------------------------------------------------------------------------------


def _write_secrets(lab_dir: Path) -> None:
    p = lab_paths(lab_dir)
    # 16 characters: IPMI 2.0 passwords hold at most 20 bytes (ipmitool refuses longer ones).
    # 0600 from the first byte: never a moment in which others may read it.
    write_text_atomic(p["password"], secrets.token_urlsafe(12) + "\n", mode=0o600)
    p["ssh_key"].parent.mkdir(mode=0o700, exist_ok=True)
    key = paramiko.ECDSAKey.generate(bits=256)
    key.write_private_key_file(str(p["ssh_key"]))          # paramiko writes it 0600
    Path(f"{p['ssh_key']}.pub").write_text(f"{key.get_name()} {key.get_base64()} cloudplan-lab\n")


def _write_bmc_certificates(lab_dir: Path, state: LabState) -> None:
    """The lab's CA and a certificate naming each Redfish BMC's address, as a site's PKI would issue."""
    redfish = [n for n in state.nodes if n.redfish]
    if not redfish:
        return
    from cloudplan.lab.bmcsim.redfish import TestCA

    ca = TestCA(lab_paths(lab_dir)["ca"], name=f"cloudplan lab {state.namespace} CA")
    for n in redfish:
        ca.issue(f"bmc-{n.name}", hosts=(n.bmc_address,))


def _write_disks_and_images(lab_dir: Path, state: LabState) -> None:
    p = lab_paths(lab_dir)
    p["vms"].mkdir(exist_ok=True)
    for n in state.nodes:
        with open(p["vms"] / f"{n.name}.disk", "wb") as fh:
            fh.truncate(n.disk_mib * 1024 * 1024)     # sparse: blank disks cost no space
        if n.root_disk_mib:
            with open(p["vms"] / f"{n.name}.root", "wb") as fh:
                fh.truncate(n.root_disk_mib * 1024 * 1024)
    p["images"].mkdir(exist_ok=True)
    shutil.copyfile(state.kernel, p["images"] / "vmlinuz")
    shutil.copyfile(state.initrd, p["images"] / "initrd.img")


def _make_network(state: LabState) -> None:
    ns, br = state.namespace, state.bridge
    _run("ip", "netns", "add", ns, what="create the lab namespace")
    _run("ip", "-n", ns, "link", "set", "lo", "up", what="loopback")
    _run("ip", "-n", ns, "link", "add", br, "type", "bridge", what="create the bridge")
    _run("ip", "-n", ns, "addr", "add", f"{state.gateway}/{state.prefix}", "dev", br, what="bridge address")
    bmc_prefix = ipaddress.ip_network(state.bmc_cidr).prefixlen
    for n in state.nodes:
        _run("ip", "-n", ns, "addr", "add", f"{n.bmc_address}/{bmc_prefix}", "dev", br, what=f"{n.name} BMC address")
        _run("ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", n.tap, "mode", "tap",
             what=f"{n.name} tap device")
        _run("ip", "-n", ns, "link", "set", n.tap, "master", br, "up", what=f"{n.name} tap on the bridge")
    _run("ip", "-n", ns, "link", "set", br, "up", what="bridge up")
    if state.os_image:
        _make_api_network(state)


def _make_api_network(state: LabState) -> None:
    """The API bridge: each node's two API NICs are its ports, the API network untagged (the namespace
    holds its gateway address, ansible runs from there) and the storage VLAN tagged, passed through
    between the nodes (the lab's host kernel may lack 802.1Q, so the namespace does not join the VLAN).
    A miscabled node's NICs are ports of another bridge, a segment where neither network is."""
    ns = state.namespace
    bridges = [state.api_bridge] + ([state.wrong_bridge] if any(n.miscabled for n in state.nodes) else [])
    for br in bridges:
        _run("ip", "-n", ns, "link", "add", br, "type", "bridge", what=f"create bridge {br}")
        _run("ip", "-n", ns, "link", "set", br, "up", what=f"bridge {br} up")
    _run("ip", "-n", ns, "addr", "add", f"{state.api_gateway}/{ipaddress.ip_network(state.api_cidr).prefixlen}",
         "dev", state.api_bridge, what="API gateway address")
    for n in state.nodes:
        for tap in n.api_taps:
            br = state.wrong_bridge if n.miscabled else state.api_bridge
            _run("ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", tap, "mode", "tap", what=f"{n.name} API tap")
            _run("ip", "-n", ns, "link", "set", tap, "master", br, "up", what=f"{n.name} API tap on {br}")


def _start_daemon(lab_dir: Path, state: LabState) -> None:
    p = lab_paths(lab_dir)
    p["ready"].unlink(missing_ok=True)
    with open(p["daemon_log"], "ab") as logf:
        proc = subprocess.Popen(["ip", "netns", "exec", state.namespace, sys.executable, "-m",
                                 "cloudplan.lab.daemon", str(lab_dir)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while not p["ready"].exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = p["daemon_log"].read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"lab daemon did not start: {'; '.join(tail) or 'no output'}")
        time.sleep(0.1)


def _require_image(miscabled, uefi, redfish, have_image: bool) -> None:
    """These node options describe image-deploy machines: refuse them without an image."""
    if (miscabled or uefi or redfish) and not have_image:
        raise LabError("--miscabled, --uefi and --redfish need --image (image-deploy machines)")


def provision_command(lab_dir: Path, state: LabState) -> str:
    p = lab_paths(lab_dir)
    return (f"ip netns exec {state.namespace} cloudplan provision {p['inventory']} "
            f"--state {p['provision_state']} --dhcp")


def up(lab_dir: Path, *, nodes: int = 3, namespace: str = DEFAULT_NAMESPACE,
       faults: dict[str, Fault] | None = None, cache_dir: Path | None = None, cpus: int = 1,
       memory_mib: int = 2048, image_cache: Path | None = None, ramdisk_cache: Path | None = None,
       miscabled: list[str] | None = None, uefi: list[str] | None = None,
       redfish: list[str] | None = None, inventory: Path | None = None) -> LabUp:
    """Build the rack; on any failure remove what was made and re-raise. With ``image_cache`` the
    machines get an image deploy: the deploy ramdisk (built in ``ramdisk_cache``, default
    ``<cache>/deploy-ramdisk``), the OS image from ``image_cache``, a root disk each. With
    ``inventory`` (a laid-out one) the machines are built to match its nodes (:mod:`.adopt`)."""
    from cloudplan.lab.image import build_installer

    _require_image(miscabled, uefi, redfish, image_cache is not None)   # before anything is built or made
    planned = _planned(inventory, image_cache=image_cache, faults=faults, uefi=uefi, redfish=redfish)
    if planned is not None:
        redfish = [n.name for n in planned.nodes if n.bmc.driver is BMCDriver.redfish]
    check_host(redfish=bool(redfish))
    lab_dir = Path(lab_dir).resolve()
    if namespace_exists(namespace):
        raise LabError(f"network namespace {namespace} exists: a lab runs already "
                       f"(`cloudplan lab down --dir DIR`, or `ip netns del {namespace}` if it is left over)")
    os_image = None
    if image_cache is not None:
        from cloudplan.images.debian import build_image
        from cloudplan.images.deploy_ramdisk import build_deploy_ramdisk

        image = build_deploy_ramdisk(ramdisk_cache or (cache_dir or default_cache_dir()) / "deploy-ramdisk")
        os_image = build_image(image_cache)
    else:
        image = build_installer(cache_dir or default_cache_dir())
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.chmod(0o755)   # dnsmasq drops to nobody and must reach its files in here
    if planned is not None:
        from cloudplan.lab import adopt

        copy = write_model(planned, lab_dir / "planned-inventory.yaml")
        state = adopt.lab_state(planned, str(inventory), namespace=namespace, kernel=image.kernel,
                                initrd=image.initrd, cpus=cpus, memory_mib=memory_mib, os_image=os_image,
                                miscabled=miscabled, planned=copy)
    else:
        state = plan(lab_dir, nodes=nodes, namespace=namespace, faults=faults, kernel=image.kernel,
                     initrd=image.initrd, cpus=cpus, memory_mib=memory_mib, os_image=os_image, miscabled=miscabled,
                     uefi=uefi, redfish=redfish)
    save_state(lab_dir, state)
    try:
        _write_secrets(lab_dir)
        _write_bmc_certificates(lab_dir, state)
        _write_disks_and_images(lab_dir, state)
        write_model(inventory_for(state, lab_dir), lab_paths(lab_dir)["inventory"])
        _make_network(state)
        _start_daemon(lab_dir, state)
    except BaseException:
        down(lab_dir, missing_ok=True)
        raise
    log.info("lab up: %d machines in namespace %s", len(state.nodes), namespace)
    return LabUp(state=state, inventory=lab_paths(lab_dir)["inventory"], command=provision_command(lab_dir, state))


def _planned(inventory: Path | None, *, image_cache, faults, uefi, redfish) -> Inventory | None:
    """The laid-out inventory to build machines for, checked against the options that would contradict it."""
    if inventory is None:
        return None
    if image_cache is None:
        raise LabError("--inventory builds image-deploy machines: give --image too")
    if faults or uefi or redfish:
        raise LabError("with --inventory, the inventory says each node's firmware (boot_mode) and BMC "
                       "(bmc.driver); --uefi, --redfish and --fault do not apply")
    from cloudplan.io import load_model

    return load_model(Inventory, inventory)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudplan" / "lab"


# -- down ----------------------------------------------------------------------------


def _terminate(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.1)
    log.warning("process %s ignored SIGTERM; killing it", pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _kill_namespace_processes(ns: str) -> None:
    res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in (int(x) for x in res.stdout.split() if x.isdigit()):
        log.info("killing process %s left in namespace %s", pid, ns)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def down(lab_dir: Path, *, missing_ok: bool = False) -> list[str]:
    """Stop the daemon (it powers the VMs off), kill whatever is left, delete the
    namespace (its bridge and taps go with it) and the lab's files. Returns what it did."""
    lab_dir = Path(lab_dir).resolve()
    p = lab_paths(lab_dir)
    try:
        state = load_state(lab_dir)
    except LabError:
        if missing_ok:
            return []
        raise
    done = []
    pid = _pid_alive(p["daemon_pid"], "cloudplan.lab.daemon")
    if pid:
        _terminate(pid, DAEMON_STOP_TIMEOUT_S)
        done.append(f"stopped the lab daemon (pid {pid})")
    for n in state.nodes:
        vm = _pid_alive(p["vms"] / f"{n.name}.pid", "qemu-system")
        if vm:
            os.kill(vm, signal.SIGKILL)
            done.append(f"powered off {n.name} (pid {vm})")
    if namespace_exists(state.namespace):
        _kill_namespace_processes(state.namespace)
        _run("ip", "netns", "del", state.namespace, what="delete the lab namespace")
        done.append(f"deleted namespace {state.namespace} with its bridge and {len(state.nodes)} tap devices")
    shutil.rmtree(lab_dir, ignore_errors=True)
    done.append(f"removed {lab_dir}")
    return done


# -- status --------------------------------------------------------------------------


def status(lab_dir: Path) -> dict:
    """What runs: the daemon, the namespace, and each machine's power."""
    lab_dir = Path(lab_dir).resolve()
    p = lab_paths(lab_dir)
    state = load_state(lab_dir)
    nodes = []
    for n in state.nodes:
        vm = _pid_alive(p["vms"] / f"{n.name}.pid", "qemu-system")
        bmc = f"https://{n.bmc_address}:{n.bmc_port}" if n.redfish else f"{n.bmc_address}:{n.bmc_port}"
        nodes.append({"name": n.name, "power": "on" if vm else "off", "pid": vm, "bmc": bmc,
                      "mac": n.mac, "fault": n.fault.value, "console": str(p["vms"] / f"{n.name}.console")})
    return {"dir": str(lab_dir), "namespace": state.namespace, "namespace_exists": namespace_exists(state.namespace),
            "daemon_pid": _pid_alive(p["daemon_pid"], "cloudplan.lab.daemon"), "inventory": str(p["inventory"]),
            "command": provision_command(lab_dir, state), "nodes": nodes}
