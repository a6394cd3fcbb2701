"""The lab installer image, booted for real: QEMU (TCG) -> DHCP -> seed -> phone-home -> SSH verification.

The image is built into the repository's ``.cache/lab`` so later runs reuse it.
QEMU's user-mode network gives the guest DHCP and reaches the host's loopback
as 10.0.2.2, where cloudplan's real BootServer runs; a host port forward
reaches the guest's SSH server for cloudplan's real ``verify_node``.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import paramiko
import pytest

from cloudplan.errors import ProvisioningTimeout
from cloudplan.inventory import Expect, Node
from cloudplan.lab.image import build_installer
from cloudplan.provision.bootserver import BootServer, PhoneHome
from cloudplan.provision.sshverify import verify_node
from provision_fixtures import free_tcp_port, need

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "lab"
BOOT_TIMEOUT_S = 120
# The Debian kernel keeps ~60 MiB plus 1.6 % for itself, so MemTotal is within verify's 5 % RAM
# tolerance only from about 1.3 GiB: 384 MiB reports 0.32 GiB, 1 GiB 0.94 GiB, 2 GiB 1.92 GiB.
MEMORY_MIB = 2048
CPUS = 2
MAC = "52:54:00:1a:b0:01"
# QEMU user networking: the host's 127.0.0.1 as the guest sees it.
HOST_FROM_GUEST = "10.0.2.2"


def serial_tail(path: Path, lines: int = 80) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no serial output)"
    return "\n".join(text.splitlines()[-lines:])


def qemu_argv(kernel: Path, initrd: Path, seed: str, ssh_port: int, disk: Path) -> list[str]:
    return [
        need("qemu-system-x86_64"), "-accel", "tcg", "-m", str(MEMORY_MIB), "-smp", str(CPUS), "-nographic",
        "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
        # panic=1 with -no-reboot: a kernel panic ends QEMU at once instead of at the timeout.
        "-append", f"console=ttyS0 panic=1 ds=nocloud;s={seed}",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", f"e1000,netdev=n0,mac={MAC}",
        "-drive", f"file={disk},if=virtio,format=raw",
    ]


def wait_phone_home(server: BootServer, name: str, qemu: subprocess.Popen, timeout_s: float) -> PhoneHome:
    """Like ``server.wait_phone_home``, but gives up as soon as QEMU exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return server.wait_phone_home(name, timeout_s=min(2.0, max(0.1, deadline - time.monotonic())))
        except ProvisioningTimeout:
            if qemu.poll() is not None:
                raise AssertionError(f"QEMU exited with status {qemu.returncode} before {name} phoned home") from None
            if time.monotonic() >= deadline:
                raise


@pytest.fixture
def client_key(tmp_path: Path) -> tuple[Path, str]:
    key = paramiko.ECDSAKey.generate(bits=256)
    path = tmp_path / "id_ecdsa"
    key.write_private_key_file(str(path))
    return path, f"{key.get_name()} {key.get_base64()} operator@lab"


def test_installer_boots_phones_home_and_passes_ssh_verification(tmp_path: Path, client_key) -> None:
    need("qemu-system-x86_64")
    started = time.monotonic()
    image = build_installer(CACHE)
    built = time.monotonic()
    assert image.kernel.is_file() and image.initrd.is_file(), image

    key_file, public_key = client_key
    node = Node(name="lab-node-01", role="compute", rack="r1", mac=MAC,
                bmc={"address": "192.0.2.10", "username": "admin", "password_env": "LAB_BMC_PW"})
    disk = tmp_path / "data.img"
    with open(disk, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: takes no space on the host
    serial = tmp_path / "serial.log"
    http_port, ssh_port = free_tcp_port(), free_tcp_port()

    with BootServer("127.0.0.1", http_port, ssh_public_key=public_key,
                    advertise_url=f"http://{HOST_FROM_GUEST}:{http_port}") as server:
        server.register(node, secrets.token_urlsafe(24))
        # The VM boots its kernel directly, so play its iPXE step here: the boot attempt is bound to
        # the address the guest's requests come from (QEMU user networking: the host's 127.0.0.1).
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/boot/{MAC.replace(':', '-')}/",
                                    timeout=10) as r:
            assert r.status == 200
        seed = f"{server.url}/nocloud/{node.name}/"
        with open(serial, "wb") as out:
            qemu = subprocess.Popen(qemu_argv(image.kernel, image.initrd, seed, ssh_port, disk),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            home = wait_phone_home(server, node.name, qemu, BOOT_TIMEOUT_S)
            phoned = time.monotonic()
            facts = verify_node("127.0.0.1", port=ssh_port, username="root", key_filename=str(key_file),
                                host_key=home.host_key, hostname=node.name,
                                expect=Expect(cores=CPUS, ram_gib=MEMORY_MIB / 1024, disks=1))
            verified = time.monotonic()
        except BaseException:
            print(f"--- serial console of {node.name} (last lines) ---\n{serial_tail(serial)}")
            raise
        finally:
            qemu.kill()
            qemu.wait(timeout=30)

    assert home.host_key.startswith("ssh-ed25519 ")
    # The instance-id comes from the served meta-data, as cloud-init would report it.
    assert home.hostname == node.name and home.instance_id and home.instance_id.startswith(f"{node.name}-")
    assert (facts.cores, facts.disks) == (CPUS, 1)
    print(f"build {built - started:.1f} s, boot to phone-home {phoned - built:.1f} s, "
          f"SSH verification {verified - phoned:.1f} s, RAM {facts.ram_gib:.3f} GiB")
