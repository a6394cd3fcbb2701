"""What the orchestrator needs of a BMC, whatever protocol the BMC speaks.

:class:`BMC` is the protocol; :mod:`.ipmi` (pyghmi) and :mod:`.redfish`
(sushy) implement it. Everything here is protocol-neutral: the injectable
clock, backoff with jitter, the retry loop the orchestrator wraps every BMC
step in, the per-call watchdog, and the "set a one-time boot device, read it
back" dance that BMCs of every protocol need.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar, runtime_checkable

from cloudplan.errors import BMCUnreachable, CloudplanError

log = logging.getLogger(__name__)
T = TypeVar("T")

BOOTDEV_ATTEMPTS = 3         # set + read back before going on with a warning
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0


class BootDevice(str, Enum):
    """Boot targets in cloudplan's words; each driver maps them to its protocol's."""

    network = "network"      # PXE / iPXE over the provisioning NIC
    hd = "hd"                # the installed disk
    cd = "cd"                # virtual media CD/DVD
    http = "http"            # UEFI HTTP boot from a URL (Redfish UefiHttp)


class Capability(str, Enum):
    virtual_media = "virtual-media"
    http_boot = "http-boot"


@dataclass(frozen=True)
class BMCInfo:
    power: str          # "on" | "off"
    system_guid: str    # SMBIOS-style UUID string


@runtime_checkable
class BMC(Protocol):
    """One node's BMC. Implementations are thread-safe, raise only the
    :class:`~cloudplan.errors.BMCError` family, and never show the password."""

    node: str | None
    where: str          # the address as errors and logs show it

    def get_power(self) -> str:
        """``"on"`` or ``"off"``."""

    def set_power(self, state: str) -> None:
        """``on``, ``off`` or ``reset``; returns once the BMC accepted it (no wait)."""

    def get_system_guid(self) -> str:
        """The system's SMBIOS UUID as the BMC reports it."""

    def info(self) -> BMCInfo:
        """Power state and system GUID in one go (the orchestrator's verify step)."""

    def set_bootdev(self, device: str, *, persist: bool, uefi: bool, url: str | None = None) -> None:
        """Boot ``device`` (a :class:`BootDevice` value) next (``persist=False``) or
        from now on; ``url`` only for ``http``."""

    def get_bootdev(self) -> dict:
        """``{"bootdev": BootDevice value or other, "persistent": bool|None, "uefimode": bool|None}``."""

    def capabilities(self) -> set[Capability]:
        """What this BMC can do beyond power and boot device."""

    def insert_media(self, url: str) -> None:
        """Insert the ISO at ``url`` as a virtual CD (replacing whatever is inserted)."""

    def eject_media(self) -> None:
        """Eject the virtual CD; nothing inserted is not an error."""

    def close(self) -> None:
        """Log out; a BMC that does not answer is not waited for long."""


class Clock:
    """Monotonic time and sleep, injectable so tests can drive deadlines."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


REAL_CLOCK = Clock()


def backoff_delays(initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S,
                   factor: float = 2.0, rng: random.Random | None = None):
    """Exponential backoff with +-20 % jitter so hundreds of nodes do not retry in step."""
    rng = rng or random.Random()
    delay = initial_s
    while True:
        yield delay * rng.uniform(0.8, 1.2)
        delay = min(max_s, delay * factor)


def retry_call(fn: Callable[[], T], *, timeout_s: float, clock: Clock = REAL_CLOCK, what: str = "call",
               retryable: Callable[[BaseException], bool] = lambda e: getattr(e, "retryable", False),
               on_retry: Callable[[BaseException, float], None] | None = None,
               initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error is raised, or the
    deadline passes; then re-raise the last error (never swallowed)."""
    deadline = clock.now() + timeout_s
    delays = backoff_delays(initial_s, max_s)
    while True:
        try:
            return fn()
        except CloudplanError as err:
            if not retryable(err):
                raise
            wait = next(delays)
            if clock.now() + wait >= deadline:
                raise
            log.debug("%s: %s; retrying in %.1f s", what, err, wait)
            if on_retry is not None:
                on_retry(err, wait)
            clock.sleep(wait)


def watchdog(fn: Callable[[], T], *, timeout_s: float, name: str, node: str | None, address: str,
             what: str, translate: Callable[[BaseException], BaseException],
             on_timeout: Callable[[], None] | None = None) -> T:
    """Run ``fn`` in a daemon thread and give up on it after ``timeout_s``.

    A client library stuck on a half-open connection never stalls a node (or its
    concurrency slot) beyond the deadline. Errors come back translated by
    ``translate``; cloudplan errors pass through as they are."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        if on_timeout is not None:
            on_timeout()
        raise BMCUnreachable(f"{what}: no answer within {timeout_s:g} s", node=node, address=address)
    if "error" in box:
        err = box["error"]
        if isinstance(err, CloudplanError):
            raise err
        raise translate(err) from None
    return box.get("value")


def set_boot_once(client: BMC, device: str = BootDevice.network.value, *, uefi: bool,
                  url: str | None = None, attempts: int = BOOTDEV_ATTEMPTS, clock: Clock = REAL_CLOCK,
                  on_event: Callable[[str, str], None] | None = None) -> bool:
    """Ask for a one-time boot from ``device`` and read it back.

    Many BMCs (and OpenIPMI's ipmi_sim) accept the request but report it back
    as "default", or drop it. Retry a few times; then go on with a warning,
    since the firmware may still honour it. Returns whether it was confirmed."""
    delays = backoff_delays(0.2, 2.0)
    got = None
    for attempt in range(1, attempts + 1):
        if url is None:
            client.set_bootdev(device, persist=False, uefi=uefi)
        else:
            client.set_bootdev(device, persist=False, uefi=uefi, url=url)
        back = client.get_bootdev()
        got = back.get("bootdev")
        # A BMC that fetches an HTTP boot image itself may report the device it mounted it
        # on (the emulator says Cd); the URL read back is then what confirms the override.
        if got == device or (url is not None and back.get("url") == url):
            return True
        if on_event is not None:
            on_event("bootdev-readback", f"attempt {attempt}/{attempts}: BMC reports {got!r}, not {device!r}")
        if attempt < attempts:
            clock.sleep(next(delays))
    log.warning("%r: boot device reads back as %r after %d attempts; powering on anyway",
                client, got, attempts)
    if on_event is not None:
        on_event("bootdev-unconfirmed", f"{device} boot not confirmed by the BMC (reads {got!r}); going on")
    return False


def set_boot_network(client: BMC, *, uefi: bool, attempts: int = BOOTDEV_ATTEMPTS,
                     clock: Clock = REAL_CLOCK, on_event: Callable[[str, str], None] | None = None) -> bool:
    """A one-time network boot, read back (see :func:`set_boot_once`)."""
    return set_boot_once(client, BootDevice.network.value, uefi=uefi, attempts=attempts, clock=clock,
                         on_event=on_event)


def power_on_or_cycle(client: BMC) -> str:
    """Power on when off, hard reset when on (the one-time boot device applies
    to the next boot either way). Returns the action taken."""
    action = "on" if client.get_power() == "off" else "reset"
    client.set_power(action)
    return action
