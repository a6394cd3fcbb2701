"""BootServer on loopback: iPXE matching, NoCloud seed, phone-home."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuidlib
from http.client import HTTPConnection

import pytest
import yaml
from pydantic import ValidationError

from cloudplan.errors import ProvisioningFailed, ProvisioningTimeout
from cloudplan.inventory import BootSpec, Node, ProvisioningConfig
from cloudplan.provision.bootserver import BootServer, normalize_mac, uuid_forms

BOOT = BootSpec(kernel="http://mirror.example/installer/linux", initrd="http://mirror.example/installer/initrd.gz",
                cmdline="console=ttyS0,115200n8 autoinstall")
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeP0Rt1eHHCZEX5uA1lgt5nfUdyFCrS6ZNtFs2bC0ib operator@site"
HOST_ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0MdI1Y8Xh0cGvQxYkV5bWs3p6k9zIYV0wDzI8G1bQY root@r1-cmp-01"
HOST_RSA = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCp529H5COCjQErj6n3Uu4RZq81tQ7fJuNLn6QMYX3aLrv4y/9QQta32THICT2"
            "UPYdlZo902KMAC9tzylust2+LYEc0FRod0hExyLwlnd49dk2cLnEoc1Um1GY/rJFomdfqKWiKc/ofZ0X6WTECaiBCBUv5q7UVmZwaV1j"
            "GaoIwSw== root@r1-cmp-01")
HOST_ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE/NhMb9aDdh2ljHceF0foC1GUBsTqINI8+7f3ryeXHD attacker"
UUID_B = "4c4c4544-0042-3510-8054-b4c04f563532"
# The same SMBIOS UUID with its first three fields byte-swapped, as some firmware reports it.
UUID_B_SWAPPED = "44454c4c-4200-1035-8054-b4c04f563532"


def node(name: str, mac: str | None = None, uuid: str | None = None) -> Node:
    return Node(name=name, role="compute", rack="r1", mac=mac, uuid=uuid,
                bmc={"address": "192.0.2.10", "username": "admin", "password_env": "BMC_PW"})


NODE_A = node("r1-cmp-01", mac="02:00:00:00:00:01")
NODE_B = node("r1-cmp-02", uuid=UUID_B)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def post(url: str, fields: dict[str, str], *, as_json: bool = False) -> int:
    if as_json:
        data, ctype = json.dumps(fields).encode(), "application/json"
    else:  # what cloud-init's phone_home sends (requests with a dict body)
        data, ctype = urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def cloud_init_report(hostname: str) -> dict[str, str]:
    return {"pub_key_ed25519": HOST_ED + "\n", "pub_key_rsa": HOST_RSA + "\n", "pub_key_ecdsa": "N/A",
            "instance_id": f"{hostname}-abc", "hostname": hostname, "fqdn": f"{hostname}.example"}


@pytest.fixture
def events():
    return []


@pytest.fixture
def tokens():
    return {"r1-cmp-01": secrets.token_urlsafe(24), "r1-cmp-02": secrets.token_urlsafe(24)}


@pytest.fixture
def server(events, tokens):
    with BootServer("127.0.0.1", 0, boot=BOOT, ssh_public_key=USER_KEY + "\n",
                    on_event=lambda *e: events.append(e), read_timeout_s=1.0) as srv:
        srv.register(NODE_A, tokens["r1-cmp-01"])
        srv.register(NODE_B, tokens["r1-cmp-02"])
        yield srv


@pytest.fixture
def booted(server):
    """Both nodes have fetched their iPXE script, as their firmware does before anything else."""
    assert "nocloud/r1-cmp-01/" in get(f"{server.url}/boot/02-00-00-00-00-01/-")[1]
    assert "nocloud/r1-cmp-02/" in get(f"{server.url}/boot/02-00-00-00-00-77/{UUID_B}")[1]
    return server


def test_url_and_port(server):
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert get(server.url + "/healthz") == (200, "ok\n")


def test_chain_script_points_at_node_scripts(server):
    status, body = get(server.url + "/boot.ipxe")
    assert status == 200 and body.startswith("#!ipxe\n")
    assert f"chain --autofree {server.url}/boot/${{mac:hexhyp}}/${{uuid}}" in body


def test_ipxe_by_mac(server, events):
    status, body = get(f"{server.url}/boot/02-00-00-00-00-01/{uuidlib.uuid4()}")
    assert status == 200 and body.startswith("#!ipxe\n")
    assert f"kernel --name kernel {BOOT.kernel} initrd=initrd console=ttyS0,115200n8 autoinstall " \
           f"ds=nocloud;s={server.url}/nocloud/r1-cmp-01/" in body
    assert f"initrd --name initrd {BOOT.initrd}" in body
    assert ("r1-cmp-01", "ipxe-served", "to 127.0.0.1") in events


def test_ipxe_by_mac_in_query(server, events):
    status, body = get(f"{server.url}/boot?mac=02:00:00:00:00:01")
    assert status == 200 and "nocloud/r1-cmp-01/" in body


@pytest.mark.parametrize("reported", [UUID_B, UUID_B.upper(), UUID_B_SWAPPED, UUID_B_SWAPPED.upper()])
def test_ipxe_by_uuid_any_case_and_byte_order(server, events, reported):
    status, body = get(f"{server.url}/boot/02-00-00-00-00-77/{reported}")
    assert status == 200 and "nocloud/r1-cmp-02/" in body
    assert ("r1-cmp-02", "ipxe-served", "to 127.0.0.1") in events


def test_mac_wins_over_uuid(server):
    _, body = get(f"{server.url}/boot/02-00-00-00-00-01/{UUID_B}")
    assert "nocloud/r1-cmp-01/" in body


def test_unknown_node_gets_exit_script(server, events):
    status, body = get(f"{server.url}/boot/02-00-00-00-00-99/{uuidlib.uuid4()}")
    assert status == 200 and body.startswith("#!ipxe\n")
    assert "no node expected" in body and "exit 1" in body and "kernel" not in body
    assert events[-1][:2] == ("", "unknown-node") and "02:00:00:00:00:99" in events[-1][2]


def test_unregistered_node_is_unknown(server, events):
    server.unregister("r1-cmp-01")
    _, body = get(f"{server.url}/boot/02-00-00-00-00-01/-")
    assert "no node expected" in body
    assert get(f"{server.url}/nocloud/r1-cmp-01/user-data")[0] == 404


def test_user_data_is_cloud_config_with_phone_home(booted, events, tokens):
    server = booted
    status, body = get(f"{server.url}/nocloud/r1-cmp-01/user-data")
    assert status == 200 and body.splitlines()[0] == "#cloud-config"
    doc = yaml.safe_load(body)
    assert doc["hostname"] == "r1-cmp-01"
    assert doc["ssh_authorized_keys"] == [USER_KEY]
    assert doc["phone_home"]["url"] == f"{server.url}/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}"
    assert doc["phone_home"]["post"] == ["pub_key_ed25519", "pub_key_rsa", "pub_key_ecdsa", "instance_id",
                                         "hostname"]
    assert ("r1-cmp-01", "user-data-served", "") in events


def test_meta_and_vendor_data(booted):
    server = booted
    status, body = get(f"{server.url}/nocloud/r1-cmp-02/meta-data")
    meta = yaml.safe_load(body)
    assert status == 200 and meta["local-hostname"] == "r1-cmp-02"
    assert meta["instance-id"].startswith("r1-cmp-02-")
    status, body = get(f"{server.url}/nocloud/r1-cmp-02/vendor-data")
    assert status == 200 and body.startswith("#cloud-config")


def test_phone_home_form_encoded_like_cloud_init(booted, events, tokens, caplog):
    server = booted
    caplog.set_level(logging.DEBUG, logger="cloudplan")
    assert server.phoned_home("r1-cmp-01") is None
    url = f"{server.url}/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}"
    assert post(url, cloud_init_report("r1-cmp-01")) == 200
    home = server.wait_phone_home("r1-cmp-01", timeout_s=30)
    assert home.name == "r1-cmp-01"
    assert home.host_key == " ".join(HOST_ED.split()[:2])
    assert home.host_keys["pub_key_rsa"] == " ".join(HOST_RSA.split()[:2])
    assert "pub_key_ecdsa" not in home.host_keys
    assert home.address == "127.0.0.1" and home.mac == "02:00:00:00:00:01"
    assert home.hostname == "r1-cmp-01"
    assert server.phoned_home("r1-cmp-01") == home
    assert events[-1][:2] == ("r1-cmp-01", "phone-home")
    assert tokens["r1-cmp-01"] not in caplog.text
    assert "phone-home/r1-cmp-01/***" in caplog.text  # the access log is there, masked


def test_phone_home_json(booted, tokens):
    server = booted
    url = f"{server.url}/phone-home/r1-cmp-02/{tokens['r1-cmp-02']}"
    assert post(url, {"pub_key_ed25519": HOST_ED}, as_json=True) == 200
    home = server.wait_phone_home("r1-cmp-02", timeout_s=30)
    assert home.host_key == " ".join(HOST_ED.split()[:2]) and home.uuid == UUID_B


def test_wrong_token_is_403_and_records_nothing(booted, events, tokens, caplog):
    server = booted
    caplog.set_level(logging.DEBUG, logger="cloudplan")
    wrong = secrets.token_urlsafe(24)
    assert post(f"{server.url}/phone-home/r1-cmp-01/{wrong}", cloud_init_report("r1-cmp-01")) == 403
    assert server.phoned_home("r1-cmp-01") is None
    assert ("r1-cmp-01", "phone-home-rejected", "bad token") in events
    assert wrong not in caplog.text and tokens["r1-cmp-01"] not in caplog.text
    assert all(wrong not in " ".join(e) for e in events)


def test_token_is_one_time_a_replay_is_refused_and_records_nothing(booted, events, tokens):
    server = booted
    url = f"{server.url}/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}"
    assert post(url, cloud_init_report("r1-cmp-01")) == 200
    first = server.wait_phone_home("r1-cmp-01", timeout_s=30)
    assert post(url, {"pub_key_ed25519": HOST_ED2, "hostname": "evil"}) == 403
    assert server.phoned_home("r1-cmp-01") == first
    assert ("r1-cmp-01", "phone-home-rejected", "token already used") in events


def test_phone_home_for_unregistered_name_is_403(server, events):
    assert post(f"{server.url}/phone-home/r9-cmp-09/{secrets.token_urlsafe(24)}", cloud_init_report("x")) == 403
    assert ("", "phone-home-rejected", "node not expected: r9-cmp-09") in events


def test_phone_home_without_host_key_is_400(booted, events, tokens):
    server = booted
    url = f"{server.url}/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}"
    assert post(url, {"pub_key_ed25519": "N/A", "hostname": "r1-cmp-01"}) == 400
    assert server.phoned_home("r1-cmp-01") is None
    assert events[-1][:2] == ("r1-cmp-01", "phone-home-rejected")


def test_wait_phone_home_times_out(server):
    with pytest.raises(ProvisioningTimeout) as ei:
        server.wait_phone_home("r1-cmp-02", timeout_s=0.2)
    assert ei.value.node == "r1-cmp-02" and ei.value.step == "phone-home"


def test_wait_phone_home_uses_injected_clock():
    now = [1000.0]

    def clock() -> float:
        now[0] += 60  # every look at the clock is a minute later
        return now[0]

    srv = BootServer("127.0.0.1", 0, clock=clock, poll_interval_s=0.01)
    with pytest.raises(ProvisioningTimeout):
        srv.wait_phone_home("r1-cmp-01", timeout_s=600)


def test_new_token_forgets_old_phone_home(booted, tokens, events):
    server = booted
    post(f"{server.url}/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}", cloud_init_report("r1-cmp-01"))
    server.wait_phone_home("r1-cmp-01", timeout_s=30)
    server.register(NODE_A, tokens["r1-cmp-01"])  # same token: idempotent
    assert server.phoned_home("r1-cmp-01") is not None
    server.register(NODE_A, secrets.token_urlsafe(24))  # a new boot attempt
    assert server.phoned_home("r1-cmp-01") is None
    assert post(f"{server.url}/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}", cloud_init_report("x")) == 403
    assert events[-1] == ("r1-cmp-01", "phone-home-rejected", "token of an earlier boot attempt")


def test_register_refusals(server):
    with pytest.raises(ProvisioningFailed, match="MAC or an SMBIOS UUID"):
        server.register(node("r1-cmp-03"), secrets.token_urlsafe(24))
    with pytest.raises(ProvisioningFailed, match="token") as ei:
        server.register(node("r1-cmp-03", mac="02:00:00:00:00:03"), "short$")
    assert "short$" not in str(ei.value)


def test_no_boot_spec_says_so(events, tokens):
    with BootServer("127.0.0.1", 0, on_event=lambda *e: events.append(e)) as srv:
        srv.register(NODE_A, tokens["r1-cmp-01"])
        _, body = get(f"{srv.url}/boot/02:00:00:00:00:01/-")
    assert "no installer configured" in body and "kernel" not in body
    assert events[-1][:2] == ("r1-cmp-01", "boot-not-configured")


def test_port_in_use_is_provisioning_failed(server):
    with pytest.raises(ProvisioningFailed, match="cannot listen"):
        BootServer("127.0.0.1", server.port).start()


def test_identity_normalization():
    assert normalize_mac("02-00-00-00-00-0A") == "02:00:00:00:00:0a"
    assert normalize_mac("0200.0000.000a") == "02:00:00:00:00:0a"
    assert normalize_mac("not a mac") is None and normalize_mac("02:00:00:00:00") is None
    assert uuid_forms(UUID_B) == uuid_forms(UUID_B_SWAPPED)
    assert uuid_forms("garbage") == set()


def test_bad_boot_spec_is_500_not_a_broken_script(events, tokens, caplog):
    bad = BootSpec(kernel="http://mirror.example/linux extra", initrd="http://mirror.example/initrd")
    with BootServer("127.0.0.1", 0, boot=bad, on_event=lambda *e: events.append(e)) as srv:
        srv.register(NODE_A, tokens["r1-cmp-01"])
        status, _ = get(f"{srv.url}/boot/02:00:00:00:00:01/-")
    assert status == 500
    assert "boot.kernel must be a single URL" in caplog.text


# -- what a hostile or broken client can cost ---------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_idle_connections_are_capped_and_timed_out(events, tokens):
    """Idle connections from one client neither pile up nor stop other clients being served."""
    with BootServer("127.0.0.1", 0, boot=BOOT, read_timeout_s=0.5, max_per_client=8, max_connections=64) as srv:
        before = _open_fds()
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(200)]
        try:
            time.sleep(0.2)
            assert srv.open_connections() <= 8
            assert _open_fds() - before <= 200 + 8 + 4   # ours, the server's few, some slack
            # another address is still served while they sit there
            conn = HTTPConnection("127.0.0.1", srv.port, timeout=5, source_address=("127.0.0.2", 0))
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            conn.close()
            deadline = time.monotonic() + 10
            while srv.open_connections() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv.open_connections() == 0, "idle connections were never timed out"
        finally:
            for s in idle:
                s.close()


def test_a_half_sent_phone_home_times_out_and_records_nothing(booted, tokens, events):
    srv = booted
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(f"POST /phone-home/r1-cmp-01/{tokens['r1-cmp-01']} HTTP/1.0\r\nContent-Length: 400\r\n"
                  "Content-Type: application/x-www-form-urlencoded\r\n\r\npub_key_ed25519=ssh".encode())
        reply = b"".join(iter(lambda: s.recv(4096), b"")).decode()   # given up after the read timeout
    assert reply.startswith("HTTP/1.0 400") and "not received in time" in reply
    assert srv.phoned_home("r1-cmp-01") is None


@pytest.fixture
def fast_server(events, tokens):
    with BootServer("127.0.0.1", 0, boot=BOOT, on_event=lambda *e: events.append(e), read_timeout_s=1.0) as srv:
        srv.register(NODE_A, tokens["r1-cmp-01"])
        yield srv


def test_unauthenticated_requests_are_reported_once_and_counted(fast_server, events):
    url = f"{fast_server.url}/phone-home/r1-cmp-01/{secrets.token_urlsafe(24)}"
    for _ in range(300):
        assert post(url, cloud_init_report("r1-cmp-01")) == 403
    rejected = [e for e in events if e[1] == "phone-home-rejected"]
    assert rejected == [("r1-cmp-01", "phone-home-rejected", "bad token")]
    fast_server.stop()
    rejected = [e for e in events if e[1] == "phone-home-rejected"]
    assert rejected[-1] == ("r1-cmp-01", "phone-home-rejected", "299 more refused (not reported one by one)")


def test_client_text_cannot_forge_log_lines(fast_server, caplog):
    caplog.set_level(logging.DEBUG, logger="cloudplan")
    get(f"{fast_server.url}/boot/02-00-00-00-00-99/x%0aERROR%20cloudplan%20forged%20line%1b[31m")
    text = caplog.text
    assert "forged" in text                                # it is logged...
    assert all("\n" not in r.getMessage() and "\x1b" not in r.getMessage() for r in caplog.records)


def test_client_disconnects_are_no_tracebacks(fast_server, capfd):
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", fast_server.port))
        s.sendall(b"GET /boot/02-00-00-00-00-01/- HTTP/1.0\r\n" if i % 2 else b"GET /healthz HTTP/1.0\r\n\r\n")
        # reset, not a clean close: what a client that crashed or gave up sends
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert get(fast_server.url + "/healthz")[0] == 200
    time.sleep(0.5)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_wildcard_address_is_not_advertised(host):
    with pytest.raises(ProvisioningFailed, match="every address"):
        BootServer(host, 0)
    with pytest.raises(ValidationError, match="every address"):
        ProvisioningConfig(http=f"[{host}]:8080" if ":" in host else f"{host}:8080")


def test_a_host_key_must_parse_as_a_key(booted, tokens, events):
    url = f"{booted.url}/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}"
    forged = "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x07ssh-rsa" + b"x" * 40).decode()
    assert post(url, {"pub_key_ed25519": forged, "pub_key_rsa": "ssh-rsa AAAA"}) == 400
    assert booted.phoned_home("r1-cmp-01") is None
    assert post(url, {"pub_key_ed25519": HOST_ED}) == 200


# -- one boot attempt, one machine --------------------------------------------------------


def _get_from(srv: BootServer, path: str, source: str) -> tuple[int, str]:
    conn = HTTPConnection("127.0.0.1", srv.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        rsp = conn.getresponse()
        return rsp.status, rsp.read().decode()
    finally:
        conn.close()


def test_an_attempt_is_served_only_once_armed(events, tokens):
    with BootServer("127.0.0.1", 0, boot=BOOT, on_event=lambda *e: events.append(e), read_timeout_s=1.0) as srv:
        srv.register(NODE_A, tokens["r1-cmp-01"], armed=False)
        _, body = get(f"{srv.url}/boot/02-00-00-00-00-01/-")
        assert "no node expected" in body
        assert events[-1][:2] == ("r1-cmp-01", "ipxe-refused") and "before this boot attempt's power" in events[-1][2]
        srv.arm("r1-cmp-01")
        assert "nocloud/r1-cmp-01/" in get(f"{srv.url}/boot/02-00-00-00-00-01/-")[1]


def test_without_a_known_address_the_first_machine_to_boot_holds_the_attempt(server, events):
    assert "kernel" in _get_from(server, "/boot/02-00-00-00-00-01/-", "127.0.0.5")[1]
    assert "no node expected" in _get_from(server, "/boot/02-00-00-00-00-01/-", "127.0.0.6")[1]
    assert _get_from(server, "/nocloud/r1-cmp-01/user-data", "127.0.0.6") == (404, "not found\n")
    assert _get_from(server, "/nocloud/r1-cmp-01/user-data", "127.0.0.5")[0] == 200
    assert any(k == "ipxe-refused" and "bound to 127.0.0.5" in d for _, k, d in events)


def test_a_known_address_is_the_only_one_served(events, tokens):
    leased = {"02:00:00:00:00:01": ["127.0.0.7"]}
    with BootServer("127.0.0.1", 0, boot=BOOT, on_event=lambda *e: events.append(e), read_timeout_s=1.0,
                    addresses=lambda node, mac: leased.get(mac, [])) as srv:
        srv.register(NODE_A, tokens["r1-cmp-01"])
        assert "no node expected" in _get_from(srv, "/boot/02-00-00-00-00-01/-", "127.0.0.1")[1]
        assert "machine's address is 127.0.0.7" in events[-1][2]
        assert "kernel" in _get_from(srv, "/boot/02-00-00-00-00-01/-", "127.0.0.7")[1]
        user_data = _get_from(srv, "/nocloud/r1-cmp-01/user-data", "127.0.0.7")[1]
        url = yaml.safe_load(user_data)["phone_home"]["url"]
        assert post(url, {"pub_key_ed25519": HOST_ED}) == 403          # from 127.0.0.1: not the machine
        assert srv.phoned_home("r1-cmp-01") is None


def test_a_token_is_consumed_once_however_the_bodies_are_timed(booted, tokens):
    """Two phone-homes with the right token, bodies held back until both passed the token check:
    exactly one is accepted, and the recorded key is that one's."""
    srv = booted
    path = f"/phone-home/r1-cmp-01/{tokens['r1-cmp-01']}"
    socks, bodies = [], []
    for key in (HOST_ED, HOST_ED2):
        body = urllib.parse.urlencode({"pub_key_ed25519": key}).encode()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(f"POST {path} HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode())
        socks.append(s)
        bodies.append(body)
    time.sleep(0.3)   # both handlers now wait for their bodies
    for s, body in zip(socks, bodies):
        s.sendall(body)
    replies = [b"".join(iter(lambda s=s: s.recv(4096), b"")).decode().split()[1] for s in socks]
    for s in socks:
        s.close()
    assert sorted(replies) == ["200", "403"]
    winner = (HOST_ED, HOST_ED2)[replies.index("200")]
    assert srv.phoned_home("r1-cmp-01").host_key == " ".join(winner.split()[:2])
