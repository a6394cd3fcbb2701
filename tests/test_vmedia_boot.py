"""The virtual-media ISO boots cloudplan's deploy ramdisk for real, with a static address and no DHCP.

QEMU (TCG, user-mode networking: the host's loopback is 10.0.2.2 to the guest)
boots the node's ISO as a CD-ROM; GRUB from the CD starts the deploy ramdisk
with the node's arguments from ``grub.cfg``. A loopback HTTP server serves the
image and the node's seed and takes the ramdisk's reports. The ramdisk writes
the image, reads it back against its sha256, writes the seed and powers off.
That the installed OS then boots from that disk and takes its seed is
``tests/test_deploy_mirror.py``'s to prove; here a small image stands in.

The guest's static address is 10.0.2.42, not the 10.0.2.15 QEMU's built-in
DHCP server would lease: the address the ramdisk reports having is the one
``grub.cfg`` gave it.
"""

from __future__ import annotations

import gzip
import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from qemu_fixture import (
    HOST_FROM_GUEST,
    blank_disk,
    boot_http,  # noqa: F401 - fixtures
    deploy_ramdisk,  # noqa: F401
    guest_inventory,
    need,
    need_ovmf,
    qemu_argv,
    sha256_file,
    small_image,
    start,
    stop,
    tail,
    user_nic,
    wait_exit,
)
from redfish_fixtures import ca  # noqa: F401 - a fixture

from cloudplan.provision.boot import iso as isolib
from cloudplan.provision.deploy import build_seed_image, render_seed
from cloudplan.provision.deploy.cmdline import DeployArgs
from cloudplan.provision.deploy.rootdisk import RootDiskHints

MAC = "52:54:00:d1:00:17"
STATIC = "10.0.2.42"
STEPS = ["started", "root-disk", "image-written", "image-verified", "seed-written", "data-wiped", "done"]
# Measured here (TCG, 1 vCPU, 2 shared cores, load average 2-9): SeaBIOS, CD to poweroff 22-34 s;
# OVMF through Redfish, power-on to the last report 44-59 s. Several times that for a heavier load.
DEPLOY_DEADLINE_S = 400

pytestmark = pytest.mark.root


def deploy_args(server, tmp: Path, *, mac: str = MAC, address: str = STATIC) -> tuple[DeployArgs, bytes]:
    """A small gzip image and the node's seed image on ``server``; the node's arguments; the image's payload."""
    payload = small_image(tmp / "small.raw")
    (server.files / "small.raw.gz").write_bytes(gzip.compress((tmp / "small.raw").read_bytes(), compresslevel=1))
    inv = guest_inventory("vmedia-boot", mac, address)
    seed = render_seed(inv, inv.nodes[0], instance_id="node01-vmedia", ssh_user="cloudplan",
                       ssh_public_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"],
                       phone_home_url=server.guest_url("phone-home/node01"))
    build_seed_image(seed, server.files / "seed.img", node="node01")
    args = DeployArgs(image_url=server.guest_url("small.raw.gz"), image_sha256=sha256_file(tmp / "small.raw"),
                      seed_url=server.guest_url("seed.img"), seed_sha256=sha256_file(server.files / "seed.img"),
                      report_url=server.guest_url("report"), token=secrets.token_urlsafe(16),
                      ip=f"{address}/24", gateway=HOST_FROM_GUEST, mac=mac, root_hints=RootDiskHints(serial="ROOT1"))
    return args, payload


def check_deployed(server, args: DeployArgs, payload: bytes, root: Path, console: Path) -> None:
    """Every step reported with this boot's token, the image on the disk, the seed in its partition."""
    assert server.steps == STEPS, (server.steps, [r.error for r in server.reports], tail(console))
    done = server.reports[-1]
    assert done.sha256_ok is True and done.root_serial == "ROOT1"
    assert all(r.token == args.token for r in server.reports)
    text = console.read_text(errors="replace")
    assert args.token not in text
    assert f"has {STATIC}/24" in text, tail(console)   # the static address from grub.cfg, not DHCP's .15
    data = root.read_bytes()
    assert payload in data
    table = json.loads(subprocess.run([need("sfdisk", "fdisk"), "--json", str(root)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    seed = [p for p in table["partitions"] if p.get("name") == "cidata"]
    assert len(seed) == 1, table
    seed_bytes = (server.files / "seed.img").read_bytes()
    start_b = seed[0]["start"] * table.get("sectorsize", 512)
    assert data[start_b:start_b + len(seed_bytes)] == seed_bytes


def build_deploy_iso(ramdisk, args: DeployArgs, out: Path) -> Path:
    iso = isolib.build_iso(isolib.deploy_content("node01", ramdisk.kernel, ramdisk.initrd, args), out)
    info = subprocess.run([need("isoinfo", "genisoimage"), "-d", "-i", str(iso)], capture_output=True, text=True,
                          check=True).stdout
    assert f"Volume id: {isolib.DEPLOY_VOLUME_ID}" in info    # not CIDATA: the CD is no seed
    assert oct(iso.stat().st_mode & 0o777) == "0o600"          # grub.cfg holds the report token
    return iso


def test_the_deploy_iso_boots_the_ramdisk_from_a_cd_under_seabios(deploy_ramdisk, boot_http, tmp_path):
    need("grub-mkrescue", "grub-common")
    args, payload = deploy_args(boot_http, tmp_path)
    iso = build_deploy_iso(deploy_ramdisk, args, tmp_path / "node01.iso")
    root = blank_disk(tmp_path / "root.raw", 128)
    argv = qemu_argv(tmp_path, "legacy", nics=user_nic(MAC)) + [
        "-no-reboot",
        "-drive", f"file={root},if=none,id=root,format=raw",
        "-device", "virtio-blk-pci,drive=root,serial=ROOT1,bootindex=1",
        "-drive", f"file={iso},if=none,id=cd,media=cdrom,readonly=on", "-device", "ide-cd,drive=cd,bootindex=0"]
    started = time.monotonic()
    proc = start(argv, tmp_path, "legacy")
    try:
        wait_exit(proc, DEPLOY_DEADLINE_S, tmp_path / "legacy.log")
    finally:
        stop(proc)
    console = tmp_path / "legacy.log"
    assert "cloudplan: booting the deploy ramdisk of node01 (pc)" in console.read_text(errors="replace"), tail(console)
    check_deployed(boot_http, args, payload, root, console)
    print(f"SeaBIOS, CD to poweroff: {time.monotonic() - started:.0f} s")


def test_grub_cfg_quotes_what_grub_would_expand_and_refuses_what_it_cannot_carry():
    from cloudplan.errors import ProvisioningFailed

    content = isolib.IsoContent("n1", Path("k"), Path("i"), "console=ttyS0 cloudplan.image_url=http://h/a?b=1;c $x",
                                {})
    line = next(ln for ln in isolib.grub_cfg(content).splitlines() if ln.strip().startswith("linux "))
    assert line.split(None, 2)[2] == "console=ttyS0 'cloudplan.image_url=http://h/a?b=1;c' '$x'"
    with pytest.raises(ProvisioningFailed, match="single quote"):
        isolib.grub_cfg(isolib.IsoContent("n1", Path("k"), Path("i"), "a='b'", {}))
    dhcp = DeployArgs(image_url="http://h/i.raw", image_sha256="0" * 64, report_url="http://h/r", token="t")
    with pytest.raises(ProvisioningFailed, match="static provisioning address"):
        isolib.deploy_content("n1", Path("k"), Path("i"), dhcp)


# -- a Redfish-managed QEMU machine, UEFI, booted from virtual media by cloudplan's Redfish driver --------


def _wait(cond, deadline_s: float, what: str, log: Path):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(2)
    pytest.fail(f"{what} not within {deadline_s} s; console tail:\n{tail(log)}")


def test_a_redfish_machine_boots_the_deploy_iso_from_virtual_media_under_ovmf(deploy_ramdisk, boot_http, ca,
                                                                               tmp_path):
    from redfish_fixtures import RF_PASSWORD, client

    from cloudplan.lab.bmcsim.qemu_redfish import QemuDisk, QemuMachineSpec, QemuNic, RedfishMachine
    from cloudplan.provision.bmc.base import REAL_CLOCK
    from cloudplan.provision.boot import BootContext, DeployMedia
    from cloudplan.provision.boot.vmedia import VirtualMediaBoot
    from cloudplan.provision.bootserver import BootServer

    need("grub-mkrescue", "grub-common")
    need_ovmf()
    args, payload = deploy_args(boot_http, tmp_path)
    root = blank_disk(tmp_path / "root.raw", 128)
    console = tmp_path / "uefi.log"
    spec = QemuMachineSpec(name="node01", disks=[QemuDisk(file=str(root), serial="ROOT1")], nics=[QemuNic(mac=MAC)],
                           console_log=str(console), workdir=str(tmp_path / "machine"))
    inv = guest_inventory("vmedia-boot", MAC, STATIC)
    events: list[tuple[str, str]] = []
    with RedfishMachine(spec, tls=ca.issue("qemu-bmc"), password=RF_PASSWORD, boot_mode="UEFI") as machine, \
            BootServer("127.0.0.1", 0) as boot:
        bmc = client(machine.url, ca)
        try:
            assert bmc.get_power() == "off"
            ctx = BootContext(inv=inv, node=inv.nodes[0], token=args.token, client=bmc, boot=boot,
                              state_dir=tmp_path / "state", bmc=lambda what, fn: fn(),
                              on_event=lambda kind, detail: events.append((kind, detail)), clock=REAL_CLOCK,
                              bootdev_attempts=3, ssh_public_keys=[],
                              deploy=DeployMedia(deploy_ramdisk.kernel, deploy_ramdisk.initrd, args))
            path = VirtualMediaBoot()
            assert path.arm(ctx) == "virtual CD boot confirmed"
            assert bmc.media()["inserted"] is True and bmc.get_bootdev()["bootdev"] == "cd"
            started = time.monotonic()
            bmc.set_power("on")
            _wait(lambda: bmc.get_power() == "on", 30, "power on", console)
            _wait(lambda: boot_http.steps[-1:] in (["done"], ["failed"]), DEPLOY_DEADLINE_S,
                  "the ramdisk's last report", console)
            reported = time.monotonic()
            path.after_phone_home(ctx)      # the node reported in: the CD goes out before the disk boots
            assert bmc.media() == {"image": None, "inserted": False}
            # The ramdisk powers the machine off; the BMC sees QEMU gone.
            _wait(lambda: bmc.get_power() == "off", 120, "power off", console)
        finally:
            bmc.close()
    assert [k for k, _ in events] == ["iso-built", "vmedia-inserted", "vmedia-ejected"], events
    text = console.read_text(errors="replace")
    assert "cloudplan: booting the deploy ramdisk of node01 (efi)" in text, tail(console)
    check_deployed(boot_http, args, payload, root, console)
    assert "-bios /usr/share/ovmf/OVMF.fd" in machine.qemu_log() and "-machine q35" in machine.qemu_log()
    assert not list((tmp_path / "state" / "vmedia").glob("*.iso"))    # removed once ejected (it held the token)
    print(f"OVMF via Redfish, power-on to the done report: {reported - started:.0f} s")
