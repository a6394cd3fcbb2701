"""A TCP port chosen now for a server that listens on it later (an emulator, a test's sshd).

The port is taken below the kernel's ephemeral range: the kernel hands ports from
that range to outgoing connections, and one from a machine's address (a played
machine phoning home from 127.0.0.20) would hold the very port a server is about
to listen on at that address, which a bind to port 0 elsewhere cannot see.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 10000
ATTEMPTS = 200


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768     # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_tcp_port(host: str = "127.0.0.1", *also: str) -> int:
    """A port nothing holds at ``host`` nor at any of ``also``, below the ephemeral range."""
    high = max(LOWEST_PORT + 1, _ephemeral_low())
    for _ in range(ATTEMPTS):
        port = random.randrange(LOWEST_PORT, high)
        if all(_bindable(h, port) for h in (host, *also)):
            return port
    raise OSError(f"no free TCP port in {LOWEST_PORT}-{high - 1} on {', '.join((host, *also))}")
