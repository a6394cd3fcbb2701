"""Redfish BMC driver on OpenStack's sushy (one implementation of :class:`~.base.BMC`).

sushy is what Ironic drives Redfish BMCs with, so the vendor differences its
users hit are handled there first (virtual media by PATCH or by action,
settings resources for boot options, sessions with a fall-back to basic
auth). What this module adds, for cloudplan's rules:

- **Trust**: a CA bundle, a pinned certificate (:mod:`.tls`), or nothing only
  with ``insecure``; a certificate that does not match is
  :class:`BMCTLSError`, final (retrying would hand the password to it).
- **Sessions**: sushy opens a Redfish session when the BMC has a
  SessionService (basic auth otherwise); :meth:`RedfishClient.close` deletes it.
- **Watchdog**: every call runs under ``call_timeout_s``; a stuck connection
  is dropped and the next call starts a new one.
- **Retries**: sushy's own are cut to one quick GET retry; 5xx, 409 and
  "busy" answers become :class:`BMCBusy` and no answer :class:`BMCUnreachable`,
  both retried with backoff by the orchestrator's ``retry_call``. 401/403 is
  :class:`BMCAuthError` (never retried).
- **Task monitors**: an action answered ``202 Accepted`` with a ``Location``
  is polled until the task ends (each poll watched), up to ``task_timeout_s``.
- **Boot override**: ``Once`` for a one-time boot, ``Continuous`` for the disk;
  the mode (UEFI/Legacy) is sent only when it differs, since some BMCs refuse
  a mode PATCH they see as no change, and a BMC that rejects ``Continuous`` gets
  ``Once`` (the disk is the firmware's own order after that boot anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cloudplan.errors import BMCAuthError, BMCBusy, BMCError, BMCTLSError, BMCUnreachable, BMCUnsupported
from cloudplan.provision.bmc.base import (REAL_CLOCK, BMCInfo, BootDevice, Capability, Clock, backoff_delays,
                                         watchdog)
from cloudplan.provision.bmc.tls import PinnedCertAdapter, TrustPolicy

log = logging.getLogger(__name__)


class _QuietSushy(logging.Filter):
    """sushy logs an ERROR and a WARNING for every connection to a BMC without a
    SessionService (it falls back to basic auth, as it should), and a WARNING per
    GET it retries itself: expected here, so shown at DEBUG only. Its other
    messages pass."""

    _EXPECTED = ("Authentication to the session service failed", 'Falling back to "Basic" authentication',
                 "Could not discover the Session service path", "Got server side error")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if record.levelno > logging.DEBUG and any(msg.startswith(m) for m in self._EXPECTED):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


for _name in ("sushy.connector", "sushy.auth", "sushy.main"):
    logging.getLogger(_name).addFilter(_QuietSushy())

CALL_TIMEOUT_S = 20.0        # watchdog per Redfish call (BMC web servers are slow; TLS handshakes too)
CONNECT_TIMEOUT_S = 5.0      # TCP connect, so a dead BMC is noticed well before the watchdog
TASK_TIMEOUT_S = 300.0       # an accepted long action (virtual media insert, reset) must end by then
LOGOUT_RETRY_DELAYS_S = (0.0, 2.0, 5.0)   # a session DELETE that fails is tried again after these

_TO_REDFISH = {BootDevice.network.value: "Pxe", BootDevice.hd.value: "Hdd", BootDevice.cd.value: "Cd",
               BootDevice.http.value: "UefiHttp"}
_FROM_REDFISH = {v: k for k, v in _TO_REDFISH.items()}
_RESET = {"on": "On", "off": "ForceOff", "reset": "ForceRestart"}
_BUSY_MARKERS = ("busy", "try again", "temporarily unavailable", "in progress", "not ready")
_FAILED_TASK_STATES = ("Exception", "Killed", "Cancelled", "Interrupted")


def translate(err: BaseException, *, node: str | None, address: str, secret: str = "") -> BMCError:
    """A sushy/requests failure as a cloudplan BMC error (the password never shown)."""
    import requests
    import sushy.exceptions as sx

    text = str(err).strip()
    if secret:
        text = text.replace(secret, "***")
    low = text.lower()
    if isinstance(err, sx.AccessError):
        return BMCAuthError(f"credentials rejected (HTTP {err.status_code})", node=node, address=address)
    if isinstance(err, sx.HTTPError):
        status = getattr(err, "status_code", None) or 0
        detail = _short(getattr(err, "detail", None) or text)
        if status >= 500 or status in (409, 429) or any(m in low for m in _BUSY_MARKERS):
            return BMCBusy(f"BMC busy (HTTP {status}: {detail})", node=node, address=address)
        return BMCError(f"HTTP {status}: {detail}", node=node, address=address)
    cause = (getattr(err, "kwargs", {}).get("error") if isinstance(err, sx.ConnectionError) else None) or err
    if _is_tls(cause) or _is_tls(err):
        return BMCTLSError(f"TLS certificate not trusted ({_short(str(cause), 160)})", node=node, address=address)
    if isinstance(err, (sx.ConnectionError, requests.RequestException, OSError)):
        return BMCUnreachable(f"no answer from the BMC ({_short(str(cause) or text)})", node=node, address=address)
    if isinstance(err, sx.InvalidParameterValueError):
        return BMCUnsupported(_short(text), node=node, address=address)
    return BMCError(f"Redfish: {type(err).__name__}: {_short(text)}", node=node, address=address)


def _is_tls(err: object) -> bool:
    import ssl

    import requests

    if isinstance(err, (requests.exceptions.SSLError, ssl.SSLError)):
        return True
    text = str(err)
    return "Fingerprints did not match" in text or "CERTIFICATE_VERIFY_FAILED" in text


def _uri(value: object) -> str | None:
    # Some BMCs (and the emulator) render an unset HttpBootUri as "None" or "".
    return None if value in (None, "", "None") else str(value)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class RedfishClient:
    """One node's BMC over Redfish. Thread-safe: one call at a time per client."""

    def __init__(self, *, url: str, username: str, password: str, system: str | None = None,
                 trust: TrustPolicy = TrustPolicy(), node: str | None = None,
                 call_timeout_s: float = CALL_TIMEOUT_S, task_timeout_s: float = TASK_TIMEOUT_S,
                 clock: Clock = REAL_CLOCK):
        self.url, self.username, self.node, self.system_path = url.rstrip("/"), username, node, system
        self.__password = password
        self.trust = trust
        self.call_timeout_s, self.task_timeout_s, self.clock = call_timeout_s, task_timeout_s, clock
        self.where = self.url.split("://", 1)[-1]
        self._lock = threading.Lock()
        self._root = None
        self._system = None
        self._fresh = False                   # the system was fetched by this very call
        self._accepted = threading.local()    # the last 202 answer seen by this thread's call

    def __repr__(self) -> str:  # never the password
        return f"RedfishClient({self.node or ''}@{self.where}, user={self.username})"

    # -- connection, watchdog, tasks ------------------------------------------------

    def _connect(self):
        import sushy
        from sushy.connector import Connector

        self.trust.check()
        conn = Connector(self.url, verify=self.trust.requests_verify(), response_callback=self._on_response,
                         # sushy's own loop sleeps between retries outside our deadlines: one quick
                         # retry for GETs at most, the rest is retry_call's backoff.
                         server_side_retries=1, server_side_retries_delay=0.2,
                         default_request_timeout=self.call_timeout_s, connect_timeout=CONNECT_TIMEOUT_S)
        if self.trust.cert_sha256:
            conn._session.mount("https://", PinnedCertAdapter(self.trust.cert_sha256))
        return sushy.Sushy(self.url, username=self.username, password=self.__password, connector=conn)

    def _on_response(self, response) -> None:
        if response.status_code == 202 and response.headers.get("Location"):
            self._accepted.response = response

    def _get_system(self):
        if self._root is None:
            self._root, self._system = self._connect(), None
        if self._system is None:
            path = self.system_path or self._only_system()
            self._system = self._root.get_system(path)
            self.system_path = path
            self._fresh = True
        return self._system

    def _only_system(self) -> str:
        members = list(self._root.get_system_collection().members_identities)
        if len(members) != 1:
            raise BMCError(f"the BMC manages {len(members)} systems: give bmc.system (one of "
                           f"{', '.join(sorted(members)[:4])}{'...' if len(members) > 4 else ''})",
                           node=self.node, address=self.where)
        return members[0]

    def _refresh(self, system) -> None:
        """Read the system again, unless this call has just fetched it (one GET saved per node)."""
        if self._fresh:
            self._fresh = False
            return
        system.refresh(force=True)

    def _drop(self) -> None:
        """Forget the connection (a stuck or broken one is never reused); its session is
        deleted in the background, so the BMC's session slots are not used up, and so
        sushy's own clean-up at garbage collection never blocks a node's thread."""
        root, self._root, self._system = self._root, None, None
        if root is not None:
            self._logout(root, wait_s=0)

    def call(self, what: str, fn: Callable) -> object:
        """``fn(system)`` under the lock and the watchdog, then any task it started, to its end."""
        lock = self._lock

        def work():
            with lock:
                self._accepted.response = None
                self._fresh = False
                value = fn(self._get_system())
                return value, self._accepted.response

        def on_timeout():
            # The stuck call still holds its lock and connection: the next call gets new ones.
            self._lock = threading.Lock()
            self._drop()

        value, accepted = watchdog(
            work, timeout_s=self.call_timeout_s, name=f"redfish-{self.node or self.where}-{what}",
            node=self.node, address=self.where, what=what, on_timeout=on_timeout,
            translate=self._translate)
        if accepted is not None:
            self._wait_task(what, accepted.headers["Location"])
        return value

    def _translate(self, err: BaseException) -> BMCError:
        out = translate(err, node=self.node, address=self.where, secret=self.__password)
        if isinstance(out, BMCUnreachable):
            self._drop()
        return out

    def _wait_task(self, what: str, location: str) -> None:
        """Poll a task monitor until the task is done, failed, or ``task_timeout_s`` passes."""
        deadline = self.clock.now() + self.task_timeout_s
        delays = backoff_delays(0.5, 5.0)
        while True:
            status, body = self._poll(location)
            state = body.get("TaskState") if isinstance(body, dict) else None
            if state == "Completed" and body.get("TaskStatus") == "Critical":
                state = "Exception"      # finished, and the BMC says it failed
            if state in _FAILED_TASK_STATES:
                msgs = "; ".join(m.get("Message", "") for m in body.get("Messages", []) if isinstance(m, dict))
                raise BMCError(f"{what}: task {state}{f' ({_short(msgs)})' if msgs else ''}",
                               node=self.node, address=self.where)
            if status != 202 and state in (None, "Completed"):
                return
            if self.clock.now() >= deadline:
                raise BMCUnreachable(f"{what}: task not finished within {self.task_timeout_s:g} s",
                                     node=self.node, address=self.where)
            self.clock.sleep(next(delays))

    def _poll(self, location: str) -> tuple[int, dict]:
        lock = self._lock

        def work():
            with lock:
                self._get_system()
                # sushy's connector: same session, trust and error mapping (a 4xx/5xx raises)
                rsp = self._root._conn.get(location)
            body = rsp.json() if rsp.content and "json" in rsp.headers.get("Content-Type", "") else {}
            return rsp.status_code, body

        return watchdog(work, timeout_s=self.call_timeout_s, name=f"redfish-task-{self.node or self.where}",
                        node=self.node, address=self.where, what="task monitor", translate=self._translate)

    def close(self, wait_s: float = 2.0) -> None:
        """Delete the Redfish session, if one was opened; not waited for beyond ``wait_s``."""
        root, self._root, self._system = self._root, None, None
        if root is not None:
            self._logout(root, wait_s=wait_s)

    def _logout(self, root, *, wait_s: float) -> None:
        def logout():
            # BMCs hold few sessions: one that comes back soon still gets its session deleted.
            for delay in LOGOUT_RETRY_DELAYS_S:
                time.sleep(delay)
                try:
                    root._auth.close()
                    root._conn.close()
                    return
                except Exception as err:  # a failed logout must not mask the run's own outcome
                    log.debug("%r: logout: %s", self, err)

        t = threading.Thread(target=logout, name=f"redfish-logout-{self.node or self.where}", daemon=True)
        t.start()
        if wait_s > 0:
            t.join(wait_s)

    # -- operations -----------------------------------------------------------------

    def get_power(self) -> str:
        def get(system):
            self._refresh(system)
            return "on" if str(system.power_state.value).lower() in ("on", "poweringon") else "off"
        return self.call("get-power", get)

    def set_power(self, state: str) -> None:
        if state not in _RESET:
            raise BMCUnsupported(f"power action {state!r} (expected on, off or reset)", node=self.node,
                                 address=self.where)
        import sushy

        self.call(f"power-{state}", lambda system: system.reset_system(sushy.ResetType(_RESET[state])))

    def get_system_guid(self) -> str:
        return self.call("get-system-guid", lambda system: system.uuid)

    def info(self) -> BMCInfo:
        return BMCInfo(power=self.get_power(), system_guid=self.get_system_guid())

    def get_bootdev(self) -> dict:
        def get(system):
            self._refresh(system)
            boot = system.boot
            enabled = getattr(boot.enabled, "value", boot.enabled)
            target = getattr(boot.target, "value", boot.target)
            mode = getattr(boot.mode, "value", boot.mode)
            return {"bootdev": "default" if enabled == "Disabled" else _FROM_REDFISH.get(target, target),
                    "persistent": None if enabled is None else enabled == "Continuous",
                    "uefimode": None if mode is None else mode == "UEFI",
                    "url": _uri(getattr(boot, "http_boot_uri", None))}
        return self.call("get-bootdev", get)

    def set_bootdev(self, device: str, *, persist: bool, uefi: bool, url: str | None = None) -> None:
        if device not in _TO_REDFISH:
            raise BMCUnsupported(f"boot device {device!r}", node=self.node, address=self.where)
        if (device == BootDevice.http.value) != (url is not None):
            raise BMCUnsupported("a URL goes with the http boot device only, and it needs one",
                                 node=self.node, address=self.where)
        self.call(f"set-bootdev-{device}", lambda system: self._set_boot(system, device, persist, uefi, url))

    def _set_boot(self, system, device: str, persist: bool, uefi: bool, url: str | None) -> None:
        import sushy
        import sushy.exceptions as sx

        self._refresh(system)        # the mode decision below needs the current boot section
        target = sushy.BootSource(_TO_REDFISH[device])
        allowed = system.get_allowed_system_boot_source_values()
        if allowed and target not in allowed:
            raise BMCUnsupported(f"boot target {target.value} not offered (offers "
                                 f"{', '.join(sorted(t.value for t in allowed))})",
                                 node=self.node, address=self.where)
        want_mode = sushy.BootSourceOverrideMode.UEFI if uefi else sushy.BootSourceOverrideMode.LEGACY
        mode = None if system.boot.mode == want_mode else want_mode
        enabled = sushy.BootSourceOverrideEnabled.CONTINUOUS if persist else sushy.BootSourceOverrideEnabled.ONCE
        try:
            system.set_system_boot_options(target, enabled=enabled, mode=mode, http_boot_uri=url)
            return
        except sx.BadRequestError as err:
            if mode is None and not persist:
                raise
            refused = err
        if mode is not None:
            # Some BMCs take the mode only through BIOS settings (or not at all) and refuse
            # the whole PATCH: set the target alone; the firmware boots in the mode it is in.
            log.warning("%r: boot override with mode %s refused (%s); setting the target without it",
                        self, mode.value, _short(str(refused)))
            try:
                system.set_system_boot_options(target, enabled=enabled, http_boot_uri=url)
                return
            except sx.BadRequestError as err:
                if not persist:
                    raise
                refused = err
        # Some BMCs take only Once: the override then lasts one boot, after which the
        # firmware's own order (the disk first, on an installed node) applies.
        log.warning("%r: Continuous boot override refused (%s); setting Once", self, _short(str(refused)))
        system.set_system_boot_options(target, enabled=sushy.BootSourceOverrideEnabled.ONCE, http_boot_uri=url,
                                       mode=None)

    # -- virtual media --------------------------------------------------------------

    def capabilities(self) -> set[Capability]:
        def get(system):
            out = set()
            if self._cd_device(system, required=False) is not None:
                out.add(Capability.virtual_media)
            if any(getattr(t, "value", t) == "UefiHttp" for t in system.get_allowed_system_boot_source_values()):
                out.add(Capability.http_boot)
            return out
        return self.call("capabilities", get)

    def _cd_device(self, system, *, required: bool = True):
        """The virtual CD/DVD, under the system (Redfish 1.13+) or its manager (older BMCs)."""
        import sushy

        collections = []
        try:
            collections.append(system.virtual_media)
        except Exception:  # older BMCs: no VirtualMedia under the system
            pass
        for manager in system.managers:
            try:
                collections.append(manager.virtual_media)
            except Exception:
                pass
        for coll in collections:
            for member in coll.get_members():
                types = set(member.media_types or [])
                if types & {sushy.VirtualMediaType.CD, sushy.VirtualMediaType.DVD}:
                    return member
        if required:
            raise BMCUnsupported("no virtual CD/DVD device", node=self.node, address=self.where)
        return None

    def insert_media(self, url: str) -> None:
        def insert(system):
            cd = self._cd_device(system)
            cd.refresh(force=True)
            if cd.inserted and cd.image == url:
                return
            if cd.inserted:      # many BMCs refuse an insert over inserted media
                cd.eject_media()
                cd.refresh(force=True)
            cd.insert_media(url, inserted=True, write_protected=True)
        self.call("insert-media", insert)

    def eject_media(self) -> None:
        def eject(system):
            cd = self._cd_device(system)
            cd.refresh(force=True)
            if cd.inserted or cd.image:
                cd.eject_media()
        self.call("eject-media", eject)

    def media(self) -> dict:
        """What the virtual CD holds: ``{"image": url or None, "inserted": bool}``."""
        def get(system):
            cd = self._cd_device(system)
            cd.refresh(force=True)
            return {"image": cd.image or None, "inserted": bool(cd.inserted)}
        return self.call("get-media", get)

