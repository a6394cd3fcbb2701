"""Checking an installed node over SSH: pinned host key, then hardware facts.

The host key to trust is the one the node reported when it phoned home; any
other key is refused (no trust on first use). Facts are read with plain
commands every Linux installer image has: ``hostname``, ``getconf``,
``/proc/meminfo`` and ``lsblk``.

Data disks: every ``lsblk`` device of TYPE ``disk``, except

- the disks holding ``/``, ``/boot``, ``/boot/efi`` or swap (directly, or
  through partitions, LVM, RAID or crypt layers below them), and
- ``zram`` devices (compressed RAM, not drives).

That matches ``Expect.disks`` and ``Node.drives``: the drives left for Ceph OSDs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import Expect

log = logging.getLogger(__name__)

# Expect.ram_gib tolerance: firmware and the kernel keep a few percent of RAM out of MemTotal.
RAM_TOLERANCE = 0.05
SYSTEM_MOUNTS = frozenset({"/", "/boot", "/boot/efi", "/efi", "[SWAP]"})
STEP = "verify"

# getconf counts online CPUs like os.cpu_count(); nproc would honour this session's affinity mask.
CMD_CORES = "getconf _NPROCESSORS_ONLN || nproc --all"
CMD_MEM = "grep '^MemTotal:' /proc/meminfo"
CMD_DISKS = "lsblk -J -o NAME,TYPE,MOUNTPOINT"


@dataclass
class Facts:
    hostname: str
    cores: int
    ram_gib: float
    disks: int
    installed: dict | None = None   # what the installed-OS checks found (image deploys)


class HostKeyMismatch(paramiko.SSHException):
    """The server offered a key other than the pinned one."""


class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Accept exactly one host key, given as ``TYPE BASE64``; refuse every other."""

    def __init__(self, key_type: str, key_blob: bytes):
        self.key_type, self.key_blob = key_type, key_blob

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if key.get_name() != self.key_type or key.asbytes() != self.key_blob:
            raise HostKeyMismatch(f"offered {key.get_name()} key {key.fingerprint}")


def parse_host_key(line: str, *, node: str) -> tuple[str, bytes]:
    """``("ssh-ed25519", blob)`` from ``ssh-ed25519 AAAA... [comment]``."""
    parts = line.split()
    try:
        if len(parts) < 2:
            raise ValueError
        blob = base64.b64decode(parts[1], validate=True)
    except (ValueError, binascii.Error):
        raise ProvisioningFailed("pinned host key is not 'TYPE BASE64' OpenSSH format", node=node, step=STEP) from None
    return parts[0], blob


def _connect(host: str, port: int, username: str, key_filename: str | None, host_key: str, node: str,
             timeout_s: float) -> paramiko.SSHClient:
    key_type, blob = parse_host_key(host_key, node=node)
    if key_filename is not None and not os.path.isfile(key_filename):
        raise ProvisioningFailed(f"SSH private key file {key_filename} not found", node=node, step=STEP)
    try:
        pinned = paramiko.PKey.from_type_string(key_type, blob)
    except (paramiko.SSHException, ValueError, TypeError):
        raise ProvisioningFailed(f"pinned host key of type {key_type} cannot be loaded", node=node,
                                 step=STEP) from None
    client = paramiko.SSHClient()
    # Known-hosts holds only the pin: paramiko then asks the server for that key type first and
    # refuses a different key; the policy refuses anything if the lookup ever misses.
    client.get_host_keys().add(host if port == 22 else f"[{host}]:{port}", key_type, pinned)
    client.set_missing_host_key_policy(PinnedHostKeyPolicy(key_type, blob))
    where = f"{username}@{host}:{port}"
    try:
        client.connect(host, port=port, username=username, key_filename=key_filename, timeout=timeout_s,
                       banner_timeout=timeout_s, auth_timeout=timeout_s, allow_agent=False,
                       look_for_keys=False)
    except HostKeyMismatch as err:
        client.close()
        raise ProvisioningFailed(f"host key mismatch at {where}: {err}, expected the pinned {key_type} key",
                                 node=node, step=STEP) from None
    except paramiko.BadHostKeyException as err:
        client.close()
        raise ProvisioningFailed(f"host key mismatch at {where}: offered {err.key.get_name()} key "
                                 f"{err.key.fingerprint}, expected the pinned {pinned.fingerprint}",
                                 node=node, step=STEP) from None
    except paramiko.PasswordRequiredException:  # a subclass of AuthenticationException
        client.close()
        raise ProvisioningFailed(f"SSH private key file {key_filename} is encrypted; give an unencrypted key",
                                 node=node, step=STEP) from None
    except paramiko.AuthenticationException:
        client.close()
        raise ProvisioningFailed(f"authentication failed for {where} with key file {key_filename or '(none)'}",
                                 node=node, step=STEP) from None
    except (paramiko.SSHException, OSError, EOFError) as err:
        client.close()
        raise ProvisioningFailed(f"cannot reach {where}: {_reason(err)}", node=node, step=STEP) from None
    return client


def _reason(err: BaseException) -> str:
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _run(client: paramiko.SSHClient, cmd: str, node: str, timeout_s: float) -> str:
    try:
        _, stdout, stderr = client.exec_command(cmd, timeout=timeout_s)
        out = stdout.read().decode("utf-8", errors="replace")
        status = stdout.channel.recv_exit_status()
        err = stderr.read().decode("utf-8", errors="replace").strip()
    except (paramiko.SSHException, OSError) as exc:
        raise ProvisioningFailed(f"running {cmd!r}: {_reason(exc)}", node=node, step=STEP) from None
    if status != 0:
        raise ProvisioningFailed(f"{cmd!r} exited {status}: {err[:200]}", node=node, step=STEP)
    return out


def parse_meminfo_gib(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            kib = int(fields[1])
            return kib / (1024 * 1024)
    raise ValueError("no MemTotal line")


def count_data_disks(lsblk_json: str) -> int:
    """Disks per the rule in the module docstring, from ``lsblk -J -o NAME,TYPE,MOUNTPOINT``."""
    devices = json.loads(lsblk_json).get("blockdevices", [])

    def holds_system(dev: dict) -> bool:
        mounts = {dev.get("mountpoint")} | set(dev.get("mountpoints") or [])
        if mounts & SYSTEM_MOUNTS:
            return True
        return any(holds_system(c) for c in dev.get("children") or [])

    return sum(1 for d in devices
               if d.get("type") == "disk" and not d.get("name", "").startswith("zram") and not holds_system(d))


def gather_facts(client: paramiko.SSHClient, *, node: str, timeout_s: float = 30) -> Facts:
    hostname = _run(client, "hostname", node, timeout_s).strip()
    try:
        cores = int(_run(client, CMD_CORES, node, timeout_s).split()[0])
        ram = parse_meminfo_gib(_run(client, CMD_MEM, node, timeout_s))
        disks = count_data_disks(_run(client, CMD_DISKS, node, timeout_s))
    except (ValueError, IndexError, json.JSONDecodeError) as err:
        raise ProvisioningFailed(f"unexpected command output: {err}", node=node, step=STEP) from None
    return Facts(hostname=hostname, cores=cores, ram_gib=ram, disks=disks)


def check_facts(facts: Facts, expect: Expect | None, *, hostname: str) -> None:
    """Raise naming the first field that differs: hostname exact, cores exact, RAM within 5 %, disks at least."""
    node = hostname
    if facts.hostname != hostname:
        raise ProvisioningFailed(f"hostname is {facts.hostname!r}, expected {hostname!r}", node=node, step=STEP)
    if expect is None:
        return
    if expect.cores is not None and facts.cores != expect.cores:
        raise ProvisioningFailed(f"cores: node reports {facts.cores}, expected {expect.cores}", node=node, step=STEP)
    if expect.ram_gib is not None and abs(facts.ram_gib - expect.ram_gib) > RAM_TOLERANCE * expect.ram_gib:
        raise ProvisioningFailed(f"ram_gib: node reports {facts.ram_gib:.1f} GiB, expected {expect.ram_gib:g} GiB "
                                 f"(+/- {RAM_TOLERANCE:.0%})", node=node, step=STEP)
    if expect.disks is not None and facts.disks < expect.disks:
        raise ProvisioningFailed(f"disks: node reports {facts.disks} data disks, expected at least {expect.disks}",
                                 node=node, step=STEP)


def verify_node(host: str, *, port: int = 22, username: str, key_filename: str | None, host_key: str,
                expect: Expect | None, hostname: str, timeout_s: float = 30,
                installed: Callable[[Callable[[str], str]], dict] | None = None) -> Facts:
    """SSH to ``host`` trusting only ``host_key``, read its facts and check them against ``expect``;
    then ``installed(run)`` (see :mod:`cloudplan.provision.installcheck`), whose findings land in
    ``Facts.installed``.

    Raises :class:`ProvisioningFailed` (step ``verify``) on a host key
    mismatch, authentication failure, unreachable host or facts that differ.
    """
    client = _connect(host, port, username, key_filename, host_key, hostname, timeout_s)
    try:
        facts = gather_facts(client, node=hostname, timeout_s=timeout_s)
        log.info("%s: %s cores, %.1f GiB RAM, %s data disks", hostname, facts.cores, facts.ram_gib, facts.disks)
        check_facts(facts, expect, hostname=hostname)
        if installed is not None:
            facts.installed = installed(lambda cmd: _run(client, cmd, hostname, timeout_s))
    finally:
        client.close()
    return facts
