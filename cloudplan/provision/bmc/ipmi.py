"""IPMI BMC driver on pyghmi (one implementation of :class:`~.base.BMC`), with the quirks of pyghmi 1.6.19 handled here.

- pyghmi shares one session per (bmc, user, password, port) in the process and
  allows one command in flight per session: calls on one BMC are serialized by
  a lock keyed on those four (the password only as a hash).
- A session that timed out is broken and must be recreated; pyghmi would hand
  the same object back, so it is marked broken before a new ``Command``.
- pyghmi takes its KEEPALIVE and WAITING locks in opposite orders on two code
  paths and can deadlock when driven from threads; both names are pointed at
  one re-entrant lock before any session exists (``_share_pyghmi_locks``).
- pyghmi marks a failed login's session broken before it stores the reason, so
  a thread waiting for that login can find it broken with no reason yet and
  fail with an AttributeError (a rejected password then looked like a session
  fault and was retried): the reason is stored first (``_reason_before_broken``).
- Every call runs under a watchdog deadline, so a session stuck inside pyghmi
  never stalls a node beyond ``call_timeout_s``.
- pyghmi's errors are translated where they enter: "Incorrect password
  provided" -> :class:`BMCAuthError` (never retried); no answer ->
  :class:`BMCUnreachable`; "Node Busy" and friends -> :class:`BMCBusy`. The
  last two are retried with backoff by :func:`retry_call`.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable

from cloudplan.errors import BMCAuthError, BMCBusy, BMCError, BMCFault, BMCUnreachable, CloudplanError
from cloudplan.provision.bmc.base import REAL_CLOCK, BMCInfo, BootDevice, Capability, Clock

log = logging.getLogger(__name__)

# Defaults, overridable per call site.
CALL_TIMEOUT_S = 10.0        # watchdog per IPMI call; pyghmi itself gives up on a silent BMC after ~5.5 s

_AUTH_MARKERS = ("incorrect password", "unauthorized name", "invalid user", "unauthorized role",
                 "insufficient privilege", "password is too long", "username too long")
_BUSY_MARKERS = ("node busy", "initialization in progress", "timeout while processing",
                 "insufficient resources to create new session", "out of space", "busy")
_UNREACHABLE_MARKERS = ("timeout", "no longer connected", "session failed to initialize")


def _share_pyghmi_locks() -> None:
    """Make pyghmi's two session-table locks one lock (removes its lock-order deadlock).

    Both are module globals looked up at each use, so rebinding is enough; done
    at import, before this process creates any session."""
    from pyghmi.ipmi.private import session as ipmisession

    if ipmisession.KEEPALIVE_SESSIONS is not ipmisession.WAITING_SESSIONS:
        ipmisession.KEEPALIVE_SESSIONS = ipmisession.WAITING_SESSIONS


_share_pyghmi_locks()


def _reason_before_broken() -> None:
    """Store a failed session's reason before pyghmi marks it broken.

    ``Session._mark_broken`` logs out (which sets ``broken``) and only then sets
    ``errormsg``, while the thread waiting in ``Session.__init__`` raises
    ``IpmiException(self.errormsg)`` as soon as it sees ``broken``."""
    from pyghmi.ipmi.private import session as ipmisession

    original = ipmisession.Session._mark_broken
    if getattr(original, "_reason_first", False):
        return

    def mark_broken(self, error=None):
        self.errormsg = error
        return original(self, error)

    mark_broken._reason_first = True
    ipmisession.Session._mark_broken = mark_broken


_reason_before_broken()

KICK_INTERVAL_S = 0.2
_kicker_started = threading.Event()


def start_pyghmi_kicker(interval_s: float = KICK_INTERVAL_S) -> None:
    """Wake pyghmi's IO thread every ``interval_s``.

    pyghmi's IO thread sleeps in select() (up to 300 s) and relies on waiters
    sending it a wake-up datagram; under load (hundreds of sessions and
    threads) a wake-up is occasionally missed and every session of the process
    stalls until the select times out. A periodic wake-up bounds that stall to
    ``interval_s`` for five tiny loopback datagrams a second."""
    if _kicker_started.is_set():
        return
    _kicker_started.set()

    def kick():
        from pyghmi.ipmi.private import session as ipmisession

        while True:
            time.sleep(interval_s)
            try:
                sock = ipmisession.iosockets[0]
                sock.sendto(b"\x01", (ipmisession.myself, sock.getsockname()[1]))
            except (IndexError, OSError, TypeError):
                pass  # no pyghmi socket yet, or it is being torn down: try again next tick

    threading.Thread(target=kick, name="pyghmi-kicker", daemon=True).start()

_locks_guard = threading.Lock()
_session_locks: dict[tuple, threading.Lock] = {}


def _session_lock(key: tuple, *, fresh: bool = False) -> threading.Lock:
    with _locks_guard:
        if fresh or key not in _session_locks:
            _session_locks[key] = threading.Lock()
        return _session_locks[key]


def translate(err: BaseException, *, node: str | None, address: str) -> BMCError:
    """A pyghmi/socket failure as a cloudplan BMC error (message never holds the password)."""
    text = str(err).strip()
    if text == "None":  # pyghmi raises IpmiException(None) when a BMC never answers
        text = ""
    low = text.lower()
    if isinstance(err, socket.gaierror):
        return BMCError(f"cannot resolve the BMC address ({err.strerror})", node=node, address=address)
    if any(m in low for m in _AUTH_MARKERS):
        return BMCAuthError(f"credentials rejected ({text})", node=node, address=address)
    if any(m in low for m in _BUSY_MARKERS) or getattr(err, "ipmicode", 0) in (0xC0, 0xC3, 0xD2):
        return BMCBusy(f"BMC busy ({text})", node=node, address=address)
    if not text or any(m in low for m in _UNREACHABLE_MARKERS):
        return BMCUnreachable("no answer from the BMC" + (f" ({text})" if text else ""),
                              node=node, address=address)
    if getattr(err, "ipmicode", 0):  # the BMC answered with a completion code: asking again changes nothing
        return BMCError(text, node=node, address=address)
    # No word from the BMC, only a failure on our side of the session: worth a fresh session.
    kind = type(err).__name__
    detail = text if kind == "IpmiException" else f"{kind}: {text}" if text else kind
    return BMCFault(f"IPMI session failed ({detail})", node=node, address=address)


def _in_background(fn: Callable[[], object], name: str, *, wait_s: float) -> None:
    """Run pyghmi housekeeping in a daemon thread, waiting at most ``wait_s``;
    its failures are logged, never raised (they must not mask the real error)."""
    def run():
        try:
            fn()
        except Exception as err:
            log.debug("%s: %s", name, err)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    if wait_s > 0:
        t.join(wait_s)


# cloudplan's boot device names -> pyghmi's, and back (the others are the same word).
_TO_IPMI = {BootDevice.cd.value: "optical"}
_FROM_IPMI = {"optical": BootDevice.cd.value}


class IPMIClient:
    """One node's BMC over IPMI 2.0 (RMCP+). Thread-safe; one call at a time per session."""

    def __init__(self, *, address: str, port: int = 623, username: str, password: str,
                 node: str | None = None, call_timeout_s: float = CALL_TIMEOUT_S, clock: Clock = REAL_CLOCK):
        self.address, self.port, self.username, self.node = address, port, username, node
        self.__password = password
        self.call_timeout_s = call_timeout_s
        self.clock = clock
        self._key = (address, port, username, hashlib.sha256(password.encode()).hexdigest())
        self._cmd = None
        start_pyghmi_kicker()
        self.where = f"{address}:{port}" if port != 623 else address

    def __repr__(self) -> str:  # never the password
        return f"IPMIClient({self.node or ''}@{self.where}, user={self.username})"

    # -- the session and the watchdog ------------------------------------------------

    def _command(self):
        from pyghmi.ipmi import command

        if self._cmd is None or getattr(self._cmd.ipmi_session, "broken", False):
            # pyghmi shares sessions by (address, port, user, password): a session left
            # by an earlier client of the same address and port (a BMC that was
            # restarted, or a port reused) looks valid to it and never answers.
            self._forget_pyghmi_sessions()
            self._cmd = command.Command(bmc=self.address, userid=self.username,
                                        password=self.__password, port=self.port)
        return self._cmd

    def _drop_session(self) -> None:
        """Forget a session that timed out; pyghmi would otherwise hand it back."""
        cmd, self._cmd = self._cmd, None
        self._forget_pyghmi_sessions()
        if cmd is not None:
            # pyghmi's teardown tries to log out, which waits behind the stuck
            # command: never let it block the node (or its concurrency slot).
            _in_background(cmd.ipmi_session._mark_broken, f"drop-{self.node or self.address}", wait_s=0)
        _session_lock(self._key, fresh=True)  # a stuck call may still hold the old lock

    def _forget_pyghmi_sessions(self) -> None:
        """Remove this BMC's client sessions from pyghmi's tables.

        A call stuck inside pyghmi keeps re-logging its session in the
        background and puts it back where ``Command()`` looks for a session to
        share; the next ``Command`` must start a fresh one instead."""
        from pyghmi.ipmi.private import session as ipmisession

        user = self.username.encode()
        # pyghmi may hold its table lock while it waits on the network; do not
        # wait for it long (the edits below are single dict operations).
        locked = ipmisession.WAITING_SESSIONS.acquire(timeout=1.0)
        try:
            for ports in list(ipmisession.Session.bmc_handlers.values()):
                if not isinstance(ports, dict):
                    continue
                for p, sess in list(ports.items()):
                    if (not getattr(sess, "servermode", True) and getattr(sess, "bmc", None) == self.address
                            and getattr(sess, "port", None) == self.port and getattr(sess, "userid", None) == user):
                        ports.pop(p, None)
            for key in list(ipmisession.Session.initting_sessions):
                if key[0] == self.address and key[1] in (user, self.username) and key[3] == self.port:
                    ipmisession.Session.initting_sessions.pop(key, None)
        finally:
            if locked:
                ipmisession.WAITING_SESSIONS.release()

    def call(self, what: str, fn: Callable) -> object:
        """Run ``fn(command)`` with the session lock held, under the watchdog deadline.

        A rejected login is confirmed once on a fresh session before it is final: a
        BMC holding a dead client's sessions can fail one RAKP handshake it would pass."""
        try:
            return self._call(what, fn)
        except BMCAuthError:
            self._drop_session()
            return self._call(what, fn)

    def _call(self, what: str, fn: Callable) -> object:
        box: dict = {}
        lock = _session_lock(self._key)

        def work():
            try:
                with lock:
                    box["value"] = fn(self._command())
            except BaseException as err:  # handed to the caller's thread
                box["error"] = err

        worker = threading.Thread(target=work, name=f"ipmi-{self.node or self.address}-{what}", daemon=True)
        worker.start()
        worker.join(self.call_timeout_s)
        if worker.is_alive():
            self._drop_session()
            raise BMCUnreachable(f"{what}: no answer within {self.call_timeout_s:g} s",
                                 node=self.node, address=self.where)
        if "error" in box:
            err = box["error"]
            if isinstance(err, CloudplanError):
                raise err
            translated = translate(err, node=self.node, address=self.where)
            if isinstance(translated, (BMCUnreachable, BMCFault)):
                self._drop_session()
            raise translated from None
        return box.get("value")

    def close(self, wait_s: float = 2.0) -> None:
        """Log out, so hundreds of idle sessions do not linger on the BMCs; a BMC
        that does not answer the logout is not waited for beyond ``wait_s``."""
        cmd, self._cmd = self._cmd, None
        if cmd is None:
            return
        lock = _session_lock(self._key)

        def logout():
            with lock:
                cmd.ipmi_session.logout()

        _in_background(logout, f"logout-{self.node or self.address}", wait_s=wait_s)

    # -- operations -----------------------------------------------------------------

    def get_power(self) -> str:
        return self.call("get-power", lambda c: c.get_power()["powerstate"])

    def set_power(self, state: str) -> None:
        """``on``, ``off`` or ``reset``; returns once the BMC accepted it (no wait)."""
        self.call(f"power-{state}", lambda c: c.set_power(state, wait=False))

    def get_system_guid(self) -> str:
        def get(c):
            rsp = c.raw_command(netfn=6, command=0x37)
            if rsp.get("code"):
                raise BMCError(f"Get System GUID failed (completion code 0x{rsp['code']:02x})",
                               node=self.node, address=self.where)
            return str(uuid.UUID(bytes_le=bytes(rsp["data"][:16])))
        return self.call("get-system-guid", get)

    def set_bootdev(self, device: str, *, persist: bool, uefi: bool, url: str | None = None) -> None:
        if device == BootDevice.http.value or url is not None:
            raise BMCError("UEFI HTTP boot from a URL is not available over IPMI (use PXE or Redfish)",
                           node=self.node, address=self.where)
        ipmi_dev = _TO_IPMI.get(device, device)
        self.call(f"set-bootdev-{device}", lambda c: c.set_bootdev(ipmi_dev, persist=persist, uefiboot=uefi))

    def get_bootdev(self) -> dict:
        got = self.call("get-bootdev", lambda c: c.get_bootdev())
        if isinstance(got, dict) and got.get("bootdev") in _FROM_IPMI:
            got = {**got, "bootdev": _FROM_IPMI[got["bootdev"]]}
        return got

    # IPMI has no virtual media of its own (vendors add it through OEM web
    # services, which is what Redfish standardised).
    def capabilities(self) -> set[Capability]:
        return set()

    def insert_media(self, url: str) -> None:
        raise BMCError("virtual media is not available over IPMI (use Redfish: bmc.driver redfish)",
                       node=self.node, address=self.where)

    def eject_media(self) -> None:
        raise BMCError("virtual media is not available over IPMI", node=self.node, address=self.where)

    def info(self) -> BMCInfo:
        return BMCInfo(power=self.get_power(), system_guid=self.get_system_guid())
