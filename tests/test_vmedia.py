"""Virtual media and UEFI HTTP boot: the per-node ISO checked by xorriso/isoinfo/mtools,
and the orchestrator driving sushy-tools' Redfish emulator end to end.

The test plays the machine the way firmware would: once the emulator shows the
node powered on with the ISO inserted and the CD (or the HTTP boot URL) as its
boot target, it fetches the ISO from the URL the BMC recorded, reads the seed
from the CD (xorriso), takes the static address from its network-config, and
phones home from that address with the host key of the node's real sshd."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.parse
import urllib.error
import urllib.request
from http.client import HTTPConnection
from pathlib import Path

import pytest
import yaml
from provision_fixtures import Sshd, free_tcp_port, keygen, need
from redfish_fixtures import RF_PASSWORD, Emulator, FakeSystem, FaultProxy, ca  # noqa: F401

from cloudplan.errors import BMCError
from cloudplan.inventory import Inventory
from cloudplan.provision.boot import iso as isolib
from cloudplan.provision.boot import seed as seedlib
from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions, plan
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore

PW_ENV = "CLOUDPLAN_TEST_RF_PASSWORD"


def _boot_files(tmp: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp / "vmlinuz", tmp / "initrd.img"
    kernel.write_bytes(b"MZ" + b"\x01" * 200_000)     # stands in for a kernel: the ISO is checked, not booted
    initrd.write_bytes(b"\x1f\x8b" + b"\x02" * 100_000)
    return kernel, initrd


def _extract(iso: Path, inside: str, out: Path) -> str:
    subprocess.run([need("xorriso"), "-osirrox", "on", "-indev", str(iso), "-extract", inside, str(out)],
                   check=True, capture_output=True)
    return out.read_text(errors="replace")


def _inventory(tmp: Path, nodes: list[dict], *, http_port: int, ssh_port: int, key: Path) -> Inventory:
    kernel, initrd = _boot_files(tmp)
    return Inventory.model_validate({
        "name": "vm",
        "provisioning": {"http": f"127.0.0.1:{http_port}", "dhcp": False, "boot_path": "vmedia",
                         "boot": {"kernel": f"file://{kernel}", "initrd": str(initrd), "cmdline": "console=ttyS0"},
                         "ssh_port": ssh_port, "ssh_private_key_file": str(key),
                         "ssh_public_key_file": f"{key}.pub"},
        "networks": {"provisioning": {"cidr": "127.0.0.0/8", "gateway": "127.0.0.1"}},
        "nodes": [{"name": n["name"], "role": "compute", "rack": "r1", "boot_mode": n.get("boot_mode", "uefi"),
                   **({"boot": n["boot"]} if "boot" in n else {}),
                   "addresses": {"provisioning": n["address"]},
                   "bmc": {"driver": "redfish", "address": n["url"], "system": n["system"],
                           "ca_file": n["ca_file"], "username": "admin", "password_env": PW_ENV}}
                  for n in nodes]})


def test_deploy_iso_boots_uefi_and_legacy_and_carries_a_static_seed(tmp_path):
    for tool in ("grub-mkrescue", "xorriso", "isoinfo", "mdir"):
        need(tool)
    assert isolib.missing_tools() == []
    key = tmp_path / "id"
    keygen(key)
    inv = _inventory(tmp_path, [{"name": "vm1", "address": "127.0.0.41", "url": "https://bmc1", "system":
                                 "/redfish/v1/Systems/1", "ca_file": str(key)}],
                     http_port=1, ssh_port=22, key=key)
    node = inv.nodes[0]
    seed = seedlib.render_seed(inv, node, phone_home_url="http://127.0.0.1:1/phone-home/vm1/" + "t" * 32,
                               ssh_authorized_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"])
    kernel, initrd = _boot_files(tmp_path)
    out = isolib.build_iso(isolib.IsoContent("vm1", kernel, initrd,
                                             seedlib.kernel_cmdline(inv, node, inv.provisioning.boot), seed),
                           tmp_path / "out" / "vm1.iso")
    report = isolib.el_torito_report(out)
    boot_imgs = [ln.split() for ln in report.splitlines() if ln.startswith("El Torito boot img :")]
    platforms = {row[6] for row in boot_imgs}   # "El Torito boot img : N Pltf ..."
    assert platforms == {"BIOS", "UEFI"}, report       # one entry per firmware kind
    info = subprocess.run(["isoinfo", "-d", "-i", str(out)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: CIDATA" in info                  # cloud-init's NoCloud finds the seed by this label
    efi = tmp_path / "efi.img"
    _extract(out, "/efi.img", efi)
    listing = subprocess.run(["mdir", "-b", "-i", str(efi), "::/efi/boot"], capture_output=True, text=True).stdout
    assert "bootx64.efi" in listing.lower(), listing
    grub = _extract(out, "/boot/grub/grub.cfg", tmp_path / "grub.cfg")
    assert "ip=127.0.0.41::127.0.0.1:255.0.0.0:vm1::off" in grub and "ds=nocloud" in grub and "console=ttyS0" in grub
    net = yaml.safe_load(_extract(out, "/network-config", tmp_path / "nc"))
    nic = net["ethernets"]["prov0"]
    assert nic["addresses"] == ["127.0.0.41/8"] and nic["dhcp4"] is False
    assert nic["routes"] == [{"to": "default", "via": "127.0.0.1"}]
    user = yaml.safe_load(_extract(out, "/user-data", tmp_path / "ud"))
    assert user["phone_home"]["url"].endswith("/phone-home/vm1/" + "t" * 32)
    assert _extract(out, "/boot/vmlinuz", tmp_path / "k").encode(errors="replace")[:2] == b"MZ"
    assert oct(out.stat().st_mode & 0o777) == "0o600"   # it holds the phone-home token


class MachinePlayer:
    """Plays Redfish machines from what their emulator recorded (see the module docstring)."""

    def __init__(self, emu: Emulator, machines: dict[str, dict], tmp: Path, ignore: set[str] = frozenset(),
                 proxy: FaultProxy | None = None):
        self.emu, self.machines, self.tmp, self.proxy = emu, machines, tmp, proxy
        self.ignore = set(ignore)        # image URLs a machine must not boot (left by an earlier run)
        self.log: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(10)

    def _loop(self):
        done: set[str] = set()
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline and len(done) < len(self.machines):
            for name, m in self.machines.items():
                if name in done:
                    continue
                try:
                    url = self._boot_image(m)
                    if url and url not in self.ignore and self._reset_since(name, m, url):
                        self._boot(name, m, url)
                        done.add(name)
                except Exception as err:  # recorded for the test to assert on
                    self.log.append((name, f"player error: {err!r}"))
                    done.add(name)
            time.sleep(0.3)

    def _reset_since(self, name: str, m: dict, url: str) -> bool:
        """Firmware boots the media it finds at a power-on or reset, not media put into a running
        machine: with the proxy's record of requests, boot only after a reset that followed the
        last request arming this boot (InsertMedia, or the boot override PATCH for HTTP boot)."""
        if self.proxy is None:
            return True
        sys_path = m["system"].path
        reset = f"{sys_path}/Actions/ComputerSystem.Reset"
        armed_at, reset_after = -1, False
        for i, x in enumerate(list(self.proxy.seen)):
            path = x.path.rstrip("/")
            if (x.method == "POST" and path.startswith(sys_path) and path.endswith("VirtualMedia.InsertMedia")) or \
                    (x.method == "PATCH" and path == sys_path):
                armed_at, reset_after = i, False
            elif x.method == "POST" and path == reset and armed_at >= 0:
                reset_after = True
        return reset_after

    def _boot_image(self, m: dict) -> str | None:
        """The URL the firmware would boot from now, or None while the node is off."""
        sysj = self.emu.system_json(m["system"])
        if sysj["PowerState"] != "On":
            return None
        boot = sysj["Boot"]
        if m["boot"] == "vmedia":
            cd = self.emu.cd_json(m["system"])
            return cd["Image"] if boot["BootSourceOverrideTarget"] == "Cd" and cd.get("Inserted") else None
        uri = boot.get("HttpBootUri")
        return uri if uri and uri != "None" else None

    def _boot(self, name: str, m: dict, url: str) -> None:
        iso = self.tmp / f"{name}-booted.iso"
        urllib.request.urlretrieve(url, iso)
        self.log.append((name, f"booted {m['boot']} {urllib.parse.urlsplit(url).path.split('/')[1]}"))
        net = yaml.safe_load(_extract(iso, "/network-config", self.tmp / f"{name}-nc"))
        address = net["ethernets"]["prov0"]["addresses"][0].split("/")[0]
        user = yaml.safe_load(_extract(iso, "/user-data", self.tmp / f"{name}-ud"))
        u = urllib.parse.urlsplit(user["phone_home"]["url"])
        conn = HTTPConnection(u.hostname, u.port, timeout=10, source_address=(address, 0))
        body = urllib.parse.urlencode({"pub_key_ed25519": m["host_key"], "hostname": name})
        conn.request("POST", u.path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        rsp = conn.getresponse()
        rsp.read()
        conn.close()
        self.log.append((name, f"phone-home {rsp.status} from {address}"))


@pytest.mark.root
def test_vmedia_and_http_boot_deploy_through_the_redfish_emulator(ca, tmp_path, monkeypatch):
    for tool in ("grub-mkrescue", "xorriso"):
        need(tool)
    monkeypatch.setenv(PW_ENV, RF_PASSWORD)
    key = tmp_path / "id_ed25519"
    pub = keygen(key)
    ssh_port, http_port = free_tcp_port(), free_tcp_port()
    systems = {"vm1": FakeSystem("vm1"), "hb1": FakeSystem("hb1")}
    addresses = {"vm1": "127.0.0.51", "hb1": "127.0.0.52"}
    with Emulator(list(systems.values()), tls=ca.issue("deploy-emu"), password=RF_PASSWORD) as emu, \
            FaultProxy(emu.url, ca.issue("deploy-proxy"), upstream_ca=str(ca.cert_file)) as proxy:
        sshds = {n: Sshd(n, addresses[n], ssh_port, tmp_path / f"sshd-{n}", pub).start() for n in systems}
        try:
            inv = _inventory(tmp_path, [
                {"name": n, "address": addresses[n], "url": proxy.url, "system": systems[n].path,
                 "ca_file": str(ca.cert_file), **({"boot": "http"} if n == "hb1" else {})} for n in systems],
                http_port=http_port, ssh_port=ssh_port, key=key)
            planned = {p.name: p.actions for p in plan(inv, None, ProvisionOptions())}
            assert "insert it as virtual media" in planned["vm1"] and "eject the virtual media" in planned["vm1"]
            assert "set one-time UEFI HTTP boot to its URL" in planned["hb1"]
            machines = {n: {"system": systems[n], "boot": "http" if n == "hb1" else "vmedia",
                            "host_key": sshds[n].host_key} for n in systems}
            with MachinePlayer(emu, machines, tmp_path, proxy=proxy) as player, \
                    StateStore(tmp_path / "state.db", exclusive=True) as store:
                # The fake machine applies a power-on 1-11 s late: read power no sooner than that.
                result = Orchestrator(inv, store, ProvisionOptions(boot_timeout_s=90, power_check_s=15,
                                                                   ssh_timeout_s=30)).run()
                events = {n: [(e.kind, e.detail) for e in store.events(n)] for n in systems}
            assert result.ok, (result.errors, player.log, events)
            assert ("vm1", "booted vmedia vmedia") in player.log and ("hb1", "booted http vmedia") in player.log
            assert ("vm1", "phone-home 200 from 127.0.0.51") in player.log
            # virtual media: inserted, booted Once from CD, ejected after the phone-home, then the disk for good
            kinds = [k for k, _ in events["vm1"]]
            assert kinds.index("vmedia-inserted") < kinds.index("phone-home") < kinds.index("vmedia-ejected")
            cd = emu.cd_json(systems["vm1"])
            assert cd["Inserted"] is False and not cd.get("Image")
            boots = [(s.path.rsplit("/", 1)[-1], s.body["Boot"]) for s in proxy.seen
                     if s.method == "PATCH" and isinstance(s.body, dict)]
            vm1 = [b for p, b in boots if p == systems["vm1"].uuid]
            assert [(b["BootSourceOverrideTarget"], b["BootSourceOverrideEnabled"]) for b in vm1] == [
                ("Cd", "Once"), ("Hdd", "Continuous")]
            hb1 = [b for p, b in boots if p == systems["hb1"].uuid]
            assert hb1[0]["BootSourceOverrideTarget"] == "UefiHttp" and hb1[0]["BootSourceOverrideEnabled"] == "Once"
            assert hb1[0]["HttpBootUri"].startswith(f"http://127.0.0.1:{http_port}/vmedia/hb1/")
            for n in systems:
                assert emu.system_json(systems[n])["Boot"]["BootSourceOverrideTarget"] == "Hdd"
            assert "vmedia-served" in [k for k, _ in events["hb1"]]    # the emulator fetched it from cloudplan
            built = tmp_path / "state.d" / "vmedia"
            assert built.is_dir() and not list(built.glob("*.iso"))   # built there, removed once served out
        finally:
            for s in sshds.values():
                s.stop()


def test_ipmi_has_no_virtual_media_or_http_boot():
    from cloudplan.provision.bmc import IPMIClient

    c = IPMIClient(address="127.0.0.1", port=9, username="admin", password="pw", node="n")
    with pytest.raises(BMCError, match="not available over IPMI"):
        c.insert_media("http://x/y.iso")
    with pytest.raises(BMCError, match="UEFI HTTP boot"):
        c.set_bootdev("http", persist=False, uefi=True, url="http://x/y.iso")
    assert c.capabilities() == set()


def test_boot_server_serves_a_published_iso_in_ranges_and_forgets_it(tmp_path):
    from cloudplan.provision.bootserver import BootServer

    iso = tmp_path / "n1.iso"
    iso.write_bytes(bytes(range(256)) * 4096)
    served = []
    with BootServer("127.0.0.1", 0, on_event=lambda n, k, d: served.append((n, k))) as srv:
        url = srv.publish("n1", iso)
        assert url.startswith(srv.url + "/vmedia/n1/") and url.endswith(".iso")
        assert urllib.request.urlopen(url, timeout=5).read() == iso.read_bytes()
        req = urllib.request.Request(url, headers={"Range": "bytes=256-511"})
        with urllib.request.urlopen(req, timeout=5) as rsp:
            assert rsp.status == 206 and rsp.headers["Content-Range"] == f"bytes 256-511/{iso.stat().st_size}"
            assert rsp.read() == bytes(range(256))
        head = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as rsp:
            assert int(rsp.headers["Content-Length"]) == iso.stat().st_size and rsp.read() == b""
        wrong_key = url.rsplit("/", 1)[0] + "/" + "x" * 24 + ".iso"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(wrong_key, timeout=5)
        srv.unpublish("n1")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url, timeout=5)
    assert served == [("n1", "vmedia-served")]     # one whole fetch; ranges and HEAD are not counted


@pytest.mark.root
def test_vmedia_resume_after_an_interrupted_run_replaces_the_inserted_iso(ca, tmp_path, monkeypatch):
    """Run 1 stops once the node is powered on from its ISO (as a crash would leave it);
    run 2 boots it again with a fresh token: the stale ISO is ejected before the new one goes in."""
    need("xorriso")
    monkeypatch.setenv(PW_ENV, RF_PASSWORD)
    key = tmp_path / "id_ed25519"
    pub = keygen(key)
    ssh_port, http_port = free_tcp_port(), free_tcp_port()
    system = FakeSystem("rs1")
    with Emulator([system], tls=ca.issue("resume-emu"), password=RF_PASSWORD) as emu, \
            FaultProxy(emu.url, ca.issue("resume-proxy"), upstream_ca=str(ca.cert_file)) as proxy:
        sshd = Sshd("rs1", "127.0.0.61", ssh_port, tmp_path / "sshd", pub).start()
        try:
            inv = _inventory(tmp_path, [{"name": "rs1", "address": "127.0.0.61", "url": proxy.url,
                                         "system": system.path, "ca_file": str(ca.cert_file)}],
                             http_port=http_port, ssh_port=ssh_port, key=key)
            with StateStore(tmp_path / "state.db", exclusive=True) as store:
                first = Orchestrator(inv, store, ProvisionOptions(stop_at=NodeState.waiting_boot)).run()
            assert first.states["rs1"] is NodeState.waiting_boot
            stale = emu.cd_json(system)["Image"]
            assert stale and emu.cd_json(system)["Inserted"] is True
            deadline = time.monotonic() + 20          # the fake machine applies the power-on 1-11 s late
            while emu.system_json(system)["PowerState"] != "On" and time.monotonic() < deadline:
                time.sleep(0.5)
            machines = {"rs1": {"system": system, "boot": "vmedia", "host_key": sshd.host_key}}
            with MachinePlayer(emu, machines, tmp_path, ignore={stale}, proxy=proxy) as player, \
                    StateStore(tmp_path / "state.db", exclusive=True) as store:
                second = Orchestrator(inv, store, ProvisionOptions(boot_timeout_s=90, power_check_s=15,
                                                                   ssh_timeout_s=30)).run()
                events = [(e.kind, e.detail) for e in store.events("rs1")]
            assert second.ok, (second.errors, player.log, events)
            media = [(s.method, s.path.rsplit("/", 1)[-1]) for s in proxy.seen
                     if "VirtualMedia" in s.path and s.method in ("POST", "PATCH")]
            assert media == [("POST", "VirtualMedia.InsertMedia"),            # run 1
                             ("POST", "VirtualMedia.EjectMedia"), ("POST", "VirtualMedia.InsertMedia"),  # run 2
                             ("POST", "VirtualMedia.EjectMedia")]             # after its phone-home
            booted = [d for n, d in player.log if d.startswith("booted")]
            assert booted == ["booted vmedia vmedia"]                         # the fresh ISO, once
            power = [d for k, d in events if k == "power"]
            assert power[0].startswith("power on") and power[-1].startswith("power reset")   # run 2 found it on
        finally:
            sshd.stop()


def test_installer_files_are_fetched_once_per_run(tmp_path):
    from redfish_fixtures import FileServer

    from cloudplan.errors import ProvisioningFailed
    from cloudplan.provision.boot.vmedia import local_boot_file

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "vmlinuz").write_bytes(b"kernel-1")
    with FileServer(tmp_path / "www") as files:
        url = f"{files.url}/vmlinuz"
        got = local_boot_file(url, tmp_path / "cache", "kernel")
        assert got.read_bytes() == b"kernel-1"
        (tmp_path / "www" / "vmlinuz").write_bytes(b"kernel-2")
        assert local_boot_file(url, tmp_path / "cache", "kernel").read_bytes() == b"kernel-1"   # shared in a run
        with pytest.raises(ProvisioningFailed, match="cannot fetch boot.initrd"):
            local_boot_file(f"{files.url}/missing", tmp_path / "cache", "initrd")
    with pytest.raises(ProvisioningFailed, match="boot.kernel not found"):
        local_boot_file(str(tmp_path / "nothing"), tmp_path / "cache", "kernel")
