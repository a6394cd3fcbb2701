"""DHCP through a relay: a node on another L3 segment gets its subnet's lease and reaches the boot service.

Three network namespaces the test creates: cloudplan's host (its dnsmasq and
boot server on 10.250.0.1), a router between the segments running a real
DHCP relay (dnsmasq's ``dhcp-relay``, as a rack's top-of-rack switch would),
and a node on 10.20.1.0/24 asking with busybox ``udhcpc``.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
import time

import pytest
from netns_fixture import in_netns, netns_pair, ns_exec, ns_prefix, require_root_and, sh, udhcpc
from test_pxe import BOOT, HOOK, cfg, dnsmasq_bin, lease, state_dir, wget  # noqa: F401 - fixtures

from cloudplan.provision.bootserver import BootServer
from cloudplan.provision.pxe import Dnsmasq

SUBNET, RANGE, ROUTER = "10.20.1.0/24", ("10.20.1.100", "10.20.1.120"), "10.20.1.1"


def test_a_node_behind_a_relay_gets_its_subnets_lease_and_reaches_the_boot_service(state_dir, dnsmasq_bin,
                                                                                    tmp_path):
    require_root_and("busybox", "ip", "dnsmasq")
    hook = tmp_path / "hook.sh"
    out = tmp_path / "lease"
    hook.write_text(HOOK.format(out=out))
    hook.chmod(0o755)
    with netns_pair("crly") as pair:
        relay = f"crly-r-{secrets.token_hex(3)}"
        sh("ip", "netns", "add", relay)
        relay_proc = None
        try:
            # Re-cable: server pxe0 <-> relay up0, relay down0 <-> client node0.
            sh("ip", "-n", pair.client, "link", "del", pair.client_if)
            sh("ip", "link", "add", "up0", "netns", relay, "type", "veth", "peer", "name", "pxe0", "netns",
               pair.server)
            sh("ip", "link", "add", "down0", "netns", relay, "type", "veth", "peer", "name", pair.client_if,
               "netns", pair.client)
            sh("ip", "-n", pair.server, "addr", "add", f"{pair.server_ip}/24", "dev", "pxe0")
            sh("ip", "-n", relay, "addr", "add", "10.250.0.2/24", "dev", "up0")
            sh("ip", "-n", relay, "addr", "add", f"{ROUTER}/24", "dev", "down0")
            for ns, ifs in ((pair.server, ["pxe0"]), (relay, ["lo", "up0", "down0"]), (pair.client, [pair.client_if])):
                for i in ifs:
                    sh("ip", "-n", ns, "link", "set", i, "up")
            sh("ip", "-n", pair.server, "route", "add", SUBNET, "via", "10.250.0.2")
            ns_exec(relay, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            relay_log = tmp_path / "relay.log"
            relay_proc = subprocess.Popen(
                [*ns_prefix(relay), dnsmasq_bin, "--keep-in-foreground", "--port=0", "--no-resolv", "--no-hosts",
                 f"--dhcp-relay={ROUTER},{pair.server_ip}", "--interface=down0", "--interface=up0",
                 "--except-interface=lo", f"--pid-file={tmp_path / 'relay.pid'}", "--log-dhcp",
                 f"--log-facility={relay_log}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

            boot = BootServer(pair.server_ip, 0, boot=BOOT)
            in_netns(pair.server, boot.start)
            try:
                c = cfg(http=f"{pair.server_ip}:{boot.port}", interface="pxe0",
                        relays=[{"cidr": SUBNET, "range": ",".join(RANGE), "router": ROUTER}])
                with Dnsmasq(c, http_url=boot.url, state_dir=state_dir, nodes=[], binary=dnsmasq_bin,
                             command_prefix=ns_prefix(pair.server)) as dns:
                    time.sleep(0.5)   # the relay binds its sockets
                    pair.set_client_mac("02:00:00:00:20:01")
                    res = udhcpc(pair, str(hook), "-x", "0xaf:b10101")   # as iPXE asks
                    assert res.returncode == 0, (res.stdout, res.stderr, relay_log.read_text(errors="replace"))
                    got = lease(out)
                    first, last = (ipaddress.ip_address(a) for a in RANGE)
                    assert first <= ipaddress.ip_address(got["ip"]) <= last, got
                    assert got["router"] == ROUTER and got["boot_file"] == f"{boot.url}/boot.ipxe", got
                    assert any(ln["ip"] == got["ip"] for ln in dns.leases())
                    # and the boot service answers the node across the router
                    sh("ip", "-n", pair.client, "addr", "add", f"{got['ip']}/24", "dev", pair.client_if)
                    sh("ip", "-n", pair.client, "route", "add", "default", "via", ROUTER)
                    assert wget(pair, f"{boot.url}/boot.ipxe").startswith("#!ipxe")
            finally:
                boot.stop()
        finally:
            if relay_proc is not None:
                relay_proc.terminate()
                relay_proc.wait(timeout=10)
            sh("ip", "netns", "del", relay, check=False)


def test_relay_subnets_are_checked():
    with pytest.raises(ValueError, match="router 10.20.2.1 is outside"):
        cfg(relays=[{"cidr": SUBNET, "range": ",".join(RANGE), "router": "10.20.2.1"}])
    with pytest.raises(ValueError, match="IPv6"):
        cfg(relays=[{"cidr": "fd00::/64", "range": "fd00::10,fd00::20", "router": "fd00::1"}])
