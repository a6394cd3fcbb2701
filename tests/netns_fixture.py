"""Network namespaces for tests that need a real L2 segment (DHCP, PXE).

``netns_pair()`` creates two namespaces with unique names, "server" and
"client", joined by a veth pair (``pxe0`` on the server side with
``10.250.0.1/24``, ``node0`` on the client side, unaddressed), and deletes
them afterwards, ending whatever still runs inside them. Nothing touches the
host's own network namespace, so parallel runs cannot collide.

``in_netns(ns, fn)`` runs ``fn`` in a thread that has entered ``ns``: sockets
it creates (e.g. ``BootServer.start()``) live in that namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def require_root_and(*binaries: str) -> None:
    """Fail (never skip) with a message naming what is missing."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (it creates network namespaces and runs system daemons)")
    missing = [b for b in binaries if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        pytest.fail(f"missing binaries: {', '.join(missing)} "
                    "(Debian packages: dnsmasq, busybox, iproute2, openssh-server)")


def sh(*cmd: str, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def ns_exec(ns: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


def ns_prefix(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns]


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` from a thread that joined network namespace ``ns`` (setns is per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, Any] = {}

    def run() -> None:
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


@dataclass
class NetnsPair:
    server: str
    client: str
    server_if: str = "pxe0"
    client_if: str = "node0"
    server_ip: str = "10.250.0.1"
    prefix_len: int = 24

    def set_client_mac(self, mac: str) -> None:
        sh("ip", "-n", self.client, "link", "set", self.client_if, "address", mac)

    def set_client_ip(self, ip: str) -> None:
        sh("ip", "-n", self.client, "addr", "flush", "dev", self.client_if)
        sh("ip", "-n", self.client, "addr", "add", f"{ip}/{self.prefix_len}", "dev", self.client_if)


def _kill_all_in(ns: str) -> None:
    pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), sig)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            time.sleep(0.05)
        if not pids:
            return


@contextlib.contextmanager
def netns_pair(tag: str = "cp") -> Iterator[NetnsPair]:
    require_root_and("ip")
    suffix = f"{os.getpid()}-{secrets.token_hex(3)}"
    pair = NetnsPair(server=f"{tag}-srv-{suffix}", client=f"{tag}-cli-{suffix}")
    created: list[str] = []
    try:
        for ns in (pair.server, pair.client):
            sh("ip", "netns", "add", ns)
            created.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # Created straight inside the namespaces: the interface names never exist on the host.
        sh("ip", "link", "add", pair.server_if, "netns", pair.server, "type", "veth",
           "peer", "name", pair.client_if, "netns", pair.client)
        sh("ip", "-n", pair.server, "addr", "add", f"{pair.server_ip}/{pair.prefix_len}", "dev", pair.server_if)
        sh("ip", "-n", pair.server, "link", "set", pair.server_if, "up")
        sh("ip", "-n", pair.client, "link", "set", pair.client_if, "up")
        yield pair
    finally:
        for ns in reversed(created):
            _kill_all_in(ns)
            sh("ip", "netns", "del", ns, check=False)


def udhcpc(pair: NetnsPair, script: str, *options: str, tries: int = 5) -> subprocess.CompletedProcess:
    """One DHCP exchange from the client namespace with busybox udhcpc; ``options`` like ``-x 0xaf:01``."""
    require_root_and("busybox")
    args: Sequence[str] = ["busybox", "udhcpc", "-i", pair.client_if, "-f", "-q", "-n", "-t", str(tries),
                           "-T", "1", "-s", script, *options]
    return ns_exec(pair.client, *args, check=False, timeout=120)
