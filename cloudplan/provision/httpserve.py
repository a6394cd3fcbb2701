"""The HTTP plumbing under the boot service: bounded, timed, quiet about clients.

The boot service faces every host on the provisioning segment, so nothing a
client does may cost the provisioning process more than a bounded share of it:

- every socket read has a timeout (an idle or half-sent request is dropped);
- connections are capped in total and per client address, so one host cannot
  take the file descriptors SSH, IPMI and the state file need;
- a client that hangs up mid-reply is a log line, not a traceback;
- client text (request lines, identifiers) is escaped and bounded before it
  reaches a log, so a client cannot forge log lines;
- refusals are throttled: the first of a kind is reported at once, the ones
  after it within ``interval_s`` are only counted and reported as a number.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0       # per socket read: request line, headers, body
MAX_CONNECTIONS = 256       # open connections in all, far below a default 1024-descriptor limit
MAX_PER_CLIENT = 16         # open connections from one address
MAX_LOGGED_CHARS = 200


def printable(text: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` safe for one log line: control and non-ASCII characters escaped, length bounded."""
    s = str(text)
    out = s.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if 32 <= ord(c) < 127 else f"\\x{ord(c):02x}" for c in out)
    return out if len(out) <= limit else out[:limit] + f"...({len(s)} chars)"


class BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server with connection caps and no tracebacks for client hang-ups."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], family: int, *,
                 max_connections: int = MAX_CONNECTIONS, max_per_client: int = MAX_PER_CLIENT,
                 read_timeout_s: float = READ_TIMEOUT_S, on_refused: Callable[[str], None] | None = None):
        self.address_family = family
        self.read_timeout_s = read_timeout_s
        self.max_connections, self.max_per_client = max_connections, max_per_client
        self.on_refused = on_refused
        self._open: dict[str, int] = {}
        self._open_total = 0
        self._count_lock = threading.Lock()
        super().__init__(addr, handler)

    def verify_request(self, request, client_address) -> bool:
        host = client_address[0]
        with self._count_lock:
            if self._open_total >= self.max_connections or self._open.get(host, 0) >= self.max_per_client:
                refused = True
            else:
                refused = False
                self._open_total += 1
                self._open[host] = self._open.get(host, 0) + 1
        if refused and self.on_refused is not None:
            self.on_refused(host)
        return not refused  # socketserver closes a refused connection at once

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            host = client_address[0]
            with self._count_lock:
                self._open_total -= 1
                left = self._open.get(host, 1) - 1
                if left:
                    self._open[host] = left
                else:
                    self._open.pop(host, None)

    def open_connections(self) -> int:
        with self._count_lock:
            return self._open_total

    def handle_error(self, request, client_address) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):  # reset, broken pipe, timeout: the client's business
            log.debug("%s: connection ended: %s", client_address[0], printable(err))
            return
        log.error("boot service: unexpected error serving %s", client_address[0], exc_info=True)


class QuietHandler(BaseHTTPRequestHandler):
    """Request handler whose reads time out and whose log lines are escaped."""

    timeout = READ_TIMEOUT_S          # StreamRequestHandler applies it to the socket
    protocol_version = "HTTP/1.0"     # one request per connection: no idle keep-alive
    mask: Callable[[str], str] = staticmethod(lambda s: s)

    def setup(self) -> None:
        self.timeout = getattr(self.server, "read_timeout_s", READ_TIMEOUT_S)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.client_address[0], printable(self.mask(format % args)))

    def reply(self, status: int, body: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Throttle:
    """At most one report per key per ``interval_s``; the ones held back are counted.

    ``check(key)`` says whether to report now and how many were held back since
    the last report; ``pending()`` hands over (and clears) what is still held."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 4096):
        self.interval_s, self.clock, self.max_keys = interval_s, clock, max_keys
        self._last: dict[tuple, float] = {}
        self._held: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def check(self, key: tuple) -> tuple[bool, int]:
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            if last is None and len(self._last) >= self.max_keys:
                self._last.clear()  # bounded memory; at worst a key is reported again early
            self._last[key] = now
            return True, self._held.pop(key, 0)

    def pending(self) -> dict[tuple, int]:
        with self._lock:
            held, self._held = self._held, {}
            return held
