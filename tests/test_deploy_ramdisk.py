"""The deploy ramdisk, booted for real: image streamed to disk, checked, seed added, data disks wiped, reboot from disk.

QEMU (TCG, user-mode networking: the guest reaches the host's loopback at
10.0.2.2) boots cloudplan's deploy ramdisk by direct kernel boot, standing in
for iPXE. A loopback HTTP server serves the compressed OS image and the seed
and records the ramdisk's reports. After the ramdisk powers off, the same root
disk boots on its own; the installed OS's cloud-init finds the seed in the
disk's own ``cidata`` partition and phones its host key home, and cloudplan's
SSH verification connects with that key pinned. A wrong sha256 must end in a
failure report and a root disk with no partition table or boot sector left.
"""

from __future__ import annotations

import http.server
import json
import lzma
import os
import secrets
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import paramiko
import pytest

from cloudplan.images import build_image
from cloudplan.images.deploy_ramdisk import build_deploy_ramdisk
from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import Inventory
from cloudplan.io import validate
from cloudplan.provision.deploy import build_seed_image, render_seed
from cloudplan.provision.deploy.cmdline import DeployArgs, kernel_cmdline, parse_report
from cloudplan.provision.deploy.rootdisk import RootDiskHints
from cloudplan.provision.installcheck import verify_installed
from cloudplan.provision.sshverify import PinnedHostKeyPolicy, parse_host_key, verify_node
from provision_fixtures import free_tcp_port

ROOT = Path(__file__).resolve().parent.parent
IMAGE_CACHE = ROOT / ".cache" / "os-image"
RAMDISK_CACHE = ROOT / ".cache" / "deploy-ramdisk"
HOST_FROM_GUEST = "10.0.2.2"
MAC = "52:54:00:d1:00:01"
USER = "cloudplan"
# TCG on a shared 2-core machine: writing and reading back a 3 GiB image, then a first boot with cloud-init.
DEPLOY_DEADLINE_S = 1200
BOOT_DEADLINE_S = 1200
MISMATCH_DEADLINE_S = 300

pytestmark = pytest.mark.root


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: apt-get install {package}")
    return path


class _Server(http.server.BaseHTTPRequestHandler):
    """GET serves files from ``root``; POST /report records a deploy report, POST /phone-home the installed OS."""

    root: Path
    reports: list = []
    phoned: list = []

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


@pytest.fixture
def server(tmp_path):
    files = tmp_path / "www"
    files.mkdir()

    class Handler(_Server):
        root, reports, phoned = files, [], []

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], files, Handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def ramdisk():
    if os.geteuid() != 0:
        pytest.fail("building the OS image needs root (loop devices, mount): run the suite as root")
    _need("qemu-system-x86_64", "qemu-system-x86")
    _need("qemu-img", "qemu-utils")
    return build_deploy_ramdisk(RAMDISK_CACHE)


def _disk(path: Path, size_mib: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size_mib << 20)
    return path


def _qemu(tmp: Path, name: str, drives: list[str], *, kernel=None, append: str = "", ssh_port: int | None = None,
          ) -> subprocess.Popen:
    fwd = f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22" if ssh_port else ""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "1536", "-smp", "1",
            "-display", "none", "-monitor", "none", "-serial", f"file:{tmp / (name + '.log')}", "-no-reboot",
            "-netdev", f"user,id=n0{fwd}", "-device", f"virtio-net-pci,netdev=n0,mac={MAC}", *drives]
    if kernel is not None:
        argv += ["-kernel", str(kernel.kernel), "-initrd", str(kernel.initrd), "-append", append]
    return subprocess.Popen(argv, stdout=open(tmp / f"{name}.qemu.log", "wb"), stderr=subprocess.STDOUT)


def _wait_exit(proc: subprocess.Popen, deadline_s: float, log: Path) -> None:
    try:
        proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"QEMU still running after {deadline_s} s; console tail:\n{_tail(log)}")


def _tail(log: Path, n: int = 60) -> str:
    """The console's last lines, or QEMU's own words when the machine never started."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if not text.strip():
        qemu = log.with_name(log.name.replace(".log", ".qemu.log"))
        return "(no console output) " + (qemu.read_text(errors="replace") if qemu.exists() else "")
    return "\n".join(text.splitlines()[-n:])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _signatures(path: Path) -> str:
    """What ``wipefs`` finds on a disk file (partition tables, filesystems); empty when none."""
    done = subprocess.run([_need("wipefs", "util-linux"), "--no-act", "--noheadings", str(path)],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


# -- a checksum mismatch --------------------------------------------------------


def _small_image(path: Path) -> bytes:
    """A 64 MiB GPT disk with one partition holding 4 MiB of random bytes; returns those bytes."""
    _disk(path, 64)
    subprocess.run([_need("sfdisk", "fdisk"), "--quiet", str(path)], input="label: gpt\nstart=2048, name=root\n",
                   text=True, check=True)
    payload = secrets.token_bytes(4 << 20)
    with open(path, "r+b") as fh:
        fh.seek(8 << 20)
        fh.write(payload)
    return payload


def test_wrong_sha256_is_reported_and_leaves_nothing_bootable(ramdisk, server, tmp_path):
    port, www, handler = server
    payload = _small_image(tmp_path / "small.raw")
    (www / "small.raw.xz").write_bytes(lzma.compress((tmp_path / "small.raw").read_bytes(), preset=1))
    token = secrets.token_urlsafe(16)
    args = DeployArgs(image_url=f"http://{HOST_FROM_GUEST}:{port}/small.raw.xz", image_sha256="0" * 64,
                      report_url=f"http://{HOST_FROM_GUEST}:{port}/report", token=token,
                      ip="10.0.2.15/24", gateway=HOST_FROM_GUEST, mac=MAC,
                      # The spare disk is smaller: without the hints it would be chosen.
                      root_hints=RootDiskHints(serial="ROOT1", by_path="pci-0000:00:06.0"))
    root, spare = _disk(tmp_path / "root.raw", 128), _disk(tmp_path / "spare.raw", 32)
    spare.write_bytes(b"spare disk, untouched" * 1000)
    drives = ["-drive", f"file={root},if=none,id=root,format=raw",
              "-device", "virtio-blk-pci,drive=root,serial=ROOT1,addr=0x6",
              "-drive", f"file={spare},if=none,id=spare,format=raw",
              "-device", "virtio-blk-pci,drive=spare,serial=SPARE1"]
    proc = _qemu(tmp_path, "mismatch", drives, kernel=ramdisk, append=f"console=ttyS0 panic=1 {kernel_cmdline(args)}")
    try:
        _wait_exit(proc, MISMATCH_DEADLINE_S, tmp_path / "mismatch.log")
    finally:
        _stop(proc)
    console = (tmp_path / "mismatch.log").read_text(errors="replace")
    steps = [r.step for r in handler.reports]
    assert steps == ["started", "root-disk", "image-written", "failed"], (steps, _tail(tmp_path / "mismatch.log"))
    failed = handler.reports[-1]
    assert failed.sha256_ok is False and failed.root_serial == "ROOT1"
    # The digest it read back is the image's own: the disk holds what was sent, just not what was promised.
    assert f"sha256 of the {64 << 20} bytes written is {_sha256_file(tmp_path / 'small.raw')}" in failed.error
    assert all(r.token == token for r in handler.reports)
    assert token not in console
    # The image was written (its payload is on the disk), then its partition table and boot sector wiped.
    data = root.read_bytes()
    assert payload in data
    assert _signatures(root) == ""
    assert data[: 1 << 20].count(0) == 1 << 20 and data[-(1 << 20):].count(0) == 1 << 20
    # The failure stopped the deploy before the data disks: the spare disk keeps its bytes.
    assert spare.read_bytes().startswith(b"spare disk, untouched")


# -- a deploy, then a boot from disk -----------------------------------------------


def _inventory() -> Inventory:
    return validate(Inventory, {
        "name": "deploy-test",
        "networks": {"provisioning": {"cidr": "10.0.2.0/24", "interface": "prov0", "gateway": HOST_FROM_GUEST}},
        "default_route_network": "provisioning",
        "dns_servers": ["10.0.2.3"],
        "nodes": [{"name": "node01", "role": "compute", "rack": "r1", "mac": MAC,
                   "bmc": {"address": "127.0.0.1", "username": "admin", "password_env": "UNUSED"},
                   "addresses": {"provisioning": "10.0.2.15"},
                   "root_disk": {"serial": "ROOT1"}, "data_disk_serials": ["DATA1"]}]})


def _ssh_key(tmp: Path) -> tuple[Path, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "id")], check=True)
    return tmp / "id", (tmp / "id.pub").read_text().strip()


def _sha256_file(path: Path) -> str:
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def _wait_phone_home(handler, proc: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + BOOT_DEADLINE_S
    while time.monotonic() < deadline and proc.poll() is None:
        if handler.phoned:
            return handler.phoned[0]
        time.sleep(2)
    pytest.fail(f"no phone-home within {BOOT_DEADLINE_S} s (QEMU exit {proc.poll()}); console tail:\n{_tail(log)}")


def _run(client: paramiko.SSHClient, cmd: str) -> str:
    _, out, err = client.exec_command(cmd, timeout=60)
    text = out.read().decode()
    assert out.channel.recv_exit_status() == 0, f"{cmd}: {err.read().decode()}"
    return text


def test_deploy_writes_image_and_seed_then_the_node_boots_from_its_disk(ramdisk, server, tmp_path):
    port, www, handler = server
    image = build_image(IMAGE_CACHE)
    zstd = _need("zstd", "zstd")
    subprocess.run([zstd, "-q", "-T0", "-3", str(image.path), "-o", str(www / "os.raw.zst")], check=True)
    inv = _inventory()
    node = inv.nodes[0]
    key_file, pub = _ssh_key(tmp_path)
    seed = render_seed(inv, node, instance_id=f"node01-{tmp_path.name}", ssh_user=USER, ssh_public_keys=[pub],
                       phone_home_url=f"http://{HOST_FROM_GUEST}:{port}/phone-home/node01")
    build_seed_image(seed, www / "seed.img", node=node.name)
    token = secrets.token_urlsafe(16)
    args = DeployArgs(image_url=f"http://{HOST_FROM_GUEST}:{port}/os.raw.zst", image_sha256=image.sha256,
                      seed_url=f"http://{HOST_FROM_GUEST}:{port}/seed.img", seed_sha256=_sha256_file(www / "seed.img"),
                      report_url=f"http://{HOST_FROM_GUEST}:{port}/report", token=token,
                      ip="10.0.2.15/24", gateway=HOST_FROM_GUEST, mac=MAC, data_serials=("DATA1",))
    root, data = tmp_path / "root.qcow2", _disk(tmp_path / "data.raw", 256)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "6G"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(data)], check=True)  # an old filesystem, as a reused disk has
    assert "ext4" in _signatures(data)
    # The data disk is the smaller one: only its planned role keeps the ramdisk off it.
    drives = ["-drive", f"file={root},if=none,id=root,format=qcow2,detect-zeroes=on",
              "-device", "virtio-blk-pci,drive=root,serial=ROOT1,bootindex=1",
              "-drive", f"file={data},if=none,id=data,format=raw", "-device", "virtio-blk-pci,drive=data,serial=DATA1"]
    started = time.monotonic()
    proc = _qemu(tmp_path, "deploy", drives, kernel=ramdisk, append=f"console=ttyS0 panic=1 {kernel_cmdline(args)}")
    try:
        _wait_exit(proc, DEPLOY_DEADLINE_S, tmp_path / "deploy.log")
    finally:
        _stop(proc)
    deployed = time.monotonic()
    steps = [r.step for r in handler.reports]
    assert steps == ["started", "root-disk", "image-written", "image-verified", "seed-written", "data-wiped",
                     "done"], (steps, [r.error for r in handler.reports], _tail(tmp_path / "deploy.log"))
    done = handler.reports[-1]
    assert done.sha256_ok is True and done.root_serial == "ROOT1" and done.root_size_bytes == 6 << 30
    assert all(r.token == token for r in handler.reports)
    assert token not in (tmp_path / "deploy.log").read_text(errors="replace")
    assert _signatures(data) == ""  # wiped, and left unpartitioned

    ssh_port = free_tcp_port()
    proc = _qemu(tmp_path, "boot", drives, ssh_port=ssh_port)  # no kernel given: the disk boots itself
    try:
        report = _wait_phone_home(handler, proc, tmp_path / "boot.log")
        booted = time.monotonic()
        assert report["path"] == "/phone-home/node01" and report["hostname"] == "node01"
        host_key = report["pub_key_ed25519"].strip()
        facts = verify_node("127.0.0.1", port=ssh_port, username=USER, key_filename=str(key_file),
                            host_key=host_key, expect=None, hostname="node01", timeout_s=60)
        assert facts.hostname == "node01"
        key_type, blob = parse_host_key(host_key, node="node01")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedHostKeyPolicy(key_type, blob))
        client.connect("127.0.0.1", port=ssh_port, username=USER, key_filename=str(key_file), timeout=60,
                       allow_agent=False, look_for_keys=False)
        try:
            _check_installed(client)
            # cloudplan's own installed-OS checks, on this real installed OS: all hold, and a wrong
            # expectation is named
            found = verify_installed(lambda cmd: _run(client, cmd), inv, node)
            assert found == {"root_disk": "vda", "root_serial": "ROOT1", "empty_data_disks": ["vdb"],
                             "networks": ["provisioning"]}, found
            wrong = node.model_copy(update={"root_disk": node.root_disk.model_copy(update={"serial": "ROOT2"})})
            with pytest.raises(ProvisioningFailed, match="the root disk hint says serial ROOT2"):
                verify_installed(lambda cmd: _run(client, cmd), inv, wrong)
        finally:
            client.close()
    except BaseException:
        print(_tail(tmp_path / "boot.log", 120))
        raise
    finally:
        _stop(proc)
    print(f"deploy ramdisk run {deployed - started:.0f} s, "
          f"first boot from disk to phone-home {booted - deployed:.0f} s")


def _check_installed(client: paramiko.SSHClient) -> None:
    # / is the image's root partition on the disk with serial ROOT1, grown past the image's 3 GiB.
    source = _run(client, "findmnt -no SOURCE /").strip()
    disk = _run(client, f"lsblk -no PKNAME {source}").strip()
    assert _run(client, f"lsblk -dno SERIAL /dev/{disk}").strip() == "ROOT1"
    assert int(_run(client, f"lsblk -bno SIZE {source}").strip()) > 4 << 30
    cmdline = _run(client, "cat /proc/cmdline")
    assert "root=UUID=" in cmdline and "cloudplan." not in cmdline
    # The seed came from the root disk's own cidata partition: there is no other disk with a filesystem.
    parts = json.loads(_run(client, "lsblk -J -o NAME,SERIAL,FSTYPE,LABEL,PARTLABEL,TYPE"))["blockdevices"]
    root = next(d for d in parts if d.get("serial") == "ROOT1")
    seed = [p for p in root["children"] if p.get("label") == "CIDATA"]
    assert len(seed) == 1 and seed[0]["partlabel"] == "cidata" and seed[0]["fstype"] == "vfat"
    data = [d for d in parts if d.get("serial") == "DATA1"]
    assert len(data) == 1 and not data[0].get("children") and not data[0].get("fstype")
    assert "status: done" in _run(client, "cloud-init status --long || true")
    addrs = {i["ifname"]: i for i in json.loads(_run(client, "ip -j addr show"))}
    assert any(a["local"] == "10.0.2.15" and a["prefixlen"] == 24 for a in addrs["prov0"]["addr_info"])
