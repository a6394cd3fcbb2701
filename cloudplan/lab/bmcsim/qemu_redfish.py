"""A Redfish BMC per QEMU machine: sushy-tools' emulator with a systems driver that runs QEMU.

:class:`RedfishMachine` starts one ``sushy-emulator`` process (HTTPS, basic
auth, as :class:`~.redfish.Emulator` does) for one machine described by a
:class:`QemuMachineSpec`. Its systems driver is sushy-tools' fake driver (which
keeps boot target, mode and media in the emulator's state) with the machine
made real:

- **power**: ``On`` starts QEMU, ``ForceOff`` kills it, ``ForceRestart`` kills
  and starts it again, ``GracefulShutdown`` presses the ACPI power button
  (QMP ``system_powerdown``; the guest decides). The power state is whether the
  QEMU process runs, so a guest that powers itself off reads ``Off``. Unlike
  the fake driver's, power changes apply at once.
- **boot override**: read when QEMU starts, as firmware reads it at power-on:
  ``Cd`` puts the virtual CD first in the boot order, ``Hdd`` the first disk,
  ``Pxe`` the first NIC (its iPXE ROM); the mode picks the firmware, ``UEFI``
  OVMF on a q35 machine, ``Legacy`` SeaBIOS on a pc machine. The emulator
  keeps every override ``Continuous``, as sushy-tools' libvirt driver does;
  ``UefiHttp`` with a URL becomes the CD holding the image the emulator
  downloaded from it (sushy-tools' own mapping).
- **virtual media**: the emulator downloads the inserted image; the driver
  puts it into the machine's CD-ROM drive, live through QMP
  (``blockdev-change-medium``) when QEMU runs, and ``eject`` takes it out.

The QEMU processes are the emulator's children and die with it (SIGTERM, or
the kernel's parent-death signal if it is killed). ``python -m
cloudplan.lab.bmcsim.qemu_redfish --config FILE`` is the emulator's own
``main`` with this driver in place of the fake one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, Field

from cloudplan.errors import LabError
from cloudplan.lab.bmcsim.redfish import CertFiles, Emulator, FakeSystem

log = logging.getLogger(__name__)

OVMF_CODE = "/usr/share/ovmf/OVMF.fd"
CD_DRIVE, CD_DEVICE = "cd0drv", "cd0"
QMP_TIMEOUT_S = 10.0
STOP_GRACE_S = 5.0


class QemuDisk(BaseModel):
    file: str = Field(description="disk image path")
    format: str = Field(default="raw", description="raw | qcow2")
    serial: str | None = Field(default=None, description="the serial the guest sees (root disk hints match it)")
    cache: str | None = Field(default=None, description="QEMU's cache mode, e.g. 'unsafe' for a throw-away disk "
                              "written fast; default: QEMU's")


class QemuNic(BaseModel):
    mac: str = Field(description="MAC address, lower-case colon-separated")
    netdev: str = Field(default="user", description="QEMU -netdev backend and its options without the id, "
                        "e.g. 'user' or 'tap,ifname=tap3,script=no,downscript=no'")


class QemuMachineSpec(BaseModel):
    name: str = Field(description="machine name; also the Redfish system's name")
    uuid: str | None = Field(default=None, description="SMBIOS UUID, also the Redfish system's UUID (a real "
                             "server's BMC reports the same one); a random one when not given")
    memory_mib: int = Field(default=1536, ge=128, description="guest RAM in MiB")
    cpus: int = Field(default=1, ge=1, description="virtual CPUs")
    disks: list[QemuDisk] = Field(default_factory=list, description="virtio disks, the first one booted as Hdd")
    nics: list[QemuNic] = Field(min_length=1, description="virtio NICs, the first one booted as Pxe")
    console_log: str = Field(description="file the serial console is appended to")
    workdir: str = Field(description="directory for the QMP socket and QEMU's own log")
    ovmf_code: str = Field(default=OVMF_CODE, description="OVMF firmware image for UEFI")
    pid_file: str | None = Field(default=None, description="file QEMU writes its pid to while it runs")


def machine_argv(spec: QemuMachineSpec, *, uefi: bool, boot: str, cd_image: str | None, uuid: str) -> list[str]:
    """QEMU's command line for a power-on with this boot target, firmware and CD (TCG, headless)."""
    first = {"Cd": "cd", "Hdd": "disk", "Pxe": "nic"}.get(boot, "disk")
    argv = ["qemu-system-x86_64", "-name", spec.name, "-uuid", uuid, "-accel", "tcg",
            "-machine", "q35" if uefi else "pc",
            "-m", str(spec.memory_mib), "-smp", str(spec.cpus), "-display", "none", "-monitor", "none",
            "-serial", f"file:{spec.console_log}", "-qmp", f"unix:{qmp_socket(spec)},server=on,wait=off"]
    if uefi:
        argv += ["-bios", spec.ovmf_code]
    if spec.pid_file:
        argv += ["-pidfile", spec.pid_file]
    # bootindex: 0 for the override's target; the disk next, so firmware falls back to it.
    order = {"cd": 0 if first == "cd" else 2, "disk": 0 if first == "disk" else 1, "nic": 0 if first == "nic" else 3}
    for i, d in enumerate(spec.disks):
        serial = f",serial={d.serial}" if d.serial else ""
        boot_i = f",bootindex={order['disk']}" if i == 0 else ""
        cache = f",cache={d.cache}" if d.cache else ""
        argv += ["-drive", f"file={d.file},if=none,id=disk{i},format={d.format}{cache}",
                 "-device", f"virtio-blk-pci,drive=disk{i}{serial}{boot_i}"]
    for i, n in enumerate(spec.nics):
        boot_i = f",bootindex={order['nic']}" if i == 0 else ""
        argv += ["-netdev", f"{n.netdev},id=net{i}", "-device", f"virtio-net-pci,netdev=net{i},mac={n.mac}{boot_i}"]
    media = f",file={cd_image}" if cd_image else ""
    argv += ["-drive", f"if=none,id={CD_DRIVE},media=cdrom,readonly=on{media}",
             "-device", f"ide-cd,drive={CD_DRIVE},id={CD_DEVICE},bootindex={order['cd']}"]
    return argv


def qmp_socket(spec: QemuMachineSpec) -> Path:
    return Path(spec.workdir) / "qmp.sock"


def qmp(path: Path, command: str, arguments: dict | None = None, *, timeout_s: float = QMP_TIMEOUT_S) -> dict:
    """One QMP command on the machine's monitor socket; its ``return``, or :class:`LabError`."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        f = s.makefile("rwb")

        def ask(msg: dict) -> dict:
            f.write(json.dumps(msg).encode() + b"\n")
            f.flush()
            while True:            # events arrive on the same stream; skip them
                line = f.readline()
                if not line:
                    raise LabError(f"QMP {command}: QEMU closed the monitor")
                answer = json.loads(line)
                if "return" in answer or "error" in answer:
                    return answer

        json.loads(f.readline())   # the greeting
        ask({"execute": "qmp_capabilities"})
        answer = ask({"execute": command, **({"arguments": arguments} if arguments else {})})
    if "error" in answer:
        raise LabError(f"QMP {command}: {answer['error'].get('desc', answer['error'])}")
    return answer["return"]


_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qemu-launcher")   # one thread, never idle-exits


def _die_with_parent() -> None:
    """In the QEMU child: SIGKILL when the emulator dies, however it dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


# -- the systems driver (runs inside the emulator process) ----------------------------------------


def make_driver_class():
    """The fake driver, with power, boot and media acting on a QEMU process per system."""
    from sushy_tools import error
    from sushy_tools.emulator.resources.systems.fakedriver import FakeDriver

    class QemuDriver(FakeDriver):
        _procs: dict[str, subprocess.Popen] = {}
        _lock = threading.RLock()

        @property
        def driver(self):
            return "<qemu>"

        def _spec(self, identity) -> QemuMachineSpec:
            return QemuMachineSpec.model_validate(self._get(identity)["qemu"])

        def _running(self, uuid: str) -> subprocess.Popen | None:
            proc = self._procs.get(uuid)
            return proc if proc is not None and proc.poll() is None else None

        def get_power_state(self, identity):
            return "On" if self._running(self.uuid(identity)) else "Off"

        def set_power_state(self, identity, state):
            uuid = self.uuid(identity)
            with self._lock:
                if state in ("On", "ForceOn"):
                    if not self._running(uuid):
                        self._start(identity)
                elif state == "ForceOff":
                    self._kill(uuid)
                elif state in ("ForceRestart", "GracefulRestart", "PowerCycle"):
                    self._kill(uuid)
                    self._start(identity)
                elif state == "GracefulShutdown":
                    if self._running(uuid):
                        qmp(qmp_socket(self._spec(identity)), "system_powerdown")
                else:
                    raise error.NotSupportedError(f"Power state {state} is not supported")

        def _start(self, identity) -> None:
            spec, uuid = self._spec(identity), self.uuid(identity)
            image = self.get_boot_image(identity, "Cd")
            cd = image[0] if image and image[2] else None
            argv = machine_argv(spec, uefi=self.get_boot_mode(identity) == "UEFI",
                                boot=self.get_boot_device(identity), cd_image=cd, uuid=uuid)
            Path(spec.workdir).mkdir(parents=True, exist_ok=True)
            qmp_socket(spec).unlink(missing_ok=True)
            with open(Path(spec.workdir) / "qemu.log", "ab") as out:
                out.write(f"{time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
                out.flush()
                # Forked from the launcher thread: the parent-death signal follows the thread that forked,
                # and the emulator's request threads end with their request.
                self._procs[uuid] = _LAUNCHER.submit(
                    subprocess.Popen, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent).result()
            self._logger.info("QEMU started for %s (boot %s, CD %s)", spec.name, argv, cd or "empty")

        def _kill(self, uuid: str) -> None:
            proc = self._procs.pop(uuid, None)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(STOP_GRACE_S)

        def set_boot_image(self, identity, device, boot_image=None, write_protected=True):
            super().set_boot_image(identity, device, boot_image=boot_image, write_protected=write_protected)
            if device != "Cd":
                return
            uuid = self.uuid(identity)
            with self._lock:
                if not self._running(uuid):
                    return          # read at the next power-on
                sock = qmp_socket(self._spec(identity))
                try:
                    if boot_image:
                        qmp(sock, "blockdev-change-medium", {"id": CD_DEVICE, "filename": boot_image,
                                                             "format": "raw", "read-only-mode": "read-only"})
                    else:
                        qmp(sock, "eject", {"id": CD_DEVICE, "force": True})
                except (OSError, LabError):
                    if self._running(uuid):
                        raise
                    # The guest powered itself off meanwhile (a deploy ramdisk does, right after its
                    # last report): the state above is what the next power-on reads.

        @classmethod
        def stop_all(cls) -> None:
            for uuid in list(cls._procs):
                proc = cls._procs.pop(uuid)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(STOP_GRACE_S)

    return QemuDriver


def main(argv: list[str] | None = None) -> int:
    from sushy_tools.emulator import main as emulator
    from sushy_tools.emulator.resources.systems import fakedriver

    from cloudplan.lab.bmcsim import redfish

    redfish._patch_fake_driver()          # keeps HttpBootUri per system (before the subclass is made)
    driver = make_driver_class()
    fakedriver.FakeDriver = driver        # the emulator looks the class up at its first request

    def on_term(signum, frame):
        driver.stop_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    sys.argv = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    try:
        return emulator.main()
    finally:
        driver.stop_all()


# -- the endpoint, seen from outside ---------------------------------------------------------------


class RedfishMachine:
    """One QEMU machine behind its own Redfish endpoint (HTTPS); stopped on exit.

    ``boot_mode`` is the machine's mode until a boot override changes it: ``UEFI`` or ``Legacy``;
    ``host`` the address the endpoint listens on (the lab gives each BMC its own; ``tls`` must name it)."""

    def __init__(self, spec: QemuMachineSpec, *, tls: CertFiles, password: str, username: str = "admin",
                 boot_mode: str = "UEFI", host: str = "127.0.0.1", port: int = 0):
        if boot_mode not in ("UEFI", "Legacy"):
            raise LabError(f"{spec.name}: boot_mode must be UEFI or Legacy, got {boot_mode!r}")
        self.spec = spec
        self.system = FakeSystem(spec.name, mac=spec.nics[0].mac,
                                 extra={"qemu": spec.model_dump(), "boot_mode": boot_mode},
                                 **({"uuid": spec.uuid} if spec.uuid else {}))
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
        self.emulator = Emulator([self.system], tls=tls, username=username, password=password, port=port,
                                 workdir=Path(spec.workdir) / "redfish", module=__name__, host=host)

    @property
    def url(self) -> str:
        return self.emulator.url

    def start(self) -> "RedfishMachine":
        self.emulator.dir.mkdir(parents=True, exist_ok=True)
        self.emulator.start()
        return self

    def stop(self) -> None:
        self.emulator.stop()

    def __enter__(self) -> "RedfishMachine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def qemu_log(self) -> str:
        path = Path(self.spec.workdir) / "qemu.log"
        return path.read_text(errors="replace") if path.exists() else ""


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
