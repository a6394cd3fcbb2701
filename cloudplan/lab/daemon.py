"""The lab's long-running process: every node's BMC, and the installer files.

``python -m cloudplan.lab.daemon DIR`` runs inside the lab's network namespace
(``lab up`` starts it there, detached). It answers IPMI for every node on the
node's own BMC address, starts and stops the VMs as the BMCs are told, and
serves the installer kernel and initrd over HTTP on the bridge address (what
a site's image mirror would do). SIGTERM powers every VM off and exits.
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

from cloudplan.lab.machine import Machine, MachineBMC, VMSpec
from cloudplan.lab.state import LabNode, LabState, lab_paths, load_state
from cloudplan.lab.bmcsim.ipmi import SimFleet, SimSpec

log = logging.getLogger(__name__)


def vm_spec(lab_dir: Path, node: LabNode) -> VMSpec:
    vms = lab_paths(lab_dir)["vms"]
    return VMSpec(name=node.name, mac=node.mac, uuid=node.uuid, tap=node.tap, disk=vms / f"{node.name}.disk",
                  console_log=vms / f"{node.name}.console", pid_file=vms / f"{node.name}.pid",
                  cpus=node.cpus, memory_mib=node.memory_mib,
                  root_disk=vms / f"{node.name}.root" if node.root_disk_mib else None,
                  api_nics=tuple(zip(node.api_taps, node.api_macs)), uefi=node.uefi)


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
                     port=n.bmc_port, fault=n.fault, guid=n.uuid) for n in state.nodes]
    machines: dict[str, Machine] = {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fleet = SimFleet(specs, make=_bmc_factory(lab_dir, state, machines)).start()
    httpd = serve_images(state, paths["images"])
    paths["daemon_pid"].write_text(f"{os.getpid()}\n")
    paths["ready"].write_text("ready\n")
    log.info("lab daemon: %d BMCs and the image server are up", len(specs))
    try:
        while not stop.wait(1.0):   # a timed wait lets the signal handlers run
            pass
    finally:
        for m in machines.values():
            m.stop()
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
