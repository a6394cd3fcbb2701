"""`cloudplan provision --dhcp` end to end: cloudplan's own dnsmasq hands out the lease.

The provisioning host side is the root network namespace: one end of a veth
pair gets the provisioning address and is the inventory's
``provisioning.interface``; the boot server listens on that address. The other
end lives in a namespace the test creates and carries the node's MAC; that
namespace is "the machine": its sshd runs there, and when the simulated BMC
powers the node on from the network, the player enters it, gets a lease from
cloudplan's dnsmasq with busybox udhcpc (first as UEFI firmware, then as iPXE),
puts the leased address on its interface and then does what
:class:`provision_fixtures.NodePlayer` does (iPXE script, user-data, meta-data,
phone-home), over the veth.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from netns_fixture import NetnsPair, in_netns, require_root_and, sh, udhcpc
from provision_fixtures import (BMC_PASSWORD, PASSWORD_ENV, NodePlayer, Sshd, free_tcp_port, keygen, mac_of,
                                write_inventory)

from cloudplan.cli import main
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore
from cloudplan.lab.bmcsim.ipmi import FleetProcess, SimSpec

pytestmark = pytest.mark.root

NODE = "dhcp-cmp-01"

# udhcpc hook: record what the server offered, one file per event.
HOOK = """#!/bin/sh
env > "{out}.$1"
"""


@dataclass
class DhcpNodePlayer(NodePlayer):
    """A :class:`NodePlayer` whose machine first gets its address from DHCP, inside its namespace.

    Runs in the simulated BMC's process (it must stay picklable); whatever goes
    wrong lands in ``log`` for the test to read back through ``hook_log()``."""

    netns: dict[str, str] = field(default_factory=dict)     # node -> namespace
    interface: str = ""                                      # the node side of the veth, in each namespace
    hook: str = ""                                           # udhcpc script
    range_: tuple[str, str] = ("", "")
    prefix_len: int = 24

    def on_power_on(self, sim, device: str) -> None:
        name = sim.name
        if device != "network" or name not in self.netns:
            return super().on_power_on(sim, device)
        try:
            in_netns(self.netns[name], lambda: self._dhcp_boot(sim, device))
        except Exception as err:  # recorded for the test to assert on
            self.log.append((name, f"player error: {err!r}"))

    def _lease(self, pair: NetnsPair, out: Path, *options: str) -> dict[str, str]:
        res = udhcpc(pair, self.hook, *options)
        bound = out.with_name(out.name + ".bound")
        assert bound.exists(), f"udhcpc got no lease: {res.stdout} {res.stderr}"
        env = dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line)
        bound.unlink()
        return env

    def _dhcp_boot(self, sim, device: str) -> None:
        name = sim.name
        pair = NetnsPair(server="", client=self.netns[name], client_if=self.interface, prefix_len=self.prefix_len)
        out = Path(self.hook).with_name("lease")
        first, last = (ipaddress.ip_address(a) for a in self.range_)

        # UEFI firmware PXE (client arch 7): an address from the range and the EFI iPXE image over TFTP.
        fw = self._lease(pair, out, "-x", "0x5d:0007")
        assert first <= ipaddress.ip_address(fw["ip"]) <= last, fw
        assert fw["boot_file"] == "ipxe.efi", fw
        # iPXE (option 175) asks again: the same address, sent to the boot server's chain script.
        ipxe = self._lease(pair, out, "-x", "0x5d:0007", "-x", "0xaf:b10101")
        assert ipxe["ip"] == fw["ip"], (fw, ipxe)
        chain_url = f"{self.base_url}/boot.ipxe"
        assert ipxe["boot_file"] == chain_url, ipxe
        self.log.append((name, f"lease {ipxe['ip']} boot_file {ipxe['boot_file']}"))

        pair.set_client_ip(ipxe["ip"])
        chain = self._get("/boot.ipxe", ipxe["ip"])
        assert chain.startswith("#!ipxe"), chain
        # then exactly what the loopback player does, from the leased address
        info = {**self.nodes[name], "address": ipxe["ip"]}
        self.nodes[name] = info
        self.boot_count[name] = self.boot_count.get(name, 0) + 1
        self._boot(name, info, self.behaviour.get(name, "normal"))


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_interface(w).network for ln in sh("ip", "-4", "-o", "addr").stdout.splitlines()
            for w in ln.split()[3:4]]
    for _ in range(100):
        net = ipaddress.ip_network(f"10.77.{random.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise AssertionError("no free 10.77.x.0/24 on this host")


def _dnsmasq_pids_for(conf: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if any(a.endswith(b"dnsmasq") for a in argv[:1]) and str(conf).encode() in argv:
                pids.append(int(d.name))
    return pids


@pytest.fixture
def world_dir():
    # dnsmasq drops to user nobody, which must reach its state dir (next to the state file)
    # and log: pytest's tmp_path sits under a 0700 directory, so use a searchable one.
    d = Path(tempfile.mkdtemp(prefix="cloudplan-dhcp-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_provision_with_dhcp_end_to_end(world_dir, monkeypatch, capsys):
    require_root_and("ip", "busybox", "dnsmasq", "sshd", "ipmitool")
    monkeypatch.setenv(PASSWORD_ENV, BMC_PASSWORD)
    suffix = secrets.token_hex(3)
    ns, host_if, node_if = f"cpdhcp-{os.getpid()}-{suffix}", f"cpd{suffix}h", f"cpd{suffix}n"
    net = _free_subnet()
    host_ip = str(net.network_address + 1)
    rng = (str(net.network_address + 100), str(net.network_address + 150))
    mac = mac_of(0x1d)
    started: list = []
    created_ns = created_link = False
    try:
        sh("ip", "netns", "add", ns)
        created_ns = True
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if, "netns", ns)
        created_link = True
        sh("ip", "addr", "add", f"{host_ip}/{net.prefixlen}", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "link", "set", node_if, "address", mac)
        sh("ip", "-n", ns, "link", "set", node_if, "up")

        key = world_dir / "id_ed25519"
        keygen(key)
        http_port, ssh_port = free_tcp_port(host_ip), free_tcp_port()
        # the machine's sshd lives in its namespace, on whatever address DHCP will give it
        sshd = Sshd(NODE, "0.0.0.0", ssh_port, world_dir / "sshd", Path(str(key) + ".pub").read_text().strip())
        in_netns(ns, sshd.start)
        started.append(sshd)

        hook = world_dir / "udhcpc-hook.sh"
        hook.write_text(HOOK.format(out=world_dir / "lease"))
        hook.chmod(0o755)
        base_url = f"http://{host_ip}:{http_port}"
        player = DhcpNodePlayer(base_url, {NODE: {"mac": mac, "address": "", "host_key": sshd.host_key}},
                                netns={NODE: ns}, interface=node_if, hook=str(hook), range_=rng,
                                prefix_len=net.prefixlen)
        fleet = FleetProcess([SimSpec(name=NODE, password=BMC_PASSWORD)], on_power_on=player.on_power_on).start()
        started.append(fleet)

        inv = write_inventory(world_dir / "inventory.yaml", [{"name": NODE, "bmc_port": fleet.ports[NODE],
                                                              "mac": mac}],
                              http_port=http_port, ssh_port=ssh_port, ssh_key=key)
        data = yaml.safe_load(inv.read_text())
        data["provisioning"].update({"http": f"{host_ip}:{http_port}", "dhcp": True, "interface": host_if,
                                     "range": ",".join(rng)})
        inv.write_text(yaml.safe_dump(data, sort_keys=False))
        state = world_dir / "state.db"
        state_dir = world_dir / "state.d"          # where the orchestrator keeps dnsmasq's files

        rc = main(["provision", str(inv), "--state", str(state), "--dhcp",
                   "--boot-timeout", "90", "--bmc-timeout", "30"])
        captured = capsys.readouterr()
        hook_log = fleet.hook_log()
        dns_log = (state_dir / "dnsmasq.log").read_text() if (state_dir / "dnsmasq.log").exists() else ""
        assert rc == 0, (captured.out, captured.err, hook_log, dns_log)

        with StateStore(state, create=False) as st:
            rec = st.get(NODE)
            kinds = [e.kind for e in st.events(NODE)]
        assert rec.state is NodeState.deployed, rec
        assert rec.facts["hostname"] == NODE
        assert {"ipxe-served", "user-data-served", "phone-home"} <= set(kinds), kinds

        # the machine got its address from cloudplan's dnsmasq and phoned home from it
        leased = [m for n, m in hook_log if n == NODE and m.startswith("lease ")]
        assert leased == [f"lease {leased[0].split()[1]} boot_file {base_url}/boot.ipxe"], hook_log
        ip = leased[0].split()[1]
        assert ipaddress.ip_address(rng[0]) <= ipaddress.ip_address(ip) <= ipaddress.ip_address(rng[1])
        assert (NODE, "phone-home 200") in hook_log, hook_log
        assert not [m for _, m in hook_log if "error" in m], hook_log
        assert rec.address == ip and rec.host_key == " ".join(sshd.host_key.split()[:2])
        assert f"DHCPACK({host_if}) {ip} {mac}" in dns_log, dns_log
        assert "ipxe.efi" in dns_log and f"{base_url}/boot.ipxe" in dns_log

        # dnsmasq was started by the run and is gone after it
        conf = state_dir / "dnsmasq.conf"
        assert f"interface={host_if}" in conf.read_text()
        pid = int((state_dir / "dnsmasq.pid").read_text())
        assert not os.path.exists(f"/proc/{pid}"), f"dnsmasq (pid {pid}) still running"
        assert _dnsmasq_pids_for(conf) == []
        assert fleet.commands()[NODE] == ["bootdev network uefi", "on", "bootdev hd persistent uefi"]
    finally:
        for thing in reversed(started):
            thing.stop()
        if created_link:
            sh("ip", "link", "del", host_if, check=False)
        if created_ns:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p), 9)
            sh("ip", "netns", "del", ns, check=False)
    assert ns not in sh("ip", "netns", "list").stdout
    assert sh("ip", "link", "show", host_if, check=False).returncode != 0
