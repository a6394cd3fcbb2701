"""The lab's Redfish BMC for QEMU machines, driven by cloudplan's Redfish client over HTTPS.

A real QEMU process per power-on (no guest OS is needed to see what the BMC
did to the machine): power on starts it with the firmware of the boot mode and
the override's device first, virtual media goes in and out of the running
machine's CD-ROM (checked through QEMU's own monitor, ``query-block``), a
reset reads the new override, power off ends the process. The boot of a real
deploy ISO through this BMC is ``tests/test_vmedia_boot.py``'s.
"""

from __future__ import annotations

import time
import uuid as uuidlib

import pytest
from qemu_fixture import blank_disk, need
from redfish_fixtures import RF_PASSWORD, FileServer, ca, client  # noqa: F401 - ca is a fixture

from cloudplan.errors import LabError
from cloudplan.lab.bmcsim.qemu_redfish import (CD_DRIVE, QemuDisk, QemuMachineSpec, QemuNic, RedfishMachine, qmp,
                                               qmp_socket)


def _cd(spec: QemuMachineSpec) -> dict:
    """The CD-ROM drive as QEMU itself reports it."""
    return next(b for b in qmp(qmp_socket(spec), "query-block") if b["device"] == CD_DRIVE)


def _starts(machine: RedfishMachine) -> list[str]:
    return [ln for ln in machine.qemu_log().splitlines() if " start: " in ln]


def _until(cond, what: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} not within {timeout_s} s")


def test_power_boot_override_and_virtual_media_act_on_the_qemu_machine(ca, tmp_path):
    need("qemu-system-x86_64", "qemu-system-x86")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "media.iso").write_bytes(b"\0" * (1 << 20))
    guid = str(uuidlib.uuid4())
    disk = QemuDisk(file=str(blank_disk(tmp_path / "d.raw", 16)), serial="ROOT1")
    spec = QemuMachineSpec(name="qm1", uuid=guid, memory_mib=128, disks=[disk],
                           nics=[QemuNic(mac="52:54:00:d1:00:99", netdev="user,restrict=on")],
                           console_log=str(tmp_path / "console.log"), workdir=str(tmp_path / "m"))
    with RedfishMachine(spec, tls=ca.issue("qm1"), password=RF_PASSWORD, boot_mode="Legacy") as machine, \
            FileServer(tmp_path / "www") as files:
        bmc = client(machine.url, ca)
        try:
            assert bmc.get_power() == "off" and _starts(machine) == []
            bmc.set_power("on")
            assert bmc.get_power() == "on"
            _until(lambda: qmp_socket(spec).exists(), "QEMU's monitor")
            first = _starts(machine)[-1]
            assert "-machine pc" in first and "-bios" not in first                    # Legacy: SeaBIOS
            assert f"-uuid {guid}" in first and bmc.get_system_guid().lower() == guid    # SMBIOS = Redfish UUID
            assert "virtio-blk-pci,drive=disk0,serial=ROOT1,bootindex=0" in first     # no override: the disk
            assert "inserted" not in _cd(spec)
            bmc.insert_media(f"{files.url}/media.iso")                               # into the running machine
            assert _cd(spec)["inserted"]["file"].endswith("media.iso")
            bmc.set_bootdev("cd", persist=False, uefi=True)
            bmc.set_power("reset")                                                   # firmware reads it now
            _until(lambda: len(_starts(machine)) == 2, "the restart")
            second = _starts(machine)[-1]
            assert "-machine q35" in second and "-bios /usr/share/ovmf/OVMF.fd" in second   # UEFI: OVMF
            assert "ide-cd,drive=cd0drv,id=cd0,bootindex=0" in second and "media.iso" in second
            _until(lambda: qmp_socket(spec).exists(), "QEMU's monitor")
            _until(lambda: _monitor_up(spec), "QEMU's monitor answering")
            bmc.eject_media()
            assert "inserted" not in _cd(spec) and bmc.media() == {"image": None, "inserted": False}
            # UEFI HTTP boot: the emulator fetches the URL and boots it as the CD (sushy-tools' mapping).
            bmc.set_bootdev("http", persist=False, uefi=True, url=f"{files.url}/media.iso")
            bmc.set_power("reset")
            _until(lambda: len(_starts(machine)) == 3, "the restart")
            third = _starts(machine)[-1]
            assert "ide-cd,drive=cd0drv,id=cd0,bootindex=0" in third and "media.iso" in third
            bmc.set_power("off")
            assert bmc.get_power() == "off"
            with pytest.raises((OSError, LabError)):
                qmp(qmp_socket(spec), "query-status", timeout_s=2)
        finally:
            bmc.close()
    assert len(_starts(machine)) == 3


def _monitor_up(spec: QemuMachineSpec) -> bool:
    try:
        qmp(qmp_socket(spec), "query-status", timeout_s=2)
        return True
    except (OSError, LabError):
        return False


def test_a_machine_spec_without_a_nic_or_with_a_wrong_boot_mode_is_refused(ca, tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="nics"):
        QemuMachineSpec(name="x", nics=[], console_log="c", workdir=str(tmp_path))
    spec = QemuMachineSpec(name="x", nics=[QemuNic(mac="52:54:00:00:00:01")], console_log="c",
                           workdir=str(tmp_path))
    with pytest.raises(LabError, match="boot_mode must be UEFI or Legacy"):
        RedfishMachine(spec, tls=ca.issue("x"), password=RF_PASSWORD, boot_mode="Bios")
