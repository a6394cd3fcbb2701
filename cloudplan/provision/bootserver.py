"""The HTTP side of zero-touch provisioning: iPXE scripts, NoCloud seeds, phone-home.

Routes (all under :attr:`BootServer.url`):

- ``GET /boot.ipxe`` — the chain script every iPXE client gets from DHCP;
- ``GET /boot/<mac>/<uuid>`` (or ``/boot?mac=..&uuid=..``) — the script of the
  registered node with that MAC, else that SMBIOS UUID; an unknown machine gets
  a script that says so and exits;
- ``GET /nocloud/<name>/{user-data,meta-data,vendor-data}`` — the node's
  cloud-init seed, only while the node is registered;
- ``GET /vmedia/<name>/<key>.iso`` (and ``HEAD``, byte ranges) — the node's
  deploy ISO while it is published (:meth:`BootServer.publish`), for the BMC
  to fetch as virtual media or for UEFI HTTP boot; ``key`` is a per-boot
  secret of its own (the BMC shows image URLs to its users), masked in logs;
- ``POST /phone-home/<name>/<token>`` — cloud-init's ``phone_home`` module
  (form-encoded ``pub_key_*``, ``instance_id``, ``hostname``, ``fqdn``; JSON is
  accepted too). A wrong token gets 403 and records nothing; the token is
  one-time: a second phone-home with it gets 409 and records nothing.

The token is a per-boot secret: it ties a phone-home to the seed this server
handed out. It is compared in constant time and never logged (the access log
masks it). Like MAAS and Ironic, this trusts the provisioning network: a host
on that segment can fetch any registered node's seed.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from cloudplan.errors import CloudplanError, ProvisioningFailed, ProvisioningTimeout
from cloudplan.inventory import BootSpec, Node
from cloudplan.provision import cloudinit

log = logging.getLogger(__name__)

# cloud-init posts host keys under these names; the first present one is pinned.
HOST_KEY_FIELDS = ("pub_key_ed25519", "pub_key_ecdsa", "pub_key_rsa")
MAX_BODY_BYTES = 64 * 1024
_HOST_KEY_RE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+$")

EventSink = Callable[[str, str, str], None]


@dataclass
class PhoneHome:
    """What a node reported when cloud-init phoned home."""

    name: str
    host_key: str  # "ssh-ed25519 AAAA..." (type and key, comment dropped)
    address: str  # node IP as seen by the server
    mac: str | None
    uuid: str | None
    at: float  # time.time() of receipt
    host_keys: dict[str, str] = field(default_factory=dict)  # every reported key by field name
    hostname: str | None = None
    instance_id: str | None = None


@dataclass
class _Expected:
    node: Node
    token: str
    instance_id: str
    booted_mac: str | None = None  # MAC the iPXE request came from, when matched by UUID


def normalize_mac(value: str | None) -> str | None:
    """``aa:bb:..`` from ``AA-BB-..``, ``aa:bb``, or ``aabb..``; None when not a MAC."""
    if not value:
        return None
    hexdigits = re.sub(r"[^0-9a-fA-F]", "", value)
    if len(hexdigits) != 12 or len(re.sub(r"[0-9a-fA-F:.-]", "", value)):
        return None
    return ":".join(hexdigits[i:i + 2] for i in range(0, 12, 2)).lower()


def uuid_forms(value: str | None) -> set[str]:
    """The UUID as 32 lowercase hex digits, and its byte-swapped twin.

    SMBIOS stores the first three fields little-endian; some firmware reports
    them as stored, some as meant, so both forms must match the inventory's.
    """
    if not value:
        return set()
    try:
        u = uuidlib.UUID(value.strip())
    except ValueError:
        return set()
    return {u.hex, uuidlib.UUID(bytes_le=u.bytes).hex}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, addr: tuple[str, int], boot: "BootServer", family: int):
        self.address_family = family
        self.boot = boot
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "cloudplan-boot"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        # The request line holds the phone-home token: mask it before it reaches a log.
        msg = format % args
        msg = _VMEDIA_PATH.sub(r"\1***", _PHONE_HOME_PATH.sub(r"\1***", msg))
        log.debug("%s %s", self.client_address[0], msg)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch(self.server.boot._handle_get)

    def do_HEAD(self) -> None:  # noqa: N802 - BMCs ask for an image's size before fetching it
        self._dispatch(self.server.boot._handle_get)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self.server.boot._handle_post)

    def _dispatch(self, handler: Callable[["_Handler"], None]) -> None:
        try:
            handler(self)
        except CloudplanError as err:
            # A template or input problem: the node gets a 500, the operator the reason.
            log.error("%s", err)
            self.reply(500, "internal error\n")

    def reply(self, status: int, body: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


_PHONE_HOME_PATH = re.compile(r"(/phone-home/[^/\s]+/)[^\s\"]*")
_VMEDIA_PATH = re.compile(r"(/vmedia/[^/\s]+/)[^\s\"]*")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
FILE_CHUNK_BYTES = 1 << 20


class BootServer:
    """HTTP boot, seed and phone-home service for the nodes being provisioned.

    ``on_event(node_name, kind, detail)`` is called from server threads for:
    ``ipxe-served``, ``unknown-node`` (name ``""``), ``boot-not-configured``,
    ``user-data-served``, ``meta-data-served``, ``phone-home``,
    ``phone-home-rejected`` (detail says why; never the token).
    ``advertise_url`` is the base URL nodes use when it differs from the bind
    address (binding 0.0.0.0, NAT).
    """

    def __init__(self, bind_host: str, port: int, *, boot: BootSpec | None = None,
                 ssh_public_key: str | None = None, on_event: EventSink | None = None,
                 advertise_url: str | None = None, clock: Callable[[], float] = time.monotonic,
                 poll_interval_s: float = 1.0):
        self.bind_host, self._want_port = bind_host, port
        self.boot, self.on_event = boot, on_event
        self.ssh_public_keys = [k.strip() for k in (ssh_public_key or "").splitlines() if k.strip()]
        self._advertise = advertise_url.rstrip("/") if advertise_url else None
        self._clock, self._poll_s = clock, poll_interval_s
        self._lock = threading.Condition()
        self._expected: dict[str, _Expected] = {}
        self._homes: dict[str, PhoneHome] = {}
        self._files: dict[str, tuple[str, Path]] = {}   # node -> (url key, ISO path)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self._httpd is not None:
            return
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        try:
            self._httpd = _Server((self.bind_host, self._want_port), self, family)
        except OSError as err:
            raise ProvisioningFailed(f"cannot listen on {self.bind_host}:{self._want_port}: {err.strerror}",
                                     step="boot-server") from None
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"bootserver-{self.port}", daemon=True)
        self._thread.start()
        log.info("boot server listening on %s", self.url)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        log.info("boot server on port %s stopped", self.port)

    def __enter__(self) -> "BootServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._advertise:
            return self._advertise
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"http://{host}:{self.port}"

    # -- registration --------------------------------------------------------

    def register(self, node: Node, token: str) -> None:
        """Expect a boot of ``node``; a new token forgets an earlier phone-home."""
        cloudinit.check_token(token, node=node.name)
        if not node.mac and not node.uuid:
            raise ProvisioningFailed("needs a MAC or an SMBIOS UUID to be recognised at boot",
                                     node=node.name, step="register")
        with self._lock:
            old = self._expected.get(node.name)
            if old is not None and hmac.compare_digest(old.token, token):
                old.node = node
                return
            self._expected[node.name] = _Expected(node, token, f"{node.name}-{uuidlib.uuid4().hex[:12]}")
            self._homes.pop(node.name, None)
        log.info("expecting a network boot of %s (mac %s, uuid %s)", node.name, node.mac or "-", node.uuid or "-")

    def unregister(self, name: str) -> None:
        with self._lock:
            self._expected.pop(name, None)

    def publish(self, name: str, path: Path) -> str:
        """Serve ``path`` as ``name``'s deploy ISO under a fresh secret URL; returns the URL."""
        key = secrets.token_urlsafe(18)
        with self._lock:
            self._files[name] = (key, Path(path))
        return f"{self.url}/vmedia/{name}/{key}.iso"

    def unpublish(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)

    def wait_phone_home(self, name: str, timeout_s: float) -> PhoneHome:
        """Block until ``name`` phones home; :class:`ProvisioningTimeout` after ``timeout_s``."""
        deadline = self._clock() + timeout_s
        with self._lock:
            while name not in self._homes:
                left = deadline - self._clock()
                if left <= 0:
                    raise ProvisioningTimeout(f"no phone-home within {timeout_s:g} s", node=name,
                                              step="phone-home")
                # Bounded wait: the deadline is on the (injectable) clock, not the condition's.
                self._lock.wait(min(left, self._poll_s))
            return self._homes[name]

    def phoned_home(self, name: str) -> PhoneHome | None:
        with self._lock:
            return self._homes.get(name)

    # -- matching ------------------------------------------------------------

    def match(self, mac: str | None, uuid: str | None) -> Node | None:
        """The registered node with this MAC, else with this SMBIOS UUID (either byte order)."""
        m, forms = normalize_mac(mac), uuid_forms(uuid)
        with self._lock:
            entries = list(self._expected.values())
        if m:
            for e in entries:
                if e.node.mac and normalize_mac(e.node.mac) == m:
                    return e.node
        if forms:
            for e in entries:
                if uuid_forms(e.node.uuid) & forms:
                    return e.node
        return None

    # -- HTTP handlers (called from server threads) --------------------------

    def _emit(self, name: str, kind: str, detail: str = "") -> None:
        log.info("%s: %s%s", name or "-", kind, f" ({detail})" if detail else "")
        if self.on_event is None:
            return
        try:
            self.on_event(name, kind, detail)
        except Exception:  # a faulty callback must not kill the boot of a node; report it loudly
            log.exception("on_event callback failed for %s %s", name or "-", kind)

    def _handle_get(self, req: _Handler) -> None:
        parts = urlsplit(req.path)
        segs = [unquote(s) for s in parts.path.split("/") if s]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if segs == ["boot.ipxe"]:
            req.reply(200, cloudinit.render_chain_script(self.url))
        elif segs and segs[0] == "boot" and len(segs) <= 3:
            mac = segs[1] if len(segs) > 1 else query.get("mac")
            uuid = segs[2] if len(segs) > 2 else query.get("uuid")
            self._serve_node_script(req, mac, uuid)
        elif len(segs) == 3 and segs[0] == "nocloud":
            self._serve_seed(req, segs[1], segs[2])
        elif len(segs) == 3 and segs[0] == "vmedia":
            self._serve_file(req, segs[1], segs[2])
        elif segs == ["healthz"]:
            req.reply(200, "ok\n")
        else:
            req.reply(404, "not found\n")

    def _serve_node_script(self, req: _Handler, mac: str | None, uuid: str | None) -> None:
        node = self.match(mac, uuid)
        if node is None:
            self._emit("", "unknown-node", f"mac {normalize_mac(mac) or '-'}, uuid {uuid or '-'}")
            req.reply(200, cloudinit.render_unknown_script(mac, uuid, "no node expected"))
            return
        if self.boot is None:
            self._emit(node.name, "boot-not-configured", "provisioning.boot is not set")
            req.reply(200, cloudinit.render_unknown_script(mac, uuid, "no installer configured"))
            return
        with self._lock:
            entry = self._expected.get(node.name)
            if entry is not None:
                entry.booted_mac = normalize_mac(mac) or entry.booted_mac
        script = cloudinit.render_node_script(node, self.boot, self.url)
        # Events go out before the reply, so whoever sees the response also sees the event.
        self._emit(node.name, "ipxe-served", "")
        req.reply(200, script)

    def _serve_seed(self, req: _Handler, name: str, what: str) -> None:
        with self._lock:
            entry = self._expected.get(name)
        if entry is None or what not in ("user-data", "meta-data", "vendor-data"):
            req.reply(404, "not found\n")
            return
        if what == "user-data":
            body = cloudinit.render_user_data(
                name, phone_home=cloudinit.phone_home_url(self.url, name, entry.token),
                ssh_authorized_keys=self.ssh_public_keys)
        elif what == "meta-data":
            body = cloudinit.render_meta_data(name, entry.instance_id)
        else:
            body = cloudinit.render_vendor_data()
        if what != "vendor-data":
            self._emit(name, f"{what}-served", "")
        req.reply(200, body)

    def _serve_file(self, req: _Handler, name: str, leaf: str) -> None:
        """A published ISO, whole or one byte range (BMCs fetch virtual media in ranges)."""
        with self._lock:
            entry = self._files.get(name)
        key = leaf[:-4] if leaf.endswith(".iso") else ""
        if entry is None or not hmac.compare_digest(entry[0].encode(), key.encode()):
            req.reply(404, "not found\n")
            return
        path = entry[1]
        try:
            size = path.stat().st_size
            fh = path.open("rb")
        except OSError:
            req.reply(404, "not found\n")
            return
        with fh:
            start, end, status = 0, size - 1, 200
            m = _RANGE_RE.match(req.headers.get("Range", "").strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
                else:
                    start = max(0, size - int(m.group(2)))
                if start > end:
                    req.send_response(416)
                    req.send_header("Content-Range", f"bytes */{size}")
                    req.send_header("Content-Length", "0")
                    req.end_headers()
                    return
                status = 206
            req.send_response(status)
            req.send_header("Content-Type", "application/octet-stream")
            req.send_header("Accept-Ranges", "bytes")
            req.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                req.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            req.end_headers()
            if req.command == "HEAD":
                return
            if start == 0:
                self._emit(name, "vmedia-served", f"{size} bytes")
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = fh.read(min(FILE_CHUNK_BYTES, left))
                if not chunk:
                    break
                req.wfile.write(chunk)
                left -= len(chunk)

    def _handle_post(self, req: _Handler) -> None:
        segs = [unquote(s) for s in urlsplit(req.path).path.split("/") if s]
        if len(segs) != 3 or segs[0] != "phone-home":
            req.reply(404, "not found\n")
            return
        name, token = segs[1], segs[2]
        with self._lock:
            entry = self._expected.get(name)
            used = name in self._homes
        # Compare even for an unknown name, so timing does not tell which names are registered.
        expected_token = entry.token if entry else "\0" * len(token)
        if not hmac.compare_digest(expected_token.encode(), token.encode()) or entry is None:
            self._emit(name, "phone-home-rejected", "bad token" if entry else "node not expected")
            req.reply(403, "forbidden\n")
            return
        if used:  # the token is one-time: a replay records nothing
            self._emit(name, "phone-home-rejected", "token already used")
            req.reply(409, "already phoned home with this token\n")
            return
        try:
            fields = _read_fields(req)
        except ValueError as err:
            self._emit(name, "phone-home-rejected", str(err))
            req.reply(400, f"{err}\n")
            return
        keys = {f: _clean_key(fields.get(f)) for f in HOST_KEY_FIELDS}
        keys = {f: k for f, k in keys.items() if k}
        if not keys:
            self._emit(name, "phone-home-rejected", "no SSH host key in the report")
            req.reply(400, "no SSH host key (pub_key_ed25519, pub_key_ecdsa or pub_key_rsa)\n")
            return
        home = PhoneHome(name=name, host_key=next(iter(keys.values())), address=req.client_address[0],
                         mac=entry.booted_mac or entry.node.mac, uuid=entry.node.uuid, at=time.time(),
                         host_keys=keys, hostname=fields.get("hostname") or None,
                         instance_id=fields.get("instance_id") or None)
        with self._lock:
            self._homes[name] = home
            self._lock.notify_all()
        self._emit(name, "phone-home", f"{home.host_key.split()[0]} from {home.address}")
        req.reply(200, "ok\n")


def _read_fields(req: _Handler) -> dict[str, str]:
    """Body fields of a phone-home POST, form-encoded (cloud-init) or JSON."""
    try:
        length = int(req.headers.get("Content-Length", "0"))
    except ValueError:
        raise ValueError("bad Content-Length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise ValueError(f"body must be at most {MAX_BODY_BYTES} bytes")
    raw = req.rfile.read(length).decode("utf-8", errors="replace")
    ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _clean_key(value: str | None) -> str | None:
    """``TYPE BASE64`` from a public key line; None for cloud-init's ``N/A`` or junk."""
    if not value:
        return None
    parts = value.strip().split()
    if len(parts) < 2:
        return None
    key = f"{parts[0]} {parts[1]}"
    return key if _HOST_KEY_RE.match(key) else None
