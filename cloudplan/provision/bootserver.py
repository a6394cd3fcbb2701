"""The HTTP side of zero-touch provisioning: iPXE scripts, NoCloud seeds, phone-home.

Routes (all under :attr:`BootServer.url`):

- ``GET /boot.ipxe`` — the chain script every iPXE client gets from DHCP;
- ``GET /boot/<mac>/<uuid>`` (or ``/boot?mac=..&uuid=..``) — the script of the
  registered node with that MAC, else that SMBIOS UUID; an unknown machine gets
  a script that says so and exits;
- ``GET /nocloud/<name>/{user-data,meta-data,vendor-data}`` — the node's
  cloud-init seed;
- ``GET /vmedia/<name>/<key>.iso`` (and ``HEAD``, byte ranges) — the node's
  deploy ISO while it is published (:meth:`BootServer.publish`), for the BMC
  to fetch as virtual media or for UEFI HTTP boot; ``key`` is a per-boot
  secret of its own (the BMC shows image URLs to its users), masked in logs;
- ``POST /phone-home/<name>/<token>`` — cloud-init's ``phone_home`` module
  (form-encoded ``pub_key_*``, ``instance_id``, ``hostname``, ``fqdn``; JSON is
  accepted too);
- with an OS image to deploy (:meth:`BootServer.set_deploy`): the iPXE script
  boots the deploy ramdisk with its arguments, ``GET /images/<file>`` serves the
  image (generic, no secrets; byte ranges), ``GET /seed/<name>.img`` the node's
  seed (to the attempt's machine only: it holds the token), ``POST
  /deploy/<name>`` takes the ramdisk's reports (token in the form body), and the
  installed OS phones home with the same token once :meth:`BootServer.expect_installed`
  says the node was powered on from its disk.

Each registration is one **boot attempt** with its own one-time token. What
binds the attempt to the machine, in this order:

1. the attempt is *armed* just before its power command is sent: an iPXE
   request before that comes from an earlier boot and gets the unknown-machine
   script;
2. the iPXE request names the node's MAC (or SMBIOS UUID) and comes from the
   machine's address: its static provisioning address, else the address
   cloudplan's DHCP leased to that MAC (``addresses``); with neither known, the
   first address that fetches the script is the machine's for this attempt;
3. the seed (which holds the token) is served only after that, and only to
   that address; so is the phone-home accepted, so the address SSH
   verification connects to is the one the machine booted with;
4. the token is checked and consumed in one step under a lock; a token of an
   earlier attempt, a second use, a key that does not parse as an SSH public
   key, or another source address is refused and reported.

A refused request gets the same answer as one for a node that does not exist
(404 for a seed, 403 for a phone-home, the unknown-machine script for iPXE),
so answers do not tell which nodes are waiting. Refusals are reported
throttled (see :class:`~cloudplan.provision.httpserve.Throttle`). The token is
compared in constant time and never logged. What remains trusted (the segment
itself: no TLS, no protection against a host that spoofs the machine's MAC and
address) is in the README.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import paramiko

from cloudplan.errors import CloudplanError, ProvisioningFailed, ProvisioningTimeout
from cloudplan.inventory import BootSpec, Node
from cloudplan.provision import cloudinit
from cloudplan.provision.deploy.boot import DeployBoot, seed_url as deploy_seed_url
from cloudplan.provision.deploy.cmdline import DeployReport, parse_report
from cloudplan.provision.httpserve import BoundedServer, QuietHandler, Throttle, printable

log = logging.getLogger(__name__)

# cloud-init posts host keys under these names; the first present one is pinned.
HOST_KEY_FIELDS = ("pub_key_ed25519", "pub_key_ecdsa", "pub_key_rsa")
MAX_BODY_BYTES = 64 * 1024
_HOST_KEY_RE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+) [A-Za-z0-9+/]+={0,2}$")
REFUSAL_REPORT_INTERVAL_S = 60.0

EventSink = Callable[[str, str, str], None]
# The addresses a machine may use, given its node and the MAC it booted from; None: not known.
AddressSource = Callable[[Node, "str | None"], "Iterable[str] | None"]


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
class _Attempt:
    """One boot attempt of one node."""

    node: Node
    token: str
    instance_id: str
    retired: set[str]               # SHA-256 of earlier attempts' tokens: refused, and said so
    armed: bool = False             # its power command is about to be or has been sent
    bound_address: str | None = None  # where this attempt's iPXE script went
    booted_mac: str | None = None   # MAC the iPXE request came from
    consumed: bool = False          # its token has been used
    reports_closed: bool = False    # the ramdisk said done or failed: no more reports


@dataclass
class _Installed:
    """The installed OS's first boot from disk, expected to phone home with the deploy's token."""

    node: Node
    token_sha256: str
    address: str | None             # its static provisioning address; None: any source
    consumed: bool = False


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _ip(text: str) -> str:
    """One spelling per address (``::ffff:a.b.c.d`` as ``a.b.c.d``), so comparisons are exact."""
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return text
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


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


class _Handler(QuietHandler):
    server: "_Server"
    server_version = "cloudplan-boot"

    # The request line holds the phone-home token, a vmedia URL its key: masked before it reaches a log.
    mask = staticmethod(lambda msg: _VMEDIA_PATH.sub(r"\1***", _PHONE_HOME_PATH.sub(r"\1***", msg)))

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


class _Server(BoundedServer):
    def __init__(self, addr: tuple[str, int], boot: "BootServer", family: int, **limits):
        self.boot = boot
        super().__init__(addr, _Handler, family, **limits)


_PHONE_HOME_PATH = re.compile(r"(/phone-home/[^/\s]+/)[^\s\"]*")
_VMEDIA_PATH = re.compile(r"(/vmedia/[^/\s]+/)[^\s\"]*")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
FILE_CHUNK_BYTES = 1 << 20


class BootServer:
    """HTTP boot, seed and phone-home service for the nodes being provisioned.

    ``on_event(node_name, kind, detail)`` is called from server threads for:
    ``ipxe-served``, ``unknown-node`` (name ``""``), ``boot-not-configured``,
    ``user-data-served``, ``meta-data-served``, ``phone-home``, and the refusals
    ``ipxe-refused``, ``seed-refused``, ``phone-home-rejected`` (detail says
    why; never the token; throttled). ``advertise_url`` is the base URL nodes
    use when it differs from the bind address (NAT, a forwarded port).
    ``addresses(node, mac)`` names the addresses the machine may use (static or
    leased); None when it cannot tell.
    """

    def __init__(self, bind_host: str, port: int, *, boot: BootSpec | None = None,
                 ssh_public_key: str | None = None, on_event: EventSink | None = None,
                 advertise_url: str | None = None, clock: Callable[[], float] = time.monotonic,
                 poll_interval_s: float = 1.0, addresses: AddressSource | None = None,
                 refusal_interval_s: float = REFUSAL_REPORT_INTERVAL_S, max_connections: int | None = None,
                 max_per_client: int | None = None, read_timeout_s: float | None = None):
        if bind_host in ("0.0.0.0", "::", "") and not advertise_url:
            raise ProvisioningFailed(f"{bind_host or 'an empty host'} is every address, not one nodes can be "
                                     "sent to: give the provisioning interface's address", step="boot-server")
        self.bind_host, self._want_port = bind_host, port
        self.boot, self.on_event = boot, on_event
        self.ssh_public_keys = [k.strip() for k in (ssh_public_key or "").splitlines() if k.strip()]
        self._advertise = advertise_url.rstrip("/") if advertise_url else None
        self._clock, self._poll_s = clock, poll_interval_s
        self._addresses = addresses
        self._limits = {k: v for k, v in (("max_connections", max_connections),
                                          ("max_per_client", max_per_client),
                                          ("read_timeout_s", read_timeout_s)) if v is not None}
        self._lock = threading.Condition()
        self._expected: dict[str, _Attempt] = {}
        self._homes: dict[str, PhoneHome] = {}
        self._files: dict[str, tuple[str, Path]] = {}   # node -> (url key, ISO path)
        self._images: dict[str, Path] = {}               # file name -> OS image
        self._deploys: dict[str, tuple[DeployBoot, Path]] = {}   # node -> (what to boot, seed image)
        self._reports: dict[str, list[DeployReport]] = {}
        self._installed: dict[str, _Installed] = {}
        self._throttle = Throttle(refusal_interval_s, clock)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self._httpd is not None:
            return
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        try:
            self._httpd = _Server((self.bind_host, self._want_port), self, family,
                                  on_refused=self._connection_refused, **self._limits)
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
        self._report_held_refusals()
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

    def open_connections(self) -> int:
        return self._httpd.open_connections() if self._httpd is not None else 0

    # -- registration --------------------------------------------------------

    def register(self, node: Node, token: str, *, retired: Iterable[str] = (), armed: bool = True,
                 bound_address: str | None = None) -> None:
        """Expect a boot of ``node`` with ``token``: a new boot attempt, unless the token is the
        current one. The earlier attempt's token, and the hashes in ``retired`` (attempts of
        earlier runs), are refused from now on. ``armed=False`` holds the attempt until
        :meth:`arm` (call it right before the power command). ``bound_address`` binds the
        attempt to the machine's static address from the start, for boots that fetch no iPXE
        script (virtual media, UEFI HTTP: the seed travels inside the boot image)."""
        bound = _ip(bound_address) if bound_address else None
        cloudinit.check_token(token, node=node.name)
        if not node.mac and not node.uuid:
            raise ProvisioningFailed("needs a MAC or an SMBIOS UUID to be recognised at boot",
                                     node=node.name, step="register")
        with self._lock:
            old = self._expected.get(node.name)
            if old is not None and hmac.compare_digest(old.token, token):
                old.node = node
                old.armed = old.armed or armed
                old.bound_address = old.bound_address or bound
                return
            earlier = set(retired) | (old.retired | {token_sha256(old.token)} if old else set())
            earlier.discard(token_sha256(token))
            self._expected[node.name] = _Attempt(node, token, f"{node.name}-{uuidlib.uuid4().hex[:12]}",
                                                 earlier, armed=armed, bound_address=bound)
            self._homes.pop(node.name, None)
        log.info("expecting a network boot of %s (mac %s, uuid %s)", node.name, node.mac or "-", node.uuid or "-")

    def arm(self, name: str) -> None:
        """From now on a network boot of ``name`` is this attempt's."""
        with self._lock:
            entry = self._expected.get(name)
            if entry is not None:
                entry.armed = True

    def unregister(self, name: str) -> None:
        with self._lock:
            self._expected.pop(name, None)
            self._deploys.pop(name, None)
            self._installed.pop(name, None)

    def publish(self, name: str, path: Path) -> str:
        """Serve ``path`` as ``name``'s deploy ISO under a fresh secret URL; returns the URL."""
        key = secrets.token_urlsafe(18)
        with self._lock:
            self._files[name] = (key, Path(path))
        return f"{self.url}/vmedia/{name}/{key}.iso"

    def unpublish(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)

    def serve_image(self, path: Path) -> str:
        """Serve the OS image at ``/images/<file name>``; returns its URL."""
        path = Path(path)
        with self._lock:
            self._images[path.name] = path
        return f"{self.url}/images/{path.name}"

    def set_deploy(self, name: str, deploy: DeployBoot, seed: Path) -> None:
        """The node's next network boot starts the deploy ramdisk as ``deploy`` says, fetching ``seed``."""
        with self._lock:
            self._deploys[name] = (deploy, Path(seed))
            self._reports[name] = []

    def reports(self, name: str) -> list[DeployReport]:
        with self._lock:
            return list(self._reports.get(name, []))

    def wait_report(self, name: str, seen: int, timeout_s: float) -> list[DeployReport]:
        """Every report of the current deploy once there are more than ``seen``;
        :class:`ProvisioningTimeout` after ``timeout_s``."""
        deadline = self._clock() + timeout_s
        with self._lock:
            while len(self._reports.get(name, [])) <= seen:
                left = deadline - self._clock()
                if left <= 0:
                    raise ProvisioningTimeout(f"no deploy report within {timeout_s:g} s", node=name, step="deploy")
                self._lock.wait(min(left, self._poll_s))
            return list(self._reports[name])

    def expect_installed(self, node: Node, token_sha256: str, address: str | None) -> None:
        """From now on (right before the power-on from disk) the installed OS of ``node`` may phone
        home with the token whose hash is ``token_sha256``, from ``address``; once."""
        with self._lock:
            self._installed[node.name] = _Installed(node, token_sha256, _ip(address) if address else None)
            self._homes.pop(node.name, None)

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

    def _match(self, mac: str | None, uuid: str | None) -> _Attempt | None:
        m, forms = normalize_mac(mac), uuid_forms(uuid)
        entries = list(self._expected.values())
        if m:
            for e in entries:
                if e.node.mac and normalize_mac(e.node.mac) == m:
                    return e
        if forms:
            for e in entries:
                if uuid_forms(e.node.uuid) & forms:
                    return e
        return None

    def match(self, mac: str | None, uuid: str | None) -> Node | None:
        """The registered node with this MAC, else with this SMBIOS UUID (either byte order)."""
        with self._lock:
            entry = self._match(mac, uuid)
            return entry.node if entry else None

    def _allowed(self, entry: _Attempt, mac: str | None) -> set[str] | None:
        if self._addresses is None:
            return None
        got = self._addresses(entry.node, mac)
        return None if got is None else {_ip(a) for a in got}

    def _source_refusal(self, entry: _Attempt, src: str) -> str | None:
        """Why ``src`` may not fetch the seed or phone home for this attempt; None when it may."""
        if not entry.armed or entry.bound_address is None:
            return f"from {src} before this boot attempt's iPXE script was served (an earlier boot?)"
        if src != entry.bound_address:
            allowed = self._allowed(entry, entry.booted_mac)
            if allowed is None or src not in allowed:
                return f"from {src}; this boot attempt's machine is {entry.bound_address}"
        return None

    # -- reporting -----------------------------------------------------------

    def _emit(self, name: str, kind: str, detail: str = "") -> None:
        detail = printable(detail, 300)
        log.info("%s: %s%s", printable(name or "-", 80), kind, f" ({detail})" if detail else "")
        if self.on_event is None:
            return
        try:
            self.on_event(name, kind, detail)
        except Exception:  # a faulty callback must not kill the boot of a node; report it loudly
            log.exception("on_event callback failed for %s %s", printable(name or "-", 80), kind)

    def _refuse(self, name: str, kind: str, why: str) -> None:
        """A refusal, reported at most once per node and kind per interval; the rest are counted."""
        now, held = self._throttle.check((name, kind))
        if now:
            self._emit(name, kind, why + (f" ({held} more refused since the last report)" if held else ""))

    def _report_held_refusals(self) -> None:
        for (name, kind), n in self._throttle.pending().items():
            self._emit(name, kind, f"{n} more refused (not reported one by one)")

    def _connection_refused(self, host: str) -> None:
        now, held = self._throttle.check(("", "connection-refused"))
        if now:
            log.warning("boot server: too many open connections (last from %s); refusing new ones%s",
                        printable(host, 60), f" ({held} refused since the last report)" if held else "")

    # -- HTTP handlers (called from server threads) --------------------------

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
        elif len(segs) == 2 and segs[0] == "images":
            with self._lock:
                image = self._images.get(segs[1])
            self._send_file(req, "", image, "image-served") if image else req.reply(404, "not found\n")
        elif len(segs) == 2 and segs[0] == "seed" and segs[1].endswith(".img"):
            self._serve_deploy_seed(req, segs[1][:-4])
        elif segs == ["healthz"]:
            req.reply(200, "ok\n")
        else:
            req.reply(404, "not found\n")

    def _bind_ipxe(self, mac: str | None, uuid: str | None, src: str) -> tuple[_Attempt | None, str | None]:
        """The attempt this iPXE request belongs to, bound to ``src``; or why it is refused."""
        with self._lock:
            entry = self._match(mac, uuid)
            if entry is None:
                return None, None
            if not entry.armed:
                return entry, f"network boot from {src} before this boot attempt's power command (an earlier boot?)"
            booted = normalize_mac(mac) or entry.booted_mac
            allowed = self._allowed(entry, booted)
            if allowed is not None and src not in allowed:
                shown = ", ".join(sorted(allowed)) or "none leased"
                return entry, f"iPXE request from {src}; the machine's address is {shown}"
            if allowed is None and entry.bound_address not in (None, src):
                return entry, f"iPXE request from {src}; this boot attempt is bound to {entry.bound_address}"
            entry.bound_address, entry.booted_mac = src, booted
            return entry, None

    def _serve_node_script(self, req: _Handler, mac: str | None, uuid: str | None) -> None:
        src = _ip(req.client_address[0])
        entry, why = self._bind_ipxe(mac, uuid, src)
        if entry is None or why is not None:
            if why is not None:
                self._refuse(entry.node.name, "ipxe-refused", why)
            else:
                self._refuse("", "unknown-node", f"mac {normalize_mac(mac) or '-'}, uuid {uuid or '-'}, from {src}")
            req.reply(200, cloudinit.render_unknown_script(mac, uuid, "no node expected"))
            return
        node = entry.node
        with self._lock:
            deploy = self._deploys.get(node.name)
        if deploy is not None:
            script = cloudinit.render_deploy_script(node, deploy[0].kernel, deploy[0].initrd, deploy[0].cmdline,
                                                    deploy_seed_url(self.url, node.name))
            self._emit(node.name, "ipxe-served", f"deploy ramdisk, to {src}")
            req.reply(200, script)
            return
        if self.boot is None:
            self._emit(node.name, "boot-not-configured", "provisioning.boot is not set")
            req.reply(200, cloudinit.render_unknown_script(mac, uuid, "no installer configured"))
            return
        script = cloudinit.render_node_script(node, self.boot, self.url)
        # Events go out before the reply, so whoever sees the response also sees the event.
        self._emit(node.name, "ipxe-served", f"to {src}")
        req.reply(200, script)

    def _serve_seed(self, req: _Handler, name: str, what: str) -> None:
        src = _ip(req.client_address[0])
        with self._lock:
            entry = self._expected.get(name)
            why = self._source_refusal(entry, src) if entry is not None else "not expected"
        if why is not None or what not in ("user-data", "meta-data", "vendor-data"):
            if entry is not None and why is not None:
                self._refuse(name, "seed-refused", f"{what} {why}")
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
        self._send_file(req, name, entry[1], "vmedia-served")

    def _serve_deploy_seed(self, req: _Handler, name: str) -> None:
        """The node's seed image, to the machine of its current boot attempt only (it holds the token)."""
        src = _ip(req.client_address[0])
        with self._lock:
            entry = self._expected.get(name)
            deploy = self._deploys.get(name)
            why = self._source_refusal(entry, src) if entry is not None and deploy is not None else "not expected"
        if why != "not expected" and why is not None:
            self._refuse(name, "seed-refused", f"seed image {why}")
        if why is not None:
            req.reply(404, "not found\n")
            return
        self._send_file(req, name, deploy[1], "seed-served")

    def _send_file(self, req: _Handler, name: str, path: Path, kind: str) -> None:
        """``path``, whole or one byte range (BMCs fetch virtual media in ranges)."""
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
                self._emit(name, kind, f"{path.name}, {size} bytes")
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = fh.read(min(FILE_CHUNK_BYTES, left))
                if not chunk:
                    break
                req.wfile.write(chunk)
                left -= len(chunk)

    def _phone_home_refusal(self, entry: _Attempt | None, token: str, src: str) -> str | None:
        # Compare even for an unknown name, so timing does not tell which names are registered.
        expected = entry.token if entry else "\0" * len(token)
        good = hmac.compare_digest(expected.encode(), token.encode())
        if entry is None:
            return "node not expected"
        if not good:
            return "token of an earlier boot attempt" if token_sha256(token) in entry.retired else "bad token"
        if entry.consumed:
            return "token already used"
        return self._source_refusal(entry, src)

    def _handle_post(self, req: _Handler) -> None:
        segs = [unquote(s) for s in urlsplit(req.path).path.split("/") if s]
        if len(segs) == 2 and segs[0] == "deploy":
            self._take_report(req, segs[1])
            return
        if len(segs) != 3 or segs[0] != "phone-home":
            req.reply(404, "not found\n")
            return
        name, token, src = segs[1], segs[2], _ip(req.client_address[0])
        with self._lock:
            installed = self._installed.get(name)
            deploying = name in self._deploys
        if installed is not None:
            self._installed_phone_home(req, installed, token, src)
            return
        if deploying:  # an image deploy's token reaches the installed OS only: nothing may use it before
            self._refuse(name, "phone-home-rejected", "installed OS's phone-home before its power-on from disk")
            req.reply(403, "forbidden\n")
            return
        with self._lock:  # refuse the unauthenticated before reading a byte of their body
            entry = self._expected.get(name)
            why = self._phone_home_refusal(entry, token, src)
        if why is not None:
            self._refuse_phone_home(entry, name, why, req)
            return
        # The body is read outside the lock: a client holding its body back holds nothing.
        try:
            fields = _read_fields(req)
        except ValueError as err:
            self._refuse(name, "phone-home-rejected", str(err))
            req.reply(400, f"{err}\n")
            return
        keys = {f: _clean_key(fields.get(f)) for f in HOST_KEY_FIELDS}
        keys = {f: k for f, k in keys.items() if k}
        if not keys:
            self._refuse(name, "phone-home-rejected", "no SSH host key in the report")
            req.reply(400, "no SSH host key (pub_key_ed25519, pub_key_ecdsa or pub_key_rsa)\n")
            return
        with self._lock:  # check and consume in one step: a token is used once, whatever the timing
            entry = self._expected.get(name)
            why = self._phone_home_refusal(entry, token, src)
            if why is None:
                entry.consumed = True
                home = PhoneHome(name=name, host_key=next(iter(keys.values())), address=src,
                                 mac=entry.booted_mac or entry.node.mac, uuid=entry.node.uuid, at=time.time(),
                                 host_keys=keys, hostname=fields.get("hostname") or None,
                                 instance_id=fields.get("instance_id") or None)
                self._homes[name] = home
                self._lock.notify_all()
        if why is not None:
            self._refuse_phone_home(entry, name, why, req)
            return
        self._emit(name, "phone-home", f"{home.host_key.split()[0]} from {home.address}")
        req.reply(200, "ok\n")

    def _take_report(self, req: _Handler, name: str) -> None:
        """One report of the deploy ramdisk: from the attempt's machine, with its token, until done or failed."""
        src = _ip(req.client_address[0])
        with self._lock:
            entry = self._expected.get(name)
            why = None if entry is not None and name in self._deploys else "node not expected"
            if why is None:
                why = "reports closed (done or failed already)" if entry.reports_closed else \
                    self._source_refusal(entry, src)
        if why is not None:
            self._refuse(name if entry is not None else "", "report-rejected", why)
            req.reply(403, "forbidden\n")
            return
        try:
            report = parse_report(_read_body(req))
        except (ValueError, CloudplanError) as err:
            self._refuse(name, "report-rejected", str(err))
            req.reply(400, "bad report\n")
            return
        with self._lock:
            entry = self._expected.get(name)
            good = entry is not None and not entry.reports_closed and \
                hmac.compare_digest(entry.token.encode(), report.token.encode())
            if good:
                entry.reports_closed = report.done or report.failed
                self._reports.setdefault(name, []).append(report)
                self._lock.notify_all()
        if not good:
            self._refuse(name, "report-rejected", "bad token")
            req.reply(403, "forbidden\n")
            return
        detail = report.step + (f": {report.error}" if report.error else "") + \
            (f" ({report.root_disk})" if report.step == "root-disk" and report.root_disk else "")
        self._emit(name, "deploy-report", detail)
        req.reply(200, "ok\n")

    def _installed_phone_home(self, req: _Handler, inst: _Installed, token: str, src: str) -> None:
        """The installed OS's report: its token's hash, its static address, once."""
        def refusal() -> str | None:
            if not hmac.compare_digest(token_sha256(token), inst.token_sha256):
                return "bad token"
            if inst.consumed:
                return "token already used"
            if inst.address is not None and src != inst.address:
                return f"from {src}; the installed OS's address is {inst.address}"
            return None

        with self._lock:
            why = refusal()
        if why is None:
            try:
                fields = _read_fields(req)
            except ValueError as err:
                why = str(err)
        if why is None:
            keys = {f: k for f, k in ((f, _clean_key(fields.get(f))) for f in HOST_KEY_FIELDS) if k}
            why = None if keys else "no SSH host key in the report"
        if why is None:
            with self._lock:
                why = refusal()
                if why is None:
                    inst.consumed = True
                    home = PhoneHome(name=inst.node.name, host_key=next(iter(keys.values())), address=src,
                                     mac=inst.node.mac, uuid=inst.node.uuid, at=time.time(), host_keys=keys,
                                     hostname=fields.get("hostname") or None,
                                     instance_id=fields.get("instance_id") or None)
                    self._homes[inst.node.name] = home
                    self._lock.notify_all()
        if why is not None:
            self._refuse(inst.node.name, "phone-home-rejected", f"installed OS: {why}")
            req.reply(403, "forbidden\n")
            return
        self._emit(inst.node.name, "phone-home", f"installed OS, {home.host_key.split()[0]} from {src}")
        req.reply(200, "ok\n")

    def _refuse_phone_home(self, entry: _Attempt | None, name: str, why: str, req: _Handler) -> None:
        if entry is None:  # reported under no node (log only), whatever name the client made up
            self._refuse("", "phone-home-rejected", f"{why}: {printable(name, 64)}")
        else:
            self._refuse(name, "phone-home-rejected", why)
        req.reply(403, "forbidden\n")


def _read_body(req: _Handler) -> bytes:
    try:
        length = int(req.headers.get("Content-Length", "0"))
    except ValueError:
        raise ValueError("bad Content-Length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise ValueError(f"body must be at most {MAX_BODY_BYTES} bytes")
    try:
        data = req.rfile.read(length)
    except TimeoutError:
        raise ValueError("body not received in time") from None
    if len(data) < length:
        raise ValueError("body shorter than its Content-Length")
    return data


def _read_fields(req: _Handler) -> dict[str, str]:
    """Body fields of a phone-home POST, form-encoded (cloud-init) or JSON."""
    data = _read_body(req)
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ValueError("JSON body must be an object")
        return {str(k): str(v) for k, v in obj.items() if isinstance(v, str)}
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _clean_key(value: str | None) -> str | None:
    """``TYPE BASE64`` of an SSH public key that parses as one; None for cloud-init's ``N/A`` or junk."""
    if not value:
        return None
    parts = value.strip().split()
    if len(parts) < 2:
        return None
    key = f"{parts[0]} {parts[1]}"
    if not _HOST_KEY_RE.match(key):
        return None
    try:
        parsed = paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except Exception:  # paramiko raises several types for a malformed blob; each means "not a key"
        return None
    return key if parsed.get_name() == parts[0] else None
