"""Simulated BMCs on pyghmi's server-side ``Bmc``, for tests and benchmarks.

Many simulators run in one process, each on its own loopback UDP port, and
answer real IPMI 2.0 / RMCP+ (ipmitool works against them with ``-I lanplus
-C 3``). They model what provisioning relies on: chassis power, a one-time
or persistent boot device that is consumed by the next boot, the system GUID,
and faults seen in the field:

- ``wrong-password``: the BMC knows a different password;
- ``unreachable``: never started (its port stays silent);
- ``stops-answering``: goes silent after ``silent_after`` commands;
- ``ignores-boot``: accepts a boot device override but forgets it;
- ``slow``: answers every command ``slow_s`` late;
- ``busy``: answers "Node Busy" (0xC0) to the first ``busy_count`` commands.

``on_power_on(sim, boot_device)`` / ``on_power_off(sim)`` hooks let a test
play the machine (fetch its iPXE script, phone home) or, later, start a VM.
:class:`FleetProcess` runs a fleet in a child process (how tests and the
benchmark use it); ``python -m cloudplan.lab.bmcsim.ipmi SPECS.json`` serves
one from the command line.

Three pyghmi 1.6.19 server quirks are handled: its server speaks only cipher
suite 3 yet accepts any offer, so non-SHA1 offers are refused with RMCP+
status 0x11 (the client then falls back to suite 3); a late packet for a
replaced session lands on ``ServerSession.sessionless_data``, which does not
exist, so it is routed back to the BMC; and a new login from a client address
made it forget the sessions of every BMC in the process with that address,
so only the BMC logged into lets its session go.

Like a real BMC, and unlike pyghmi's server, a simulator carries out a
request once however often it arrives: a client that got no answer in time
sends the request again with the same sequence number (pyghmi after 0.5 to
1 s, so on a loaded machine), and the copy is answered with the first answer,
or not at all while that is still coming. Each answer carries the sequence
number of its own request, also when a slow answer goes out after the next
request has come in.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from pyghmi.ipmi import bmc as pyghmi_bmc
from pyghmi.ipmi import command as ipmicommand
from pyghmi.ipmi.private import serversession
from pyghmi.ipmi.private import session as ipmisession

from cloudplan.provision.bmc import ipmi as _driver  # shares pyghmi's locks first; wakes its IO thread

log = logging.getLogger(__name__)

RMCP_NO_CIPHER_MATCH = 0x11
NODE_BUSY = 0xC0
_SHA1 = 1  # RAKP-HMAC-SHA1 and HMAC-SHA1-96 share the algorithm number 1
RETRANSMIT_WINDOW_S = 30.0  # a copy of the last request this soon after it is a retransmission


class Fault(str, Enum):
    none = "none"
    wrong_password = "wrong-password"
    unreachable = "unreachable"
    stops_answering = "stops-answering"
    ignores_boot = "ignores-boot"
    slow = "slow"
    busy = "busy"


@dataclass
class SimSpec:
    name: str
    username: str = "admin"
    password: str = "secret"
    address: str = "127.0.0.1"
    port: int = 0                      # 0: pick a free port
    fault: Fault = Fault.none
    silent_after: int = 4              # stops-answering: commands answered before going silent
    slow_s: float = 0.3                # slow: delay per answer (past 0.5 s pyghmi sends the request again)
    busy_count: int = 2                # busy: commands answered "Node Busy" first
    power: str = "off"
    guid: str | None = None


@dataclass
class _Exchange:
    """One request as it arrived and the answer it got, if any yet."""

    key: tuple                # the request's header and data: what a retransmission repeats
    header: tuple             # what the answer must carry (netfn, command, sequence, address, LUN)
    at: float
    answer: tuple | None = None   # (data, completion code)


class _Reply:
    """The session as a request's handler sees it: answers go out labelled with
    that request's header and are kept for a retransmission of it."""

    def __init__(self, session: "_SimSession", exchange: _Exchange):
        self._session, self._exchange = session, exchange

    def send_ipmi_response(self, data=(), code=0):
        self._exchange.answer = (bytes(data), code)
        self._session.answer(self._exchange.header, data, code)

    def _send_ipmi_net_payload(self, data=(), code=0, **_):
        self.send_ipmi_response(data=data, code=code)    # pyghmi's answer to a failed handler

    def __getattr__(self, name):
        return getattr(self._session, name)


class _SimSession(serversession.ServerSession):
    """Server session that refuses non-SHA1 cipher offers, survives late packets and
    carries out a retransmitted request once."""

    _HEADER = ("clientnetfn", "clientcommand", "seqlun", "clientaddr", "rqlun")

    def __init__(self, *args, **kwargs):
        self._last: _Exchange | None = None
        self._io = threading.RLock()     # the header attributes are shared by parse and answer
        super().__init__(*args, **kwargs)

    def _parse_ipmi_payload(self, payload):
        with self._io:
            return super()._parse_ipmi_payload(payload)

    def handle_client_request(self, request):
        if request["netfn"] == 6 and request["command"] in (0x3B, 0x3C):
            return super().handle_client_request(request)   # session privilege, close: answered at once
        header = tuple(getattr(self, a) for a in self._HEADER)
        key, now = header + (bytes(request["data"]),), time.monotonic()
        last = self._last
        if last is not None and last.key == key and now - last.at < RETRANSMIT_WINDOW_S:
            if last.answer is not None and not self.bmc.silent:
                self.answer(header, *last.answer)
            return                                  # a copy: never carried out twice
        self._last = exchange = _Exchange(key, header, now)
        self.bmc.handle_raw_request(request, _Reply(self, exchange))

    def answer(self, header: tuple, data=(), code=0) -> None:
        with self._io:
            for attr, value in zip(self._HEADER, header):
                setattr(self, attr, value)
            self._send_ipmi_net_payload(data=data, code=code)

    def _handle_ipmi_packet(self, data, sockaddr=None, qent=None):
        if qent is not None and data[4] in (0, 2) and data[5:13] == bytes(8):
            # A client starting a new login from this address (an IPMI 1.5 request with
            # no session). pyghmi's server then forgets every session with this address,
            # those of all the other BMCs in the process too. Every client in a process
            # shares one socket, so one node's re-login made the other nodes' BMCs stop
            # answering. Only this BMC's session gives way, and the server answers.
            ports = ipmisession.Session.bmc_handlers.get(sockaddr)
            if ports is not None and ports.get(self.bmc.port) is self:
                del ports[self.bmc.port]
                if not ports:
                    del ipmisession.Session.bmc_handlers[sockaddr]
            self.bmc.pktqueue.append(qent)
            self.bmc.process_pktqueue()
            return
        return super()._handle_ipmi_packet(data, sockaddr=sockaddr, qent=qent)

    def create_open_session_response(self, request):
        self.bmc.logins += 1
        request = bytearray(request)
        auth_algo, integrity_algo = request[12] & 0x3F, request[20] & 0x3F
        if auth_algo != _SHA1 or integrity_algo != _SHA1:
            self.clientsessionid = request[4:8]
            self.managedsessionid = b"\x00\x00\x00\x00"
            return bytearray([request[0], RMCP_NO_CIPHER_MATCH, 0, 0]) + request[4:8]
        return super().create_open_session_response(request)

    def sessionless_data(self, data, sockaddr):
        self.bmc.sessionless_data(data, sockaddr)

    def process_pktqueue(self):
        if self.bmc.silent:
            self.pktqueue.clear()
            return
        super().process_pktqueue()


class SimBMC(pyghmi_bmc.Bmc):
    """One simulated BMC. Start it with :meth:`start` (or through :class:`SimFleet`)."""

    def __init__(self, spec: SimSpec, *, on_power_on: Callable[["SimBMC", str], None] | None = None,
                 on_power_off: Callable[["SimBMC"], None] | None = None):
        self.spec = spec
        self.name = spec.name
        self.on_power_on, self.on_power_off = on_power_on, on_power_off
        self.power = spec.power
        self.bootdev = "default"           # the override a BMC holds for the next boot
        self.boot_persistent = False
        self.boot_uefi = False
        self.boots: list[str] = []         # the device each boot actually used
        self.power_on_count = 0            # power-on and reset commands received
        self.commands: list[str] = []      # every chassis command, in order
        self.silent = False
        self._answered = 0
        self.logins = 0                    # open-session requests answered
        self._busy_left = spec.busy_count if spec.fault is Fault.busy else 0
        self._mutex = threading.Lock()
        self.started = False
        guid = uuid.UUID(spec.guid) if spec.guid else uuid.uuid5(uuid.NAMESPACE_DNS, spec.name)
        self.guid = guid

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        _prime_pyghmi_io()
        if self.spec.fault is Fault.unreachable:
            if not self.spec.port:
                self.spec.port = free_udp_port(self.spec.address)
            return  # nothing listens: the port stays silent
        super().__init__({self.spec.username: self.spec.password}, port=self.spec.port,
                         bmcuuid=self.guid, address=self.spec.address)
        # pyghmi keys sessions by the port it was given; with port 0 use the real one
        self.port = self.serversocket.getsockname()[1]
        self.spec.port = self.port
        self.started = True

    def stop(self, *, close: bool = True) -> None:
        """Stop answering and (with ``close``) release the port. A process about to
        exit passes ``close=False``: closing under pyghmi's running select() kills
        its IO thread with EBADF."""
        self.silent = True
        if not self.started or not close:
            return
        sock = self.serversocket
        ipmisession.Session.bmc_handlers.pop(sock, None)
        for handlers in list(ipmisession.Session.bmc_handlers.values()):
            if isinstance(handlers, dict):
                for port, sess in list(handlers.items()):
                    if getattr(sess, "bmc", None) is self:
                        handlers.pop(port, None)
        try:
            ipmisession.iosockets.remove(sock)
        except ValueError:
            pass
        sock.close()
        self.started = False

    @property
    def port_number(self) -> int:
        return self.spec.port

    # -- packet entry points ---------------------------------------------------------

    def sessionless_data(self, data, sockaddr):
        if self.silent:
            return
        data = bytearray(data)
        if len(data) >= 22 and data[0] == 6 and data[2:4] == b"\xff\x07" and data[4] == 6 and data[5] == 16:
            _SimSession(self.authdata, self.kg, sockaddr, self.serversocket, data[16:], self.uuid, bmc=self)
            return
        super().sessionless_data(data, sockaddr)

    def process_pktqueue(self):
        if self.silent:
            self.pktqueue.clear()
            return
        super().process_pktqueue()

    def handle_raw_request(self, request, session):
        if self.silent:
            return
        with self._mutex:
            self._answered += 1
            if self.spec.fault is Fault.stops_answering and self._answered > self.spec.silent_after:
                self.silent = True
                log.info("simulated BMC %s stops answering", self.name)
                return
            busy = self._busy_left > 0
            if busy:
                self._busy_left -= 1
        if busy:
            session.send_ipmi_response(code=NODE_BUSY)
            return
        if self.spec.fault is Fault.slow:
            threading.Timer(self.spec.slow_s, super().handle_raw_request, (request, session)).start()
            return
        super().handle_raw_request(request, session)

    # -- chassis ---------------------------------------------------------------------

    def get_system_guid(self):
        return self.guid

    def get_power_state(self):
        return self.power

    def _boot(self, how: str) -> None:
        device = self.bootdev if self.bootdev != "default" else "hd"
        if not self.boot_persistent:
            self.bootdev = "default"     # a one-time override is consumed by this boot
        self.power = "on"
        self.power_on_count += 1
        self.boots.append(device)
        self.commands.append(how)
        if self.on_power_on is not None:
            # a hook may block (a VM start, HTTP calls): keep it off the IPMI path
            threading.Thread(target=self.on_power_on, args=(self, device), daemon=True,
                             name=f"sim-{self.name}-boot").start()

    def power_on(self):
        if self.power == "on":
            self.commands.append("on (already on)")
            return 0
        self._boot("on")
        return 0

    def power_reset(self):
        if self.power == "off":
            self.commands.append("reset (off)")
            return 0xD5  # "command not supported in present state"
        self._boot("reset")
        return 0

    def power_cycle(self):
        self._boot("cycle")
        return 0

    def power_off(self):
        self.power = "off"
        self.commands.append("off")
        if self.on_power_off is not None:
            threading.Thread(target=self.on_power_off, args=(self,), daemon=True).start()
        return 0

    def power_shutdown(self):
        return self.power_off()

    def set_system_boot_options(self, request, session):
        data = request["data"]
        if data[0] != 5:
            return super().set_system_boot_options(request, session)
        flags, devbyte = data[1], data[2]
        device = ipmicommand.boot_devices.get((devbyte >> 2) & 0xF)
        if device is None:
            return session.send_ipmi_response(code=0xCC)
        self.commands.append(f"bootdev {device}{' persistent' if flags & 0x40 else ''}"
                             f"{' uefi' if flags & 0x20 else ''}")
        if self.spec.fault is not Fault.ignores_boot:
            self.bootdev = device if flags & 0x80 or device == "default" else "default"
            self.boot_persistent = bool(flags & 0x40)
            self.boot_uefi = bool(flags & 0x20)
        session.send_ipmi_response()

    def get_system_boot_options(self, request, session):
        if request["data"][0] != 5:
            return session.send_ipmi_response(code=0x80)
        if self.bootdev == "default":
            return session.send_ipmi_response(data=[1, 5, 0, 0, 0, 0, 0])
        flags = 0x80 | (0x40 if self.boot_persistent else 0) | (0x20 if self.boot_uefi else 0)
        return session.send_ipmi_response(data=[1, 5, flags, ipmicommand.boot_devices[self.bootdev], 0, 0, 0])


def _prime_pyghmi_io() -> None:
    """Make sure pyghmi's first IO socket is a client (dual-stack) socket.

    pyghmi wakes its IO thread by sending a byte from ``iosockets[0]`` to its
    own ``myself`` address, which is IPv6-style. If a simulator's IPv4 server
    socket came first, that send fails, the wake-up is lost, and waiters sleep
    until the IO thread's 300 s select timeout: sessions appear to hang."""
    if not ipmisession.iosockets:
        ipmisession.Session._assignsocket()
    _driver.start_pyghmi_kicker()


def free_udp_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class SimFleet:
    """Many simulated BMCs in this process and the loop that serves them."""

    specs: list[SimSpec]
    on_power_on: Callable[[SimBMC, str], None] | None = None
    on_power_off: Callable[[SimBMC], None] | None = None
    sims: dict[str, SimBMC] = field(default_factory=dict)
    # Builds each BMC; the virtual rack passes one whose power drives a real VM.
    make: Callable[[SimSpec], SimBMC] | None = None

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SimFleet":
        for spec in self.specs:
            sim = (self.make(spec) if self.make is not None
                   else SimBMC(spec, on_power_on=self.on_power_on, on_power_off=self.on_power_off))
            sim.start()
            self.sims[spec.name] = sim
        self._thread = threading.Thread(target=self._serve, name="sim-bmc-loop", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        # pyghmi's IO thread receives; someone must run the session loop to answer
        while not self._stop.is_set():
            try:
                ipmisession.Session.wait_for_rsp(timeout=0.2)
            except Exception as err:  # a malformed packet must not stop every simulator
                log.warning("simulated BMC loop: %s", err)

    def stop(self, *, close: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sim in self.sims.values():
            sim.stop(close=close)

    def __enter__(self) -> "SimFleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __getitem__(self, name: str) -> SimBMC:
        return self.sims[name]

    def power_ons(self) -> dict[str, int]:
        return {n: s.power_on_count for n, s in self.sims.items()}


def _serve_fleet(conn, specs, on_power_on, on_power_off) -> None:
    """Child side of :class:`FleetProcess`: run the fleet, answer queries until "stop"."""
    logging.basicConfig(level=logging.WARNING)
    fleet = SimFleet(specs, on_power_on=on_power_on, on_power_off=on_power_off).start()
    conn.send({n: s.port_number for n, s in fleet.sims.items()})
    hook_owner = getattr(on_power_on, "__self__", None)
    try:
        while True:
            what, args = conn.recv()
            if what == "stop":
                break
            if what == "power_ons":
                conn.send(fleet.power_ons())
            elif what == "commands":
                conn.send({n: list(s.commands) for n, s in fleet.sims.items()})
            elif what == "boots":
                conn.send({n: list(s.boots) for n, s in fleet.sims.items()})
            elif what == "logins":
                conn.send({n: s.logins for n, s in fleet.sims.items()})
            elif what == "power":
                conn.send({n: s.power for n, s in fleet.sims.items()})
            elif what == "silence":
                fleet[args[0]].silent = bool(args[1])
                conn.send(True)
            elif what == "hook_log":
                conn.send(list(getattr(hook_owner, "log", [])))
            else:
                conn.send(ValueError(f"unknown query {what!r}"))
    finally:
        fleet.stop(close=False)
        conn.send("stopped")


class FleetProcess:
    """Simulated BMCs in child processes (``per_process`` each), queried over pipes.

    Driving pyghmi clients and pyghmi servers from threads of one process can
    stall (both sides pull packets from one shared session queue), and one
    pyghmi event loop serving hundreds of server sessions falls behind; so
    tests and benchmarks keep the simulated BMCs in their own processes, in
    groups, as real BMCs are. The hooks must be picklable (a module-level
    function or a bound method of a picklable object); whatever they append to
    their owner's ``log`` can be read back with :meth:`hook_log`."""

    def __init__(self, specs: list[SimSpec], *, on_power_on=None, on_power_off=None, per_process: int = 50):
        self.specs, self.on_power_on, self.on_power_off = specs, on_power_on, on_power_off
        self.per_process = max(1, per_process)
        self.ports: dict[str, int] = {}
        self._children: list[tuple] = []         # (process, connection, names)

    def start(self, timeout_s: float = 60.0) -> "FleetProcess":
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no inherited pyghmi threads or sockets
        for i in range(0, len(self.specs), self.per_process):
            group = self.specs[i:i + self.per_process]
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=_serve_fleet, args=(child, group, self.on_power_on, self.on_power_off),
                               daemon=True)
            proc.start()
            self._children.append((proc, conn, {sp.name for sp in group}))
        for proc, conn, _ in self._children:
            if not conn.poll(timeout_s):
                self.stop()
                raise RuntimeError(f"simulated BMC process did not start within {timeout_s:g} s")
            self.ports.update(conn.recv())
        return self

    def _ask_one(self, conn, what: str, *args):
        conn.send((what, args))
        if not conn.poll(30):
            raise RuntimeError(f"simulated BMC process did not answer {what!r}")
        reply = conn.recv()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _ask(self, what: str, *args) -> dict:
        merged: dict = {}
        for _, conn, _names in self._children:
            merged.update(self._ask_one(conn, what, *args))
        return merged

    def power_ons(self) -> dict[str, int]:
        return self._ask("power_ons")

    def commands(self) -> dict[str, list[str]]:
        return self._ask("commands")

    def boots(self) -> dict[str, list[str]]:
        return self._ask("boots")

    def logins(self) -> dict[str, int]:
        return self._ask("logins")

    def power(self) -> dict[str, str]:
        return self._ask("power")

    def silence(self, name: str, on: bool = True) -> None:
        """Make a simulator stop (or resume) answering."""
        for _, conn, names in self._children:
            if name in names:
                self._ask_one(conn, "silence", name, on)

    def hook_log(self) -> list:
        out: list = []
        for _, conn, _names in self._children:
            out += self._ask_one(conn, "hook_log")
        return out

    def stop(self) -> None:
        for proc, conn, _ in self._children:
            try:
                if proc.is_alive():
                    conn.send(("stop", ()))
            except (BrokenPipeError, OSError):
                pass
        for proc, conn, _ in self._children:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._children = []

    def __enter__(self) -> "FleetProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudplan.lab.bmcsim.ipmi SPECS.json``: serve simulators until stdin closes.

    SPECS.json is a list of SimSpec fields; the bound ports are printed as one
    JSON line on stdout once they all listen."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as fh:
        specs = [SimSpec(**{**d, "fault": Fault(d.get("fault", "none"))}) for d in json.load(fh)]
    with SimFleet(specs) as fleet:
        print(json.dumps({n: s.port_number for n, s in fleet.sims.items()}), flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())

