"""Real parts for the provisioning tests: sshd per node, ipmi_sim, a node player.

Everything listens on loopback only and is stopped by the fixture that started
it. A missing binary fails the test with a clear message (never a silent skip).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path

import pytest
import yaml

from cloudplan.lab.bmcsim.ipmi import Fault, FleetProcess, SimSpec
from cloudplan.lab.ports import free_tcp_port  # noqa: F401 - the tests take it from here

PASSWORD_ENV = "CLOUDPLAN_TEST_BMC_PASSWORD"
BMC_PASSWORD = "bmc-Secret-42x"


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        pytest.fail(f"{binary} is required by this test and is not installed (see APT_PACKAGES in the Makefile)")
    return path


def wait_tcp(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout_s} s")


def keygen(path: Path, kind: str = "ed25519") -> str:
    """Create a key pair; returns the public key line."""
    subprocess.run([need("ssh-keygen"), "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True)
    return Path(str(path) + ".pub").read_text().strip()


@dataclass
class Sshd:
    """A real sshd for one simulated node, on 127.0.0.x:port, in its own UTS
    namespace whose hostname is the node's name (SSH verification checks it)."""

    name: str
    address: str
    port: int
    workdir: Path
    authorized_key: str
    host_key: str = ""
    proc: subprocess.Popen | None = None

    def start(self) -> "Sshd":
        sshd, unshare = need("sshd"), need("unshare")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd refuses to start without its privilege-separation dir
        self.workdir.mkdir(parents=True, exist_ok=True)
        hk = self.workdir / "ssh_host_ed25519_key"
        self.host_key = keygen(hk)
        ak = self.workdir / "authorized_keys"
        ak.write_text(self.authorized_key + "\n")
        cfg = self.workdir / "sshd_config"
        cfg.write_text(
            f"ListenAddress {self.address}:{self.port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nPermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\n")
        self.proc = subprocess.Popen(
            [unshare, "--uts", "sh", "-c", f'hostname "$1" && exec "$2" -D -e -f "$3"', "sh",
             self.name, sshd, str(cfg)],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "sshd.log", "w"))
        wait_tcp(self.address, self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@dataclass
class NodePlayer:
    """Plays the machines: when a simulated BMC powers a node on from the network,
    fetch its iPXE script and user-data from the boot server and phone home with
    the token found in the user-data and the host key of the node's sshd.

    ``behaviour[name]``: "normal", "never" (never phones home), "wrong-token",
    "wrong-key" (reports a host key its sshd does not have), "never-first" (phones
    home from the second network boot on), "dies-first" (its first boot ends in a
    power-off before the phone-home, as a crash or a pulled cable would).

    With ``base_urls`` (several cloudplan hosts, each its own boot server) the machine
    asks each in turn and boots from the one whose script boots it (the others
    answer "no node expected"); ``log`` records which ("served by URL")."""

    base_url: str
    nodes: dict[str, dict]                    # name -> {"mac", "uuid", "address", "host_key"}
    behaviour: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    other_key: str = ""
    boot_count: dict[str, int] = field(default_factory=dict)
    base_urls: list[str] = field(default_factory=list)
    # Image deploys: what each machine's root disk holds (the seed image its deploy ramdisk wrote), and
    # the pace of the play: seconds between reports, before powering off, before the phone-home.
    disks: dict[str, bytes] = field(default_factory=dict)
    pace: dict[str, dict[str, float]] = field(default_factory=dict)
    _sims: dict = field(default_factory=dict)
    generation: dict[str, int] = field(default_factory=dict)

    def on_power_on(self, sim, device: str) -> None:
        name = sim.name
        # A power command ends whatever the machine ran before (a play still sleeping in its thread).
        self.generation[name] = self.generation.get(name, 0) + 1
        if device != "network" and name in self.disks:
            try:
                self._first_boot(name, self.nodes[name])
            except Exception as err:
                self.log.append((name, f"player error: {err!r}"))
            return
        if device != "network" or name not in self.nodes:
            self.log.append((name, f"booted {device}"))
            return
        how = self.behaviour.get(name, "normal")
        self.boot_count[name] = self.boot_count.get(name, 0) + 1
        if how == "never-first" and self.boot_count[name] == 1:
            how = "never"
        if how == "dies-first" and self.boot_count[name] == 1:
            sim.power = "off"
            self.log.append((name, "powered off mid-install"))
            return
        if how == "never":
            self.log.append((name, "never phones home"))
            return
        info = self.nodes[name]
        try:
            self._sims[name] = sim
            self._boot(name, info, how)
        except Exception as err:  # recorded for the test to assert on
            self.log.append((name, f"player error: {err!r}"))

    def _get(self, path: str, source: str, base_url: str | None = None) -> str:
        u = urllib.parse.urlsplit(base_url or self.base_url)
        conn = HTTPConnection(u.hostname, u.port, timeout=10, source_address=(source, 0))
        try:
            conn.request("GET", path)
            rsp = conn.getresponse()
            body = rsp.read().decode()
            assert rsp.status == 200, (path, rsp.status, body)
            return body
        finally:
            conn.close()

    def _fetch(self, url: str, source: str) -> bytes:
        u = urllib.parse.urlsplit(url)
        conn = HTTPConnection(u.hostname, u.port, timeout=30, source_address=(source, 0))
        try:
            conn.request("GET", u.path)
            rsp = conn.getresponse()
            body = rsp.read()
            assert rsp.status == 200, (url, rsp.status)
            return body
        finally:
            conn.close()

    def _post(self, url: str, fields: dict, source: str) -> int:
        u = urllib.parse.urlsplit(url)
        conn = HTTPConnection(u.hostname, u.port, timeout=10, source_address=(source, 0))
        try:
            conn.request("POST", u.path, body=urllib.parse.urlencode(fields),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            rsp = conn.getresponse()
            rsp.read()
            return rsp.status
        finally:
            conn.close()

    def _deploy(self, sim, name: str, info: dict, script: str, how: str) -> None:
        """The deploy ramdisk's part, from the arguments on the iPXE script's kernel line: fetch and
        check the image and the seed, report each step with the token, power off."""
        args = dict(a.split("=", 1) for a in script.split() if a.startswith("cloudplan."))
        src, pace, gen = info["address"], self.pace.get(name, {}), self.generation[name]
        image = self._fetch(args["cloudplan.image_url"], src)
        seed = self._fetch(args["cloudplan.seed_url"], src)
        ok = hashlib.sha256(image).hexdigest() == args["cloudplan.image_sha256"] and \
            hashlib.sha256(seed).hexdigest() == args["cloudplan.seed_sha256"]
        steps = ["started", "root-disk", "image-written", "image-verified", "seed-written", "data-wiped", "done"]
        if how == "deploy-fails" or not ok:
            steps = ["started", "root-disk", "image-written", "failed"]
        for step in steps:
            if self.generation[name] != gen:
                return
            status = self._post(args["cloudplan.report_url"], {
                "token": args["cloudplan.token"], "step": step, "root_disk": "vda", "root_serial": "ROOT1",
                "sha256_ok": "" if step in ("started", "root-disk", "image-written") else str(ok).lower(),
                "error": "image-verified: sha256 mismatch" if step == "failed" else ""}, src)
            self.log.append((name, f"report {step} {status}"))
            time.sleep(pace.get("report_s", 0.0))
        if step == "done":
            self.disks[name] = seed
        time.sleep(pace.get("poweroff_s", 0.0))
        if self.generation[name] != gen:
            return
        sim.power = "off"
        self.log.append((name, "deploy ramdisk powered off"))

    def _first_boot(self, name: str, info: dict) -> None:
        """The installed OS's cloud-init: read the seed from the disk, phone the host key home."""
        gen = self.generation[name]
        time.sleep(self.pace.get(name, {}).get("first_boot_s", 0.0))
        if self.generation[name] != gen:
            return
        with tempfile.NamedTemporaryFile(suffix=".img") as f:
            f.write(self.disks[name])
            f.flush()
            user_data = subprocess.run([need("mcopy"), "-i", f.name, "::user-data", "-"], capture_output=True,
                                       text=True, check=True).stdout
        ph = yaml.safe_load(user_data)["phone_home"]
        status = self._post(ph["url"], {"pub_key_ed25519": info["host_key"], "hostname": name,
                                        "instance_id": name}, info["address"])
        self.log.append((name, f"installed OS phone-home {status}"))

    def _boot(self, name: str, info: dict, how: str) -> None:
        src = info["address"]
        ipxe = f"/boot/{info['mac']}/{info.get('uuid') or ''}".rstrip("/")
        base = self.base_url
        for base in self.base_urls or [self.base_url]:
            try:
                script = self._get(ipxe, src, base)
            except OSError:
                if not self.base_urls:
                    raise
                script = ""   # that host's run has ended and its boot server with it: ask the next
            if "kernel" in script:
                break
        if "cloudplan.image_url=" in script:
            self._deploy(self._sims[name], name, info, script, how)
            return
        assert name in script or "kernel" in script, script
        self.log.append((name, f"served by {base}"))
        user_data = self._get(f"/nocloud/{name}/user-data", src, base)
        self._get(f"/nocloud/{name}/meta-data", src, base)
        url = yaml.safe_load(user_data)["phone_home"]["url"]
        path = urllib.parse.urlsplit(url).path
        if how == "wrong-token":
            path = path.rsplit("/", 1)[0] + "/" + "x" * 32
        key = self.other_key if how == "wrong-key" else info["host_key"]
        body = urllib.parse.urlencode({"pub_key_ed25519": key, "hostname": name, "instance_id": name})
        u = urllib.parse.urlsplit(base)
        conn = HTTPConnection(u.hostname, u.port, timeout=10, source_address=(src, 0))
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
            rsp = conn.getresponse()
            rsp.read()
            self.log.append((name, f"phone-home {rsp.status}"))
        finally:
            conn.close()


@dataclass
class World:
    inventory: Path
    state: Path
    fleet: FleetProcess
    sshds: dict[str, Sshd]
    names: list[str]
    player: "NodePlayer"
    addresses: dict[str, str]     # node name -> the loopback address its machine speaks from
    http_ports: list[int] = field(default_factory=list)   # the boot server port of each cloudplan host


@pytest.fixture
def make_world(tmp_path, monkeypatch):
    """Build N simulated nodes: ``make_world({"name": dict(fault=..., play=..., password=...)})``.

    Each machine speaks from its own loopback address, which the inventory gives as its
    static provisioning address unless ``static=False``. ``hosts=2``: the machines also
    know a second cloudplan host's boot server (``World.http_ports[1]``)."""
    monkeypatch.setenv(PASSWORD_ENV, BMC_PASSWORD)
    started: list = []

    def build(nodes: dict[str, dict], hosts: int = 1, image: Path | None = None) -> World:
        key = tmp_path / "id_ed25519"
        pub = keygen(key)
        addresses = {n: f"127.0.0.{20 + i}" for i, n in enumerate(nodes)}
        ssh_port, http_ports = free_tcp_port(*addresses.values()), [free_tcp_port() for _ in range(hosts)]
        http_port = http_ports[0]
        sshds = {}
        for n, opts in nodes.items():
            if opts.get("sshd", True):
                sshds[n] = Sshd(n, addresses[n], ssh_port, tmp_path / f"sshd-{n}", pub).start()
                started.append(sshds[n])
        player = NodePlayer(
            f"http://127.0.0.1:{http_port}",
            # the machine's SMBIOS UUID is its BMC's system GUID (the simulators derive it from the name)
            {n: {"mac": mac_of(i), "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, n)), "address": addresses[n],
                 "host_key": sshds[n].host_key if n in sshds else ""}
             for i, n in enumerate(nodes)},
            behaviour={n: o.get("play", "normal") for n, o in nodes.items()},
            other_key=keygen(tmp_path / "other_host_key"),
            base_urls=[f"http://127.0.0.1:{p}" for p in http_ports] if hosts > 1 else [],
            pace={n: o["pace"] for n, o in nodes.items() if "pace" in o})
        specs = [SimSpec(name=n, password=o.get("password", BMC_PASSWORD), fault=o.get("fault", Fault.none),
                         silent_after=o.get("silent_after", 4)) for n, o in nodes.items()]
        fleet = FleetProcess(specs, on_power_on=player.on_power_on).start()
        started.append(fleet)
        inv = write_inventory(tmp_path / "inventory.yaml", [
            {"name": n, "bmc_port": fleet.ports[n], "mac": mac_of(i) if o.get("mac_known", True) else None,
             "boot_mode": o.get("boot_mode", "uefi"), "address": addresses[n] if o.get("static", True) else None}
            for i, (n, o) in enumerate(nodes.items())], http_port=http_port, ssh_port=ssh_port, ssh_key=key,
            image=image)
        return World(inv, tmp_path / "state.db", fleet, sshds, list(nodes), player, addresses, http_ports)

    yield build
    for thing in reversed(started):
        thing.stop()


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs of the test's own (needs root): filling it fills nothing else."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill_disk(path: Path) -> None:
    """Write ``path`` until its file system is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def write_inventory(path: Path, nodes: list[dict], *, http_port: int, ssh_port: int, ssh_key: Path,
                    image: Path | None = None) -> Path:
    """An inventory for simulated nodes; each dict: name, bmc_port, [mac], [uuid], [boot_mode], [username].
    With ``image``, an image deploy of that file (the provisioning network is loopback)."""
    data = {
        "name": "test",
        "provisioning": {
            "http": f"127.0.0.1:{http_port}", "dhcp": False,
            "boot": {"kernel": "http://127.0.0.1/vmlinuz", "initrd": "http://127.0.0.1/initrd",
                     "cmdline": "console=ttyS0"},
            "ssh_user": "root", "ssh_port": ssh_port,
            "ssh_private_key_file": str(ssh_key), "ssh_public_key_file": str(ssh_key) + ".pub",
        },
        "nodes": [{
            "name": n["name"], "role": "compute", "rack": "r1", **({"mac": n["mac"]} if n.get("mac") else {}),
            **({"uuid": n["uuid"]} if n.get("uuid") else {}),
            "boot_mode": n.get("boot_mode", "uefi"),
            **({"addresses": {"provisioning": n["address"]}} if n.get("address") else {}),
            "bmc": {"address": "127.0.0.1", "port": n["bmc_port"], "username": n.get("username", "admin"),
                    "password_env": PASSWORD_ENV},
        } for n in nodes],
    }
    if image is not None:
        data["provisioning"]["image"] = {"path": str(image)}
        data["networks"] = {"provisioning": {"cidr": "127.0.0.0/8", "interface": "eth0"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


IPMI_SIM_CHASSIS = r"""#!/bin/sh
# chassis_control for ipmi_sim: STATE_DIR get|set PARM [VALUE]...; keeps power and boot in files
d="$1"; shift; op="$1"; shift
echo "$op $*" >> "$d/calls.log"
if [ "$op" = get ]; then
  for p in "$@"; do
    case "$p" in
      power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)";;
      boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)";;
    esac
  done
  exit 0
fi
if [ "$op" = set ]; then
  while [ $# -ge 2 ]; do
    case "$1" in
      power) echo "$2" > "$d/power";;
      boot) echo "$2" > "$d/boot";;
    esac
    shift 2
  done
  exit 0
fi
exit 1
"""


@dataclass
class IpmiSim:
    """OpenIPMI's ipmi_sim on 127.0.0.1:port with a chassis_control script."""

    workdir: Path
    port: int
    password: str
    proc: subprocess.Popen | None = None

    def start(self) -> "IpmiSim":
        binary = need("ipmi_sim")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cc = self.workdir / "chassis_control"
        cc.write_text(IPMI_SIM_CHASSIS)
        cc.chmod(0o755)
        (self.workdir / "lan.conf").write_text(f"""name "cpsim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {self.port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{cc} {self.workdir}"
  user 2 true "admin" "{self.password}" admin 10 none md2 md5 straight
""")
        (self.workdir / "sim.emu").write_text(
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n")
        (self.workdir / "state").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.workdir / "lan.conf"), "-f", str(self.workdir / "sim.emu"),
             "-s", str(self.workdir / "state"), "-n"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "sim.log", "w"))
        # ready when ipmitool gets an answer
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ipmitool("chassis", "power", "status").returncode == 0:
                return self
            time.sleep(0.1)
        raise AssertionError(f"ipmi_sim did not answer on port {self.port}: {(self.workdir / 'sim.log').read_text()}")

    def ipmitool(self, *args: str) -> subprocess.CompletedProcess:
        return ipmitool(self.port, self.password, *args)

    def calls(self) -> list[str]:
        p = self.workdir / "calls.log"
        return p.read_text().splitlines() if p.exists() else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def ipmitool(port: int, password: str, *args: str, user: str = "admin") -> subprocess.CompletedProcess:
    # password via the environment (-E), so it is not on a command line
    return subprocess.run([need("ipmitool"), "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(port),
                           "-U", user, "-E", "-N", "1", "-R", "2", *args],
                          env={**os.environ, "IPMI_PASSWORD": password},
                          capture_output=True, text=True, timeout=30)


def stored_states(db: Path) -> dict:
    """Each node's stored state, read while a run may still be creating the file (then: none yet).
    A reader must not create the schema itself (see the SQLite store), so it waits like this."""
    from cloudplan.errors import StateMissing
    from cloudplan.provision.store import StateStore

    if not Path(db).exists():
        return {}
    try:
        st = StateStore(db, create=False)
    except StateMissing:
        return {}
    with st:
        return {r.name: r.state for r in st.nodes()}


def wait_for(cond, timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sigkill_when(proc: subprocess.Popen, cond, timeout_s: float, what: str) -> None:
    """SIGKILL ``proc`` once ``cond()`` holds (and, whatever happens, leave no process behind)."""
    try:
        wait_for(cond, timeout_s, what)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def mac_of(i: int) -> str:
    return f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"

