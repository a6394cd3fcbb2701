"""The lab's long-running process: every node's BMC, and the installer files.

``python -m cloudplan.lab.daemon DIR`` runs inside the lab's network namespace
(``lab up`` starts it there, detached). It answers IPMI for every node on the
node's own BMC address, starts and stops the VMs as the BMCs are told, and
serves the installer kernel and initrd over HTTP on the bridge address (what
a site's image mirror would do). A ``redfish`` node's BMC is instead a
sushy-tools emulator process on that address (HTTPS, the lab CA's
certificate) whose driver runs the node's QEMU machine
(:mod:`cloudplan.lab.bmcsim.qemu_redfish`): virtual media, boot override and
power. SIGTERM powers every VM off and exits.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from cloudplan.lab.machine import Machine, MachineBMC, VMSpec
from cloudplan.lab.state import LabNode, LabState, lab_paths, load_state
from cloudplan.lab.bmcsim.ipmi import SimFleet, SimSpec

if TYPE_CHECKING:
    from cloudplan.lab.bmcsim.qemu_redfish import QemuMachineSpec

log = logging.getLogger(__name__)


def vm_spec(lab_dir: Path, node: LabNode) -> VMSpec:
    vms = lab_paths(lab_dir)["vms"]
    return VMSpec(name=node.name, mac=node.mac, uuid=node.uuid, tap=node.tap, disk=vms / f"{node.name}.disk",
                  console_log=vms / f"{node.name}.console", pid_file=vms / f"{node.name}.pid",
                  cpus=node.cpus, memory_mib=node.memory_mib,
                  root_disk=vms / f"{node.name}.root" if node.root_disk_mib else None,
                  api_nics=tuple(zip(node.api_taps, node.api_macs)), uefi=node.uefi,
                  root_serial=node.root_serial or "ROOT", data_serial=node.data_serial or "DATA")


def redfish_spec(vm: VMSpec, workdir: Path) -> QemuMachineSpec:
    """The same machine (disks with their serials, the provisioning NIC first, the API NICs) for the
    Redfish BMC's QEMU driver."""
    from cloudplan.lab.bmcsim.qemu_redfish import QemuDisk, QemuMachineSpec, QemuNic

    def tap(name: str) -> str:
        return f"tap,ifname={name},script=no,downscript=no"

    return QemuMachineSpec(
        name=vm.name, uuid=vm.uuid, memory_mib=vm.memory_mib, cpus=vm.cpus,
        disks=[QemuDisk(file=str(vm.root_disk), serial=vm.root_serial, cache="unsafe"),
               QemuDisk(file=str(vm.disk), serial=vm.data_serial)],
        nics=[QemuNic(mac=vm.mac, netdev=tap(vm.tap)), *(QemuNic(mac=m, netdev=tap(t)) for t, m in vm.api_nics)],
        console_log=str(vm.console_log), workdir=str(workdir), pid_file=str(vm.pid_file))


def start_redfish_machines(lab_dir: Path, state: LabState, password: str) -> list:
    """One Redfish endpoint per ``redfish`` node, on its BMC address; started in parallel (each
    emulator takes seconds to answer)."""
    from concurrent.futures import ThreadPoolExecutor

    from cloudplan.lab.bmcsim.qemu_redfish import RedfishMachine
    from cloudplan.lab.bmcsim.redfish import CertFiles

    paths = lab_paths(lab_dir)
    machines = [RedfishMachine(redfish_spec(vm_spec(lab_dir, n), paths["vms"] / f"{n.name}.redfish"),
                               tls=CertFiles(paths["ca"] / f"bmc-{n.name}.pem", paths["ca"] / f"bmc-{n.name}.key"),
                               password=password, username=state.bmc_username,
                               boot_mode="UEFI" if n.uefi else "Legacy", host=n.bmc_address, port=n.bmc_port)
                for n in state.nodes if n.redfish]
    started = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
            for m in pool.map(lambda m: m.start(), machines):
                started.append(m)
    except BaseException:
        for m in machines:
            m.stop()
        raise
    return started


def _bmc_factory(lab_dir: Path, state: LabState, machines: dict[str, Machine]):
    by_name = {n.name: n for n in state.nodes}

    def make(spec: SimSpec) -> MachineBMC:
        machines[spec.name] = Machine(vm_spec(lab_dir, by_name[spec.name]))
        return MachineBMC(spec, machines[spec.name])
    return make


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.info("image server: %s", format % args)


def serve_images(state: LabState, images: Path) -> ThreadingHTTPServer:
    handler = functools.partial(_QuietFiles, directory=str(images))
    httpd = ThreadingHTTPServer((state.gateway, state.image_port), handler)
    threading.Thread(target=httpd.serve_forever, name="lab-images", daemon=True).start()
    return httpd


def run(lab_dir: Path) -> int:
    paths = lab_paths(lab_dir)
    state = load_state(lab_dir)
    password = paths["password"].read_text(encoding="utf-8").strip()
    specs = [SimSpec(name=n.name, username=state.bmc_username, password=password, address=n.bmc_address,
                     port=n.bmc_port, fault=n.fault, guid=n.uuid) for n in state.nodes if not n.redfish]
    machines: dict[str, Machine] = {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fleet = SimFleet(specs, make=_bmc_factory(lab_dir, state, machines)).start()
    try:
        redfish = start_redfish_machines(lab_dir, state, password)
    except BaseException:
        fleet.stop(close=False)
        raise
    httpd = serve_images(state, paths["images"])
    paths["daemon_pid"].write_text(f"{os.getpid()}\n")
    paths["ready"].write_text("ready\n")
    log.info("lab daemon: %d IPMI and %d Redfish BMCs and the image server are up", len(specs), len(redfish))
    try:
        while not stop.wait(1.0):   # a timed wait lets the signal handlers run
            pass
    finally:
        for m in machines.values():
            m.stop()
        for r in redfish:
            r.stop()            # the emulator's QEMU machine dies with it
        httpd.shutdown()
        fleet.stop(close=False)
        paths["ready"].unlink(missing_ok=True)
        log.info("lab daemon: stopped, every VM powered off")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
