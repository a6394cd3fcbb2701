"""SSH verification against a real sshd on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import Expect
from cloudplan.provision.sshverify import Facts, count_data_disks, verify_node
from sshd_fixture import SSH_USER, free_port, keygen, running_sshd

HOSTNAME = socket.gethostname()


def local_ram_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def _root_disk_names() -> set[str]:
    """Whole-disk names under the devices mounted at /, /boot, /boot/efi, found via sysfs."""
    names: set[str] = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] not in ("/", "/boot", "/boot/efi", "/efi"):
            continue
        dev = Path(f"/sys/dev/block/{f[2]}")
        if not dev.exists():
            continue  # overlay/tmpfs roots have no block device
        stack = [dev.resolve()]
        while stack:  # walk partitions up to their disk, and device-mapper/md down to their slaves
            p = stack.pop()
            if (p / "partition").exists():
                stack.append(p.parent)
            elif (p / "slaves").exists() and any((p / "slaves").iterdir()):
                stack.extend(s.resolve() for s in (p / "slaves").iterdir())
            else:
                names.add(p.name)
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        names.add(Path(line.split()[0]).name.rstrip("0123456789").removesuffix("p"))
    return names


def local_data_disks() -> int:
    """Independent count from sysfs of the rule sshverify documents."""
    skip = _root_disk_names()
    count = 0
    for d in Path("/sys/block").iterdir():
        n = d.name
        if n.startswith(("loop", "ram", "zram", "sr", "dm-", "md", "nbd")) or n in skip:
            continue
        count += 1
    return count


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as s:
        yield s


def test_pinned_key_gives_this_machines_facts(sshd):
    facts = verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=sshd.client_private_key_path,
                        host_key=sshd.host_pubkey_line, expect=None, hostname=HOSTNAME, timeout_s=30)
    assert facts == Facts(hostname=HOSTNAME, cores=os.cpu_count(), ram_gib=pytest.approx(local_ram_gib()),
                          disks=local_data_disks())


def test_expect_matching_passes(sshd):
    expect = Expect(cores=os.cpu_count(), ram_gib=round(local_ram_gib() * 1.03, 2), disks=local_data_disks())
    facts = verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=sshd.client_private_key_path,
                        host_key=sshd.host_pubkey_line, expect=expect, hostname=HOSTNAME)
    assert facts.cores == os.cpu_count()


def test_wrong_pinned_key_refused(sshd, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    with pytest.raises(ProvisioningFailed, match="host key") as ei:
        verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=sshd.client_private_key_path,
                    host_key=other, expect=None, hostname=HOSTNAME)
    assert ei.value.step == "verify" and ei.value.node == HOSTNAME


def test_pin_of_other_type_refused(sshd, tmp_path):
    # The server has only an ed25519 key: a pinned RSA key must not be "satisfied" by it.
    other = keygen(tmp_path / "rsa_host_key", "rsa")
    with pytest.raises(ProvisioningFailed, match="host key"):
        verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=sshd.client_private_key_path,
                    host_key=other, expect=None, hostname=HOSTNAME)


@pytest.mark.parametrize("field,expect", [
    ("cores", Expect(cores=(os.cpu_count() or 1) + 1)),
    ("ram_gib", Expect(ram_gib=round(local_ram_gib() * 2, 1))),
    ("disks", Expect(disks=local_data_disks() + 1)),
])
def test_expect_mismatch_names_field(sshd, field, expect):
    with pytest.raises(ProvisioningFailed, match=field) as ei:
        verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=sshd.client_private_key_path,
                    host_key=sshd.host_pubkey_line, expect=expect, hostname=HOSTNAME)
    assert ei.value.step == "verify"


def test_hostname_mismatch(sshd):
    with pytest.raises(ProvisioningFailed, match="hostname"):
        verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=sshd.client_private_key_path,
                    host_key=sshd.host_pubkey_line, expect=None, hostname="not-" + HOSTNAME.lower()[:50])


def test_wrong_user_key_is_auth_failure(sshd, tmp_path):
    keygen(tmp_path / "stranger")
    with pytest.raises(ProvisioningFailed, match="authentication failed") as ei:
        verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=str(tmp_path / "stranger"),
                    host_key=sshd.host_pubkey_line, expect=None, hostname=HOSTNAME)
    assert ei.value.step == "verify"


def test_unreachable(tmp_path):
    port = free_port()  # nothing listens there any more
    with pytest.raises(ProvisioningFailed, match="cannot reach"):
        verify_node("127.0.0.1", port=port, username=SSH_USER, key_filename=None,
                    host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeP0Rt1eHHCZEX5uA1lgt5nfUdyFCrS6ZNtFs2bC0ib",
                    expect=None, hostname=HOSTNAME, timeout_s=5)


def test_count_data_disks_rule():
    lsblk = """{"blockdevices": [
      {"name": "sda", "type": "disk", "mountpoint": null, "children": [
         {"name": "sda1", "type": "part", "mountpoint": "/boot/efi"},
         {"name": "sda2", "type": "part", "mountpoint": null, "children": [
            {"name": "vg-root", "type": "lvm", "mountpoint": "/"}]}]},
      {"name": "sdb", "type": "disk", "mountpoint": null},
      {"name": "nvme0n1", "type": "disk", "mountpoint": null},
      {"name": "sdc", "type": "disk", "mountpoint": "[SWAP]"},
      {"name": "zram0", "type": "disk", "mountpoint": "[SWAP]"},
      {"name": "sr0", "type": "rom", "mountpoint": null},
      {"name": "loop0", "type": "loop", "mountpoint": "/snap/x"}]}"""
    assert count_data_disks(lsblk) == 2


def test_encrypted_key_is_named(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-passphrase", "-f", str(tmp_path / "enc")],
                   check=True)
    with pytest.raises(ProvisioningFailed, match="encrypted") as ei:
        verify_node("127.0.0.1", port=sshd.port, username=SSH_USER, key_filename=str(tmp_path / "enc"),
                    host_key=sshd.host_pubkey_line, expect=None, hostname=HOSTNAME)
    assert "secret-passphrase" not in str(ei.value)
