"""One machine of the virtual rack: a QEMU VM and the IPMI BMC that powers it.

The BMC is cloudplan's pyghmi-based simulator (:mod:`cloudplan.lab.bmcsim.ipmi`)
with its power wired to a real process: power on starts QEMU with the boot
device the BMC was told (network: the NIC's iPXE ROM; disk: no NIC ROM, so a
blank disk boots nothing, as a real machine would), power off kills it, and
the power state is read from the process, so a guest that powers itself off
(or a VM killed from outside) shows as off, as on real hardware.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from cloudplan.lab.bmcsim.ipmi import SimBMC, SimSpec

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
OVMF = Path("/usr/share/ovmf/OVMF.fd")   # Debian ovmf
# IPMI boot device names (pyghmi's) that mean "boot from the network".
NETWORK_DEVICES = frozenset({"network", "net", "pxe"})


@dataclass
class VMSpec:
    """What QEMU is started with; paths are absolute."""

    name: str
    mac: str
    uuid: str
    tap: str
    disk: Path
    console_log: Path
    pid_file: Path
    cpus: int = 1
    memory_mib: int = 2048
    root_disk: Path | None = None   # image deploys: the disk the image goes to (serial ROOT-<name>)
    api_nics: tuple[tuple[str, str], ...] = ()   # image deploys: (tap, MAC) of each NIC on the API bridge
    uefi: bool = False              # image deploys: OVMF firmware (it honours bootindex too)
    root_serial: str = "ROOT"       # image deploys: the serials the guest sees
    data_serial: str = "DATA"

    def argv(self, *, network_boot: bool) -> list[str]:
        # TCG: nested KVM does not run guests here, and TCG behaves the same everywhere.
        nic = f"e1000,netdev=n0,mac={self.mac}" + ("" if network_boot else ",romfile=")
        if self.root_disk is not None:
            return self._deploy_argv(nic, network_boot)
        return [
            QEMU, "-name", self.name, "-accel", "tcg", "-machine", "pc",
            "-m", str(self.memory_mib), "-smp", str(self.cpus), "-uuid", self.uuid,
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-monitor", "none",
            "-serial", f"file:{self.console_log}", "-pidfile", str(self.pid_file),
            "-boot", "order=n" if network_boot else "order=c",
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no", "-device", nic,
            "-drive", f"file={self.disk},if=virtio,format=raw",
        ]

    def _deploy_argv(self, nic: str, network_boot: bool) -> list[str]:
        """A root disk and a data disk, each with a serial; the boot device by bootindex (which
        SeaBIOS honours over -boot order), as the BMC's boot device says."""
        first = ",bootindex=1"
        return [
            QEMU, "-name", self.name, "-accel", "tcg", "-machine", "pc",
            "-m", str(self.memory_mib), "-smp", str(self.cpus), "-uuid", self.uuid,
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-monitor", "none",
            "-serial", f"file:{self.console_log}", "-pidfile", str(self.pid_file),
            *(["-bios", str(OVMF)] if self.uefi else []),
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device", nic + (first if network_boot else ""),
            "-drive", f"file={self.root_disk},if=none,id=root,format=raw,cache=unsafe",
            "-device", f"virtio-blk-pci,drive=root,serial={self.root_serial}" + ("" if network_boot else first),
            "-drive", f"file={self.disk},if=none,id=data,format=raw",
            "-device", f"virtio-blk-pci,drive=data,serial={self.data_serial}",
            *[arg for i, (tap, mac) in enumerate(self.api_nics) for arg in (
                "-netdev", f"tap,id=a{i},ifname={tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=a{i},mac={mac},romfile=")],
        ]


class Machine:
    """A VM's power: start (with a boot device), kill, and whether it runs."""

    def __init__(self, spec: VMSpec):
        self.spec = spec
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.boots: list[str] = []

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, device: str) -> None:
        """Power on from ``device`` (an IPMI boot device name); a running VM is reset."""
        with self._lock:
            self._kill()
            network = device in NETWORK_DEVICES
            self.spec.console_log.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.spec.console_log.with_suffix(".qemu.log"), "ab")  # QEMU's own complaints
            try:
                # Its own session: a Ctrl-C in the lab's terminal must not pull the plug.
                self._proc = subprocess.Popen(self.spec.argv(network_boot=network), stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=out, start_new_session=True)
            finally:
                out.close()
            self.boots.append("network" if network else "disk")
            log.info("%s: powered on, booting from %s (pid %s)", self.spec.name,
                     "the network" if network else "disk", self._proc.pid)

    def stop(self) -> None:
        """Pull the plug (IPMI power off is a hard off)."""
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.spec.pid_file.unlink(missing_ok=True)
        log.info("%s: powered off", self.spec.name)


class MachineBMC(SimBMC):
    """A simulated BMC whose chassis power is a :class:`Machine`."""

    def __init__(self, spec: SimSpec, machine: Machine):
        super().__init__(spec)
        self.machine = machine

    def _sync(self) -> str:
        self.power = "on" if self.machine.running else "off"
        return self.power

    def get_power_state(self):
        return self._sync()

    def power_on(self):
        self._sync()
        return super().power_on()

    def power_reset(self):
        self._sync()
        return super().power_reset()

    def _boot(self, how: str) -> None:
        super()._boot(how)              # consumes a one-time override, records the boot
        self.machine.start(self.boots[-1])

    def power_off(self):
        self.machine.stop()
        return super().power_off()
