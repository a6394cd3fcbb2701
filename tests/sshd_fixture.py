"""A real OpenSSH server for tests, on 127.0.0.1 (or inside a network namespace).

``running_sshd(tmp_path)`` generates a host key and a client key with
ssh-keygen, writes an sshd_config that trusts only that client key, starts
``sshd -D -e`` and yields ``(port, host_pubkey_line, client_private_key_path,
client_public_key_line)``; the login user is :data:`SSH_USER` (the user running
the tests). sshd is stopped on exit. Missing binaries fail the test with a
message saying what to install; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

SSH_USER = getpass.getuser()
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
START_TIMEOUT_S = 20.0


class Sshd(NamedTuple):
    port: int
    host_pubkey_line: str
    client_private_key_path: str
    client_public_key_line: str


def sshd_binary() -> str:
    found = shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if os.path.exists(p)), None)
    if not found:
        pytest.fail("sshd not found: install the Debian package openssh-server")
    if not shutil.which("ssh-keygen"):
        pytest.fail("ssh-keygen not found: install the Debian package openssh-client")
    return found


def keygen(path: Path, key_type: str = "ed25519") -> str:
    """Create an unencrypted key pair at ``path``; returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", f"cloudplan-test-{key_type}",
                    "-f", str(path)], check=True, capture_output=True)
    return path.with_name(path.name + ".pub").read_text().strip()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _config(tmp: Path, port: int, listen: str, host_key: Path, authorized: Path) -> Path:
    conf = tmp / "sshd_config"
    conf.write_text("\n".join([
        f"Port {port}",
        f"ListenAddress {listen}",
        f"HostKey {host_key}",
        f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "StrictModes no",  # pytest's tmp dirs are not laid out like a home directory
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "LogLevel VERBOSE",
        "",
    ]))
    return conf


def _wait_listening(proc: subprocess.Popen, log: Path, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with status {proc.returncode}: {log.read_text()[-2000:]}")
        if f"port {port}" in log.read_text():  # "Server listening on ... port N."
            return
        if time.monotonic() > deadline:
            pytest.fail(f"sshd not listening after {START_TIMEOUT_S:g} s: {log.read_text()[-2000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_sshd(tmp_path: Path, *, listen: str = "127.0.0.1", port: int | None = None,
                 host_key_type: str = "ed25519", extra_authorized_keys: Sequence[str] = (),
                 command_prefix: Sequence[str] = ()) -> Iterator[Sshd]:
    """Run sshd for one test. ``command_prefix`` (e.g. ``ip netns exec NS``) runs it elsewhere;
    then pass ``port`` explicitly, since a free port here says nothing about that namespace."""
    binary = sshd_binary()
    d = tmp_path / "sshd"
    d.mkdir(parents=True, exist_ok=True)
    host_pub = keygen(d / f"ssh_host_{host_key_type}_key", host_key_type)
    client_pub = keygen(d / "client_key")
    authorized = d / "authorized_keys"
    authorized.write_text("\n".join([client_pub, *extra_authorized_keys]) + "\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    port = port or free_port(listen)
    conf = _config(d, port, listen, d / f"ssh_host_{host_key_type}_key", authorized)
    log = d / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*command_prefix, binary, "-D", "-e", "-f", str(conf)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        _wait_listening(proc, log, port)
        yield Sshd(port, " ".join(host_pub.split()[:2]), str(d / "client_key"), client_pub)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
