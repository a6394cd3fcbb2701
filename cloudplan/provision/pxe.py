"""DHCP and TFTP for network boot: a dnsmasq process cloudplan configures and owns.

dnsmasq hands firmware PXE clients an iPXE binary over TFTP (``ipxe.efi`` for
UEFI client architectures, ``undionly.kpxe`` for BIOS, chosen by DHCP option
93) and sends iPXE itself (option 175 / user class ``iPXE``) to the HTTP chain
script of :class:`~cloudplan.provision.bootserver.BootServer`. Known MACs get
their inventory address with a ``dhcp-host`` line. DNS is disabled.

The iPXE binaries come from the Debian ``ipxe`` package
(``/usr/lib/ipxe``) when it is installed. Without it dnsmasq still starts, but
only machines whose firmware already is iPXE (many NIC ROMs, QEMU) can boot:
plain PXE firmware would ask for a file the TFTP root does not have.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from cloudplan.errors import ProvisioningFailed, SpecError
from cloudplan.inventory import Node, ProvisioningConfig
from cloudplan.templating import render

log = logging.getLogger(__name__)

DNSMASQ = "dnsmasq"
IPXE_DIRS = (Path("/usr/lib/ipxe"),)
EFI_IMAGE = "ipxe.efi"
BIOS_IMAGE = "undionly.kpxe"
# RFC 4578 / IANA client architectures: 6 EFI IA32, 7 EFI BC (x86-64), 9 EFI x86-64.
EFI_CLIENT_ARCHES = (6, 7, 9)
# Leases outlive the run: dnsmasq stops with it, and a node whose lease lapsed would lose
# the address it was verified on (and the inventory's manifests point at).
LEASE_TIME = "infinite"
# Where the HTTP boot service publishes the chain script (see bootserver).
CHAIN_SCRIPT = "boot.ipxe"


def _parse_range(cfg: ProvisioningConfig) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    if not cfg.range:
        raise SpecError("a DHCP range 'first,last' is required when dhcp is on", field="provisioning.range")
    parts = [p.strip() for p in cfg.range.split(",")]
    try:
        first, last = (ipaddress.ip_address(p) for p in parts)
    except ValueError:
        raise SpecError(f"expected 'first,last' IP addresses, got {cfg.range!r}", field="provisioning.range") from None
    if first.version != last.version or int(first) > int(last):
        raise SpecError(f"{cfg.range!r} is not an ascending range of one IP version", field="provisioning.range")
    if first.version == 6:
        # dhcp-boot is DHCPv4 only: an IPv6 network boot needs option6:bootfile-url and UEFI HTTP boot,
        # which cloudplan does not drive yet. Refuse rather than start a DHCP server that boots nothing.
        raise SpecError("IPv6 provisioning is not supported (network boot here is DHCPv4 + iPXE); give an "
                        "IPv4 range", field="provisioning.range")
    return first, last


def _relay_context(r) -> dict[str, str]:
    """One relayed subnet for the template: dnsmasq picks the range whose subnet holds the relay's giaddr,
    and needs the netmask of a subnet it has no interface on."""
    net = ipaddress.ip_network(r.cidr, strict=False)
    first, last = (p.strip() for p in r.range.split(","))
    return {"first": first, "last": last, "netmask": str(net.netmask), "router": r.router}


def dhcp_host_lines(nodes: Sequence[Node]) -> list[str]:
    """``dhcp-host`` values for nodes with a known MAC: fixed address when the inventory has one."""
    lines = []
    for n in nodes:
        if not n.mac:
            continue
        addr = n.addresses.get("provisioning")
        if addr:
            ip = ipaddress.ip_address(addr.split("/")[0])
            addr = f"[{ip}]" if ip.version == 6 else str(ip)
        lines.append(",".join(x for x in (n.mac, addr, n.name, LEASE_TIME) if x))
    return lines


def render_dnsmasq_conf(cfg: ProvisioningConfig, *, http_url: str, tftp_root: Path, leases_file: Path,
                        nodes: Sequence[Node], pid_file: Path | None = None, log_file: Path | None = None,
                        interface: str | None = None, user: str | None = None,
                        router: str | None = None, extra: Sequence[str] = ()) -> str:
    """The dnsmasq configuration for ``cfg``'s provisioning network.

    ``interface`` overrides ``cfg.interface``; ``user`` is the account dnsmasq
    drops to (its default, ``nobody``, when None); ``router`` is the default
    gateway offered (none when None: dnsmasq would otherwise offer itself,
    and a provisioning host rarely routes); ``extra`` lines are appended
    verbatim for site specifics.
    """
    iface = interface or cfg.interface
    if not iface:
        # Without an interface dnsmasq would answer DHCP on every network of this host.
        raise SpecError("the provisioning interface is required when dhcp is on", field="provisioning.interface")
    first, last = _parse_range(cfg)
    ctx = {
        "interface": iface,
        "range_first": str(first),
        "range_last": str(last),
        "lease_time": LEASE_TIME,
        "hosts": dhcp_host_lines(nodes),
        "relays": [_relay_context(r) for r in cfg.relays],
        "tftp_root": str(tftp_root),
        "leases_file": str(leases_file),
        "pid_file": str(pid_file or leases_file.with_name("dnsmasq.pid")),
        "log_file": str(log_file or leases_file.with_name("dnsmasq.log")),
        "user": user,
        "router": router,
        "efi_arches": EFI_CLIENT_ARCHES,
        "efi_image": EFI_IMAGE,
        "bios_image": BIOS_IMAGE,
        "ipxe_script_url": f"{http_url.rstrip('/')}/{CHAIN_SCRIPT}",
        "extra": list(extra),
    }
    return render("pxe/dnsmasq.conf.j2", ctx, error=ProvisioningFailed, step="dhcp")


def populate_tftp_root(tftp_root: Path, sources: Sequence[Path] = IPXE_DIRS) -> list[str]:
    """Copy the iPXE binaries into ``tftp_root``; returns the names found.

    Copies rather than symlinks: dnsmasq refuses TFTP paths that leave its root.
    """
    tftp_root.mkdir(parents=True, exist_ok=True)
    found = []
    for name in (EFI_IMAGE, BIOS_IMAGE):
        for d in sources:
            src = d / name
            if src.is_file():
                shutil.copyfile(src, tftp_root / name)
                os.chmod(tftp_root / name, 0o644)  # dnsmasq serves only world-readable files
                found.append(name)
                break
    missing = {EFI_IMAGE, BIOS_IMAGE} - set(found)
    if missing:
        log.warning("iPXE binaries %s not found (Debian package ipxe); only iPXE firmware can network-boot",
                    ", ".join(sorted(missing)))
    return found


def check_config(conf: Path, *, binary: str = DNSMASQ) -> None:
    """``dnsmasq --test``; a rejected configuration raises with dnsmasq's own words (file and line)."""
    try:
        res = subprocess.run([binary, "--test", "-C", str(conf)], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ProvisioningFailed(f"{binary} is not installed (Debian package dnsmasq)", step="dhcp") from None
    if res.returncode != 0:
        why = (res.stderr or res.stdout).strip().replace("dnsmasq: ", "")
        raise ProvisioningFailed(f"dnsmasq rejects {conf}: {why}", step="dhcp")


class Dnsmasq:
    """A dnsmasq process for the provisioning network, alive only inside ``with``.

    Files live in ``state_dir``: ``dnsmasq.conf``, ``dnsmasq.leases``,
    ``dnsmasq.pid``, ``dnsmasq.log`` (the DHCP log), ``dnsmasq.stderr`` and the
    ``tftp/`` root. ``command_prefix`` runs it through a wrapper, e.g.
    ``["ip", "netns", "exec", NS]``; ``user`` is passed to :func:`render_dnsmasq_conf`.
    """

    def __init__(self, cfg: ProvisioningConfig, *, http_url: str, state_dir: Path, nodes: Sequence[Node],
                 interface: str | None = None, user: str | None = None, router: str | None = None,
                 extra: Sequence[str] = (),
                 command_prefix: Sequence[str] = (), binary: str = DNSMASQ, start_timeout_s: float = 15.0,
                 ipxe_dirs: Sequence[Path] = IPXE_DIRS):
        self.cfg, self.http_url, self.nodes = cfg, http_url, list(nodes)
        self.state_dir = Path(state_dir)
        self.interface, self.user, self.router, self.extra = interface, user, router, list(extra)
        self.command_prefix, self.binary = list(command_prefix), binary
        self.start_timeout_s, self.ipxe_dirs = start_timeout_s, list(ipxe_dirs)
        self.conf = self.state_dir / "dnsmasq.conf"
        self.leases_file = self.state_dir / "dnsmasq.leases"
        self.pid_file = self.state_dir / "dnsmasq.pid"
        self.log_file = self.state_dir / "dnsmasq.log"
        self.stderr_file = self.state_dir / "dnsmasq.stderr"
        self.tftp_root = self.state_dir / "tftp"
        self._proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        populate_tftp_root(self.tftp_root, self.ipxe_dirs)
        text = render_dnsmasq_conf(self.cfg, http_url=self.http_url, tftp_root=self.tftp_root,
                                   leases_file=self.leases_file, nodes=self.nodes, pid_file=self.pid_file,
                                   log_file=self.log_file, interface=self.interface, user=self.user,
                                   router=self.router, extra=self.extra)
        self.conf.write_text(text, encoding="utf-8")
        for f in (self.leases_file, self.log_file):
            f.touch()
        return self.conf

    def _stop_stale(self) -> None:
        """A run killed with SIGKILL leaves its dnsmasq holding the DHCP port: end it.

        Only a process whose command line names this very config file is ours."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if str(self.conf).encode() not in cmdline:
            return
        log.warning("dnsmasq (pid %s) of an earlier run still runs; stopping it", pid)
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                time.sleep(0.1)
                os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def start(self) -> None:
        if self._proc is not None:
            return
        self._stop_stale()
        self.write_config()
        check_config(self.conf, binary=self.binary)
        self.log_file.write_text("", encoding="utf-8")
        cmd = [*self.command_prefix, self.binary, "--keep-in-foreground", "-C", str(self.conf)]
        log.info("starting dnsmasq on %s: %s", self.interface or self.cfg.interface, " ".join(cmd))
        with open(self.stderr_file, "wb") as err:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise

    def _wait_up(self) -> None:
        # dnsmasq logs its DHCP range once its sockets are bound; exiting first means it failed.
        deadline = time.monotonic() + self.start_timeout_s
        delay = 0.02
        while True:
            rc = self._proc.poll() if self._proc else None
            if rc is not None:
                raise ProvisioningFailed(f"dnsmasq exited with status {rc}: {self._failure_text()}", step="dhcp")
            if "DHCP, " in self.log_file.read_text(encoding="utf-8", errors="replace"):
                log.info("dnsmasq running (pid %s)", self._proc.pid)
                return
            if time.monotonic() > deadline:
                raise ProvisioningFailed(f"dnsmasq not up after {self.start_timeout_s:g} s: {self._failure_text()}",
                                         step="dhcp")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _failure_text(self) -> str:
        text = ""
        for f in (self.stderr_file, self.log_file):
            if f.exists():
                text += f.read_text(encoding="utf-8", errors="replace")
        lines = [ln.replace("dnsmasq: ", "") for ln in text.strip().splitlines() if ln.strip()]
        out = "; ".join(lines[-3:]) or "no output"
        if "Permission denied" in out and self.user is None:
            out += (f" (dnsmasq drops to user nobody: {self.state_dir} and its parents must be searchable"
                    " by it, or pass user=)")
        return out

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("dnsmasq (pid %s) ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        log.info("dnsmasq stopped")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def leases(self) -> list[dict[str, str]]:
        """Current leases: ``expires``, ``mac``, ``ip``, ``hostname``, ``client_id`` per line."""
        out = []
        if self.leases_file.exists():
            for ln in self.leases_file.read_text(encoding="utf-8").splitlines():
                f = ln.split()
                if len(f) >= 4 and not ln.startswith("duid"):
                    out.append({"expires": f[0], "mac": f[1], "ip": f[2], "hostname": f[3],
                                "client_id": f[4] if len(f) > 4 else "*"})
        return out

    def __enter__(self) -> "Dnsmasq":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
