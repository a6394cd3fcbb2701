"""Real QEMU machines for the boot tests, and the loopback HTTP server they talk to.

QEMU runs under TCG with user-mode networking: the guest reaches the host's
loopback at 10.0.2.2, so nothing leaves the machine and no namespace or bridge
is needed. :class:`BootHttp` serves files (an OS image, a seed) and records
what machines POST: the deploy ramdisk's reports (``/report``) and the
installed OS's phone-home (any other path).
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from cloudplan.images import build_image
from cloudplan.images.deploy_ramdisk import build_deploy_ramdisk
from cloudplan.inventory import Inventory
from cloudplan.io import validate
from cloudplan.provision.deploy.cmdline import parse_report

ROOT = Path(__file__).resolve().parent.parent
RAMDISK_CACHE = ROOT / ".cache" / "deploy-ramdisk"
IMAGE_CACHE = ROOT / ".cache" / "os-image"

HOST_FROM_GUEST = "10.0.2.2"      # QEMU user-mode networking: the host's loopback, as the guest sees it
GUEST_ADDRESS = "10.0.2.15"       # the address slirp's DHCP would hand out (and the tests give statically)
OVMF = Path("/usr/share/ovmf/OVMF.fd")
MEMORY_MIB = 1536


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: apt-get install {package}")
    return path


def need_ovmf() -> Path:
    if not OVMF.is_file():
        pytest.fail(f"{OVMF} is missing: apt-get install ovmf")
    return OVMF


def _need_root_and_qemu(what: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"building {what} needs root (loop devices, mount, apt-get download): run the suite as root")
    need("qemu-system-x86_64", "qemu-system-x86")
    need("qemu-img", "qemu-utils")


@pytest.fixture(scope="module")
def deploy_ramdisk():
    """cloudplan's deploy ramdisk, built once into the cache (a Debian kernel, busybox, host tools)."""
    _need_root_and_qemu("the deploy ramdisk")
    return build_deploy_ramdisk(RAMDISK_CACHE)


@pytest.fixture(scope="module")
def os_image():
    """The deployable OS image ``cloudplan image build`` makes, built once into the cache."""
    _need_root_and_qemu("the OS image")
    return build_image(IMAGE_CACHE)


def guest_inventory(name: str, mac: str, address: str = GUEST_ADDRESS, **node) -> Inventory:
    """One node on QEMU's user-mode network: its provisioning address static, the host's loopback its gateway;
    ``node`` adds fields to the node (its root disk hints, its data disks)."""
    return validate(Inventory, {
        "name": name,
        "networks": {"provisioning": {"cidr": "10.0.2.0/24", "interface": "prov0", "gateway": HOST_FROM_GUEST}},
        "default_route_network": "provisioning",
        "dns_servers": ["10.0.2.3"],
        "nodes": [{"name": "node01", "role": "compute", "rack": "r1", "mac": mac,
                   "bmc": {"address": "127.0.0.1", "username": "admin", "password_env": "UNUSED"},
                   "addresses": {"provisioning": address}, **node}]})


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET serves files from ``root``; POST /report records a deploy report, any other POST a phone-home."""

    root: Path
    reports: list
    phoned: list

    def do_GET(self):
        path = self.root / urllib.parse.urlsplit(self.path).path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with open(path, "rb") as fh:
            try:
                shutil.copyfileobj(fh, self.wfile, 1 << 20)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/report":
            self.reports.append(parse_report(body))
        else:
            self.phoned.append({"path": self.path,
                                **{k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class BootHttp:
    """The loopback HTTP server: ``files`` is served, ``reports`` and ``phoned`` fill as machines POST."""

    def __init__(self, files: Path):
        files.mkdir(parents=True, exist_ok=True)
        self.files = files
        self.reports: list = []
        self.phoned: list = []

        class Handler(_Handler):
            root, reports, phoned = files, self.reports, self.phoned

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def guest_url(self, path: str) -> str:
        """The URL of ``path`` as a QEMU guest reaches it."""
        return f"http://{HOST_FROM_GUEST}:{self.port}/{path.lstrip('/')}"

    @property
    def steps(self) -> list[str]:
        return [r.step for r in self.reports]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def boot_http(tmp_path):
    server = BootHttp(tmp_path / "www")
    yield server
    server.close()


def blank_disk(path: Path, size_mib: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size_mib << 20)
    return path


def qemu_argv(tmp: Path, name: str, *, uefi: bool = False, machine: str | None = None, memory_mib: int = MEMORY_MIB,
              nics: list[str] | None = None) -> list[str]:
    """A headless TCG machine whose serial console goes to ``tmp/NAME.log``; add drives, NICs, boot sources."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", machine or ("q35" if uefi else "pc"),
            "-m", str(memory_mib), "-smp", "1", "-display", "none", "-monitor", "none",
            "-serial", f"file:{tmp / (name + '.log')}", *(nics or [])]
    if uefi:
        argv += ["-bios", str(need_ovmf())]
    return argv


def user_nic(mac: str, *, index: int = 0, ssh_port: int | None = None, restrict: bool = False) -> list[str]:
    """A virtio NIC on QEMU's user-mode network, optionally forwarding loopback ``ssh_port`` to the guest's 22."""
    opts = f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22" if ssh_port else (",restrict=on" if restrict else "")
    return ["-netdev", f"user,id=n{index}{opts}", "-device", f"virtio-net-pci,netdev=n{index},mac={mac}"]


def start(argv: list[str], tmp: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=open(tmp / f"{name}.qemu.log", "wb"), stderr=subprocess.STDOUT)


def start_node(tmp: Path, name: str, mac: str, drives: list[str], *, ramdisk=None, cmdline: str = "",
               ssh_port: int | None = None, uefi: bool = False, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """A machine with ``drives`` and one user-mode NIC that stops rather than reboots; with ``ramdisk``
    (the deploy ramdisk's kernel and initrd) it boots that with ``cmdline``, else from its disks."""
    argv = qemu_argv(tmp, name, uefi=uefi, nics=user_nic(mac, ssh_port=ssh_port)) + ["-no-reboot", *drives, *extra]
    if ramdisk is not None:
        argv += ["-kernel", str(ramdisk.kernel), "-initrd", str(ramdisk.initrd),
                 "-append", f"console=ttyS0 panic=1 {cmdline}"]
    return start(argv, tmp, name)


def tail(log: Path, n: int = 60) -> str:
    """The console's last lines, or QEMU's own words when the machine never started."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if not text.strip():
        qemu = log.with_name(log.name.replace(".log", ".qemu.log"))
        return "(no console output) " + (qemu.read_text(errors="replace") if qemu.exists() else "")
    return "\n".join(text.splitlines()[-n:])


def wait_exit(proc: subprocess.Popen, deadline_s: float, log: Path) -> None:
    try:
        proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"QEMU still running after {deadline_s} s; console tail:\n{tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def console_on_failure(proc: subprocess.Popen, log: Path, lines: int = 120):
    """Stop the machine on the way out; when the block fails, print its console's tail first (pytest
    shows a failed test's output: the console says what went wrong inside the machine)."""
    try:
        yield proc
    except BaseException:
        print(tail(log, lines))
        raise
    finally:
        stop(proc)


def wait_phone_home(server: BootHttp, proc: subprocess.Popen, log: Path, deadline_s: float) -> dict:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        if server.phoned:
            return server.phoned[0]
        time.sleep(2)
    pytest.fail(f"no phone-home within {deadline_s} s (QEMU exit {proc.poll()}); console tail:\n{tail(log)}")


def ssh_key(tmp: Path) -> tuple[Path, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "id")], check=True)
    return tmp / "id", (tmp / "id.pub").read_text().strip()


def ssh_run(client: paramiko.SSHClient, cmd: str) -> str:
    _, out, err = client.exec_command(cmd, timeout=60)
    text = out.read().decode()
    assert out.channel.recv_exit_status() == 0, f"{cmd}: {err.read().decode()}"
    return text


def sha256_file(path: Path) -> str:
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def signatures(path: Path) -> str:
    """What ``wipefs`` finds on a disk file (partition tables, filesystems); empty when none."""
    done = subprocess.run([need("wipefs", "util-linux"), "--no-act", "--noheadings", str(path)],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def small_image(path: Path) -> bytes:
    """A 64 MiB GPT disk with one partition holding 4 MiB of random bytes; returns those bytes.

    What a deploy test writes when the installed OS is not what it proves (the 2 GiB OS image costs minutes)."""
    import secrets

    blank_disk(path, 64)
    subprocess.run([need("sfdisk", "fdisk"), "--quiet", str(path)], input="label: gpt\nstart=2048, name=root\n",
                   text=True, check=True)
    payload = secrets.token_bytes(4 << 20)
    with open(path, "r+b") as fh:
        fh.seek(8 << 20)
        fh.write(payload)
    return payload
