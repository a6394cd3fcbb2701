"""dnsmasq configuration and a real DHCP exchange inside network namespaces."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest
import yaml

from cloudplan.errors import ProvisioningFailed, SpecError
from cloudplan.inventory import BootSpec, Node, ProvisioningConfig
from cloudplan.provision.bootserver import BootServer
from cloudplan.provision.pxe import Dnsmasq, check_config, render_dnsmasq_conf
from cloudplan.templating import render, templates_dir
from netns_fixture import in_netns, netns_pair, ns_exec, ns_prefix, require_root_and, udhcpc

KNOWN_MAC = "02:00:00:00:00:01"
KNOWN_IP = "10.250.0.42"
RANGE = ("10.250.0.100", "10.250.0.150")
BOOT = BootSpec(kernel="http://10.250.0.1/linux", initrd="http://10.250.0.1/initrd.gz", cmdline="console=ttyS0")
HOST_ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0MdI1Y8Xh0cGvQxYkV5bWs3p6k9zIYV0wDzI8G1bQY root@r1-cmp-01"


def node(name: str, mac: str | None, ip: str | None = None) -> Node:
    return Node(name=name, role="compute", rack="r1", mac=mac, addresses={"provisioning": ip} if ip else {},
                bmc={"address": "192.0.2.10", "username": "admin", "password_env": "BMC_PW"})


NODES = [node("r1-cmp-01", KNOWN_MAC, KNOWN_IP), node("r1-cmp-02", "02:00:00:00:00:02"), node("r1-cmp-03", None)]


def cfg(**kw) -> ProvisioningConfig:
    base = {"http": "10.250.0.1:8080", "interface": "pxe0", "range": ",".join(RANGE)}
    return ProvisioningConfig(**{**base, **kw})


@pytest.fixture
def dnsmasq_bin() -> str:
    found = shutil.which("dnsmasq") or shutil.which("/usr/sbin/dnsmasq")
    if not found:
        pytest.fail("dnsmasq not found: install the Debian package dnsmasq")
    return found


@pytest.fixture
def state_dir():
    # dnsmasq drops to user nobody, which must reach its TFTP root and log: pytest's
    # tmp_path sits under a 0700 directory, so use a searchable one of our own.
    d = Path(tempfile.mkdtemp(prefix="cloudplan-pxe-"))
    d.chmod(0o755)
    yield d / "state"
    shutil.rmtree(d, ignore_errors=True)


def write_conf(tmp_path: Path, c: ProvisioningConfig, nodes=NODES) -> Path:
    text = render_dnsmasq_conf(c, http_url="http://10.250.0.1:8080", tftp_root=tmp_path / "tftp",
                               leases_file=tmp_path / "leases", nodes=nodes)
    (tmp_path / "tftp").mkdir(exist_ok=True)
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(text)
    return conf


def test_generated_config_passes_dnsmasq_test(tmp_path, dnsmasq_bin):
    conf = write_conf(tmp_path, cfg())
    res = subprocess.run([dnsmasq_bin, "--test", "-C", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "syntax check OK" in res.stderr + res.stdout
    text = conf.read_text()
    assert f"dhcp-host={KNOWN_MAC},{KNOWN_IP},r1-cmp-01" in text
    assert "dhcp-host=02:00:00:00:00:02,r1-cmp-02" in text
    assert "r1-cmp-03" not in text  # no MAC, nothing to pin
    assert "port=0" in text and "enable-tftp" in text and "bind-interfaces" in text
    assert "dhcp-boot=tag:ipxe,http://10.250.0.1:8080/boot.ipxe" in text
    assert "enable-ra" not in text


def test_ipv6_is_refused_not_half_served(tmp_path):
    """dhcp-boot is DHCPv4 only: an IPv6 range would start a DHCP server that boots nothing."""
    with pytest.raises(SpecError, match="IPv6 provisioning is not supported"):
        write_conf(tmp_path, cfg(range="fd00:250::100,fd00:250::1ff"),
                   nodes=[node("r1-cmp-01", KNOWN_MAC, "fd00:250::42")])


def test_leases_outlive_the_run(tmp_path, dnsmasq_bin):
    conf = write_conf(tmp_path, cfg(), nodes=NODES)
    check_config(conf, binary=dnsmasq_bin)
    text = conf.read_text()
    assert f"dhcp-range={RANGE[0]},{RANGE[1]},infinite" in text
    assert all(ln.endswith(",infinite") for ln in text.splitlines() if ln.startswith("dhcp-host="))


def test_rejected_config_names_the_problem(state_dir, dnsmasq_bin):
    d = Dnsmasq(cfg(), http_url="http://10.250.0.1:8080", state_dir=state_dir, nodes=NODES,
                extra=["dhcp-range=not-an-address"], binary=dnsmasq_bin)
    with pytest.raises(ProvisioningFailed, match=r"dnsmasq rejects .*line \d+") as ei:
        d.start()
    assert ei.value.step == "dhcp" and not d.running


@pytest.mark.parametrize("kw,field", [({"range": None}, "provisioning.range"),
                                      ({"range": "10.0.0.9,10.0.0.1"}, "provisioning.range"),
                                      ({"range": "10.0.0.1"}, "provisioning.range"),
                                      ({"interface": None}, "provisioning.interface")])
def test_config_needs_range_and_interface(tmp_path, kw, field):
    with pytest.raises(SpecError) as ei:
        write_conf(tmp_path, cfg(**kw))
    assert ei.value.field == field


def test_missing_ipxe_binaries_do_not_break_the_config(state_dir, dnsmasq_bin):
    d = Dnsmasq(cfg(), http_url="http://10.250.0.1:8080", state_dir=state_dir, nodes=NODES,
                binary=dnsmasq_bin, ipxe_dirs=[state_dir / "nowhere"])
    check_config(d.write_config(), binary=dnsmasq_bin)
    assert list(d.tftp_root.iterdir()) == []


def test_ipxe_binaries_are_copied_world_readable(state_dir, dnsmasq_bin, tmp_path):
    src = tmp_path / "ipxe"
    src.mkdir()
    (src / "ipxe.efi").write_bytes(b"MZ fake efi")
    d = Dnsmasq(cfg(), http_url="http://10.250.0.1:8080", state_dir=state_dir, nodes=NODES,
                binary=dnsmasq_bin, ipxe_dirs=[src])
    d.write_config()
    copied = d.tftp_root / "ipxe.efi"
    assert copied.read_bytes() == b"MZ fake efi" and copied.stat().st_mode & stat.S_IROTH


def test_templates_are_strict(tmp_path, monkeypatch):
    (tmp_path / "t.j2").write_text("{{ missing }}")
    monkeypatch.setenv("CLOUDPLAN_TEMPLATES", str(tmp_path))
    assert templates_dir() == tmp_path
    with pytest.raises(ProvisioningFailed, match="t.j2: 'missing' is undefined"):
        render("t.j2", {}, error=ProvisioningFailed, step="x")


HOOK = """#!/bin/sh
# udhcpc hook: record what the server offered, one file per event.
env > "{out}.$1"
"""


def lease(out: Path) -> dict[str, str]:
    bound = out.with_name(out.name + ".bound")
    assert bound.exists(), "udhcpc got no lease"
    env = dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line)
    bound.unlink()
    return env


def wget(pair, url: str, post_data: str | None = None) -> str:
    args = ["busybox", "wget", "-q", "-O", "-"]  # (its -T option crashes busybox 1.35)
    if post_data is not None:
        args += ["--header", "Content-Type: application/x-www-form-urlencoded", "--post-data", post_data]
    return ns_exec(pair.client, *args, url).stdout


def test_dhcp_pxe_and_http_boot_across_namespaces(state_dir, dnsmasq_bin, tmp_path):
    require_root_and("busybox", "ip", "dnsmasq")
    out = tmp_path / "lease"
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK.format(out=out))
    hook.chmod(0o755)
    events: list[tuple[str, str, str]] = []
    token = secrets.token_urlsafe(24)

    with netns_pair("cpxe") as pair:
        boot = BootServer(pair.server_ip, 0, boot=BOOT, ssh_public_key=HOST_ED,
                          on_event=lambda *e: events.append(e))
        in_netns(pair.server, boot.start)  # its socket lives in the server namespace
        try:
            boot.register(NODES[0], token)
            c = cfg(http=f"{pair.server_ip}:{boot.port}", interface=pair.server_if)
            dns = Dnsmasq(c, http_url=boot.url, state_dir=state_dir, nodes=NODES, binary=dnsmasq_bin,
                          command_prefix=ns_prefix(pair.server))
            with dns:
                assert dns.running
                # An unknown machine, plain BIOS PXE: an address from the range, the BIOS iPXE image.
                pair.set_client_mac("02:00:00:00:00:99")
                res = udhcpc(pair, str(hook))
                got = lease(out)
                assert res.returncode == 0, res.stderr
                first, last = (ipaddress.ip_address(a) for a in RANGE)
                assert first <= ipaddress.ip_address(got["ip"]) <= last
                assert got["boot_file"] == "undionly.kpxe" and got["siaddr"] == pair.server_ip
                assert "router" not in got  # the provisioning host does not route

                # The known node: its inventory address; UEFI firmware (option 93 = 7) gets ipxe.efi.
                pair.set_client_mac(KNOWN_MAC)
                udhcpc(pair, str(hook), "-x", "0x5d:0007")
                got = lease(out)
                assert got["ip"] == KNOWN_IP and got["boot_file"] == "ipxe.efi"
                assert got["lease"] == str(2**32 - 1)   # infinite: the address outlives the run

                # iPXE itself (it sends option 175) is sent to the HTTP chain script.
                udhcpc(pair, str(hook), "-x", "0x5d:0007", "-x", "0xaf:b10101")
                got = lease(out)
                assert got["ip"] == KNOWN_IP and got["boot_file"] == f"{boot.url}/boot.ipxe"
                # ... and so is a client announcing user class "iPXE" (option 77).
                udhcpc(pair, str(hook), "-x", "0x4d:69505845")
                assert lease(out)["boot_file"] == f"{boot.url}/boot.ipxe"
                assert any(ln["ip"] == KNOWN_IP and ln["mac"] == KNOWN_MAC for ln in dns.leases())

                # Now what iPXE does next, over HTTP from the node's namespace.
                pair.set_client_ip(KNOWN_IP)
                chain = wget(pair, got["boot_file"])
                assert chain.startswith("#!ipxe") and f"{boot.url}/boot/${{mac:hexhyp}}/${{uuid}}" in chain
                # iPXE's ${mac:hexhyp}/${uuid}; this firmware reports no UUID.
                script = wget(pair, f"{boot.url}/boot/{KNOWN_MAC.replace(':', '-')}/")
                assert f"kernel --name kernel {BOOT.kernel} initrd=initrd console=ttyS0 " \
                       f"ds=nocloud;s={boot.url}/nocloud/r1-cmp-01/" in script
                user_data = yaml.safe_load(wget(pair, f"{boot.url}/nocloud/r1-cmp-01/user-data"))
                assert user_data["phone_home"]["url"] == f"{boot.url}/phone-home/r1-cmp-01/{token}"
                wget(pair, user_data["phone_home"]["url"],
                     post_data=urllib.parse.urlencode({"pub_key_ed25519": HOST_ED, "hostname": "r1-cmp-01"}))
                home = boot.wait_phone_home("r1-cmp-01", timeout_s=30)
                assert home.address == KNOWN_IP and home.host_key == " ".join(HOST_ED.split()[:2])
            assert not dns.running
            pid = int(dns.pid_file.read_text())
            assert not os.path.exists(f"/proc/{pid}")  # dnsmasq really gone
        finally:
            boot.stop()
    kinds = [e[1] for e in events]
    assert kinds == ["ipxe-served", "user-data-served", "phone-home"]
