"""The Redfish driver against a real Redfish implementation: sushy-tools' emulator
(fake driver) on loopback over HTTPS with a CA made here, sometimes behind a
fault proxy the test controls (503s, silence, 202 tasks). What the emulator
recorded is read from it directly, not through the client under test."""

from __future__ import annotations

import time

import pytest
from redfish_fixtures import RF_PASSWORD, Emulator, FakeSystem, FaultProxy, FileServer, ca, client  # noqa: F401

from cloudplan.errors import BMCAuthError, BMCBusy, BMCError, BMCTLSError, BMCUnreachable, SpecError
from cloudplan.inventory import Inventory
from cloudplan.provision.bmc import retry_call, set_boot_network, set_boot_once
from cloudplan.provision.bmc.tls import TrustPolicy, fingerprint_sha256


@pytest.fixture(scope="module")
def emu(ca):
    with Emulator([FakeSystem("n1")], tls=ca.issue("emu"), password=RF_PASSWORD) as e:
        yield e


@pytest.fixture()
def proxy(emu, ca):
    with FaultProxy(emu.url, ca.issue("proxy"), upstream_ca=str(ca.cert_file)) as p:
        yield p


def _patches(proxy: FaultProxy) -> list[dict]:
    """The Boot sections PATCHed, less sushy's clearing of an advertised HttpBootUri."""
    out = []
    for s in proxy.seen:
        if s.method == "PATCH" and isinstance(s.body, dict):
            boot = dict(s.body["Boot"])
            if boot.get("HttpBootUri", "") is None:
                del boot["HttpBootUri"]
            out.append(boot)
    return out


def test_identity_boot_override_and_power(emu, proxy, ca):
    system = emu.systems[0]
    c = client(proxy.url, ca)
    try:
        info = c.info()
        assert info.power == "off" and info.system_guid == system.uuid
        assert c.system_path == system.path            # the only system, found by itself
        assert set_boot_network(c, uefi=True) is True
        boot = emu.system_json(system)["Boot"]
        assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Pxe", "UEFI")
        assert _patches(proxy)[-1] == {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}
        # Disk, persistent, legacy: Continuous, and the mode is sent because it changes.
        c.set_bootdev("hd", persist=True, uefi=False)
        assert _patches(proxy)[-1] == {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous",
                                       "BootSourceOverrideMode": "Legacy"}
        boot = emu.system_json(system)["Boot"]
        assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Hdd", "Legacy")
        assert c.get_bootdev()["bootdev"] == "hd" and c.get_bootdev()["uefimode"] is False
        c.set_power("on")
        resets = [s.body for s in proxy.seen if s.method == "POST" and s.path.endswith("ComputerSystem.Reset")]
        assert resets == [{"ResetType": "On"}]
        deadline = time.monotonic() + 20                # the fake machine applies power 1-11 s late
        while emu.system_json(system)["PowerState"] != "On" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert emu.system_json(system)["PowerState"] == "On" and c.get_power() == "on"
        c.set_power("off")
    finally:
        c.close()
    assert not any("Authorization" in str(s.body) for s in proxy.seen)


def test_virtual_media_insert_and_eject(emu, ca, tmp_path):
    system = emu.systems[0]
    (tmp_path / "deploy.iso").write_bytes(b"\0" * 65536)
    with FileServer(tmp_path) as files:
        url = f"{files.url}/deploy.iso"
        c = client(emu.url, ca)
        try:
            c.insert_media(url)
            cd = emu.cd_json(system)
            assert cd["Image"] == url and cd["Inserted"] is True
            assert c.media() == {"image": url, "inserted": True}
            assert set_boot_once(c, "cd", uefi=True) is True
            assert emu.system_json(system)["Boot"]["BootSourceOverrideTarget"] == "Cd"
            c.eject_media()
            cd = emu.cd_json(system)
            assert cd["Inserted"] is False and not cd.get("Image")
            c.eject_media()                                # nothing inserted: not an error
            with pytest.raises(BMCError, match="HTTP 4|busy"):  # the BMC fetches the image: a 404 shows
                c.call("insert-missing", lambda s: c._cd_device(s).insert_media(f"{files.url}/missing.iso"))
        finally:
            c.close()


def test_wrong_password_is_final_and_not_shown(emu, ca):
    c = client(emu.url, ca, password="not-the-Password-1")
    calls = []

    def attempt():
        calls.append(1)
        return c.get_power()

    with pytest.raises(BMCAuthError) as err:
        retry_call(attempt, timeout_s=10)
    assert calls == [1]                                    # never retried
    assert "not-the-Password-1" not in str(err.value) and "401" in str(err.value)


def test_bmc_that_stops_answering_then_comes_back(emu, proxy, ca):
    c = client(proxy.url, ca, timeout=2.0)
    try:
        assert c.get_power() in ("on", "off")
        proxy.go_silent()
        t0 = time.monotonic()
        with pytest.raises(BMCUnreachable, match="no answer within 2 s"):
            c.get_power()
        assert time.monotonic() - t0 < 4.0                # the watchdog, not sushy's 60 s read timeout
        proxy.answer_again()
        assert c.get_power() in ("on", "off")              # a fresh connection after the stuck one
    finally:
        proxy.answer_again()
        c.close()


def test_stopped_emulator_is_unreachable(ca):
    e = Emulator([FakeSystem("gone")], tls=ca.issue("gone"), password=RF_PASSWORD).start()
    url = e.url
    e.close()
    c = client(url, ca, timeout=5.0)
    with pytest.raises(BMCUnreachable, match="no answer from the BMC"):
        c.get_power()


def test_503_answered_later_is_retried_with_backoff(emu, proxy, ca):
    c = client(proxy.url, ca)
    try:
        c.get_power()
        proxy.fail_next(3)
        retries = []
        assert retry_call(c.get_power, timeout_s=30, initial_s=0.2,
                          on_retry=lambda e, w: retries.append(type(e).__name__)) in ("on", "off")
        assert proxy.failed_answers == 3
        assert retries and set(retries) == {"BMCBusy"}
        proxy.fail_next(10_000)                            # busy for good: the deadline ends it
        t0 = time.monotonic()
        with pytest.raises(BMCBusy, match="HTTP 503"):
            retry_call(c.get_power, timeout_s=3, initial_s=0.2)
        assert time.monotonic() - t0 < 6
    finally:
        proxy.fail_next(0)
        c.close()


def test_long_action_answered_with_a_task_monitor(emu, proxy, ca):
    proxy.tasks_for("ComputerSystem.Reset")
    c = client(proxy.url, ca)
    try:
        c.set_power("off")
        paths = [s.path for s in proxy.seen]
        reset = max(i for i, p in enumerate(paths) if p.endswith("ComputerSystem.Reset"))
        assert "/redfish/v1/TaskService/Tasks/42" in paths[reset + 1:]   # polled until Completed
    finally:
        c.close()


def test_certificate_that_does_not_match(emu, ca, tmp_path):
    from cloudplan.lab.bmcsim.redfish import TestCA

    other = TestCA(tmp_path / "other-ca", name="someone else")
    for trust, why in ((TrustPolicy(ca_file=str(other.cert_file)), "another CA"),
                       (TrustPolicy(cert_sha256="00" * 32), "another pinned fingerprint"),
                       (TrustPolicy(), "the system CA store")):
        c = client(emu.url, trust=trust)
        calls = []

        def attempt(c=c):
            calls.append(1)
            return c.get_power()

        with pytest.raises(BMCTLSError, match="TLS certificate not trusted"):
            retry_call(attempt, timeout_s=10)
        assert calls == [1], why                           # final: never retried
    # The right CA, but a certificate for another host name.
    with Emulator([FakeSystem("wrongname")], tls=ca.issue("wrongname", hosts=("bmc.example",)),
                  password=RF_PASSWORD) as wrong:
        with pytest.raises(BMCTLSError):
            client(wrong.url, ca).get_power()
    # Pinning the emulator's own certificate works without any CA; insecure only when asked.
    pin = fingerprint_sha256(emu.tls.cert.read_bytes())
    assert client(emu.url, trust=TrustPolicy(cert_sha256=pin)).get_power() in ("on", "off")
    assert client(emu.url, trust=TrustPolicy(insecure=True)).get_power() in ("on", "off")


def test_several_systems_need_bmc_system(ca):
    systems = [FakeSystem("a"), FakeSystem("b")]
    with Emulator(systems, tls=ca.issue("multi"), password=RF_PASSWORD) as e:
        with pytest.raises(BMCError, match="manages 2 systems: give bmc.system"):
            client(e.url, ca).get_power()
        c = client(e.url, ca, system=systems[1].path)
        assert c.get_system_guid() == systems[1].uuid


def _inv(bmc: dict, **node) -> dict:
    return {"nodes": [{"name": "n1", "role": "compute", "rack": "r1",
                       "bmc": {"username": "admin", "password_env": "X", **bmc}, **node}]}


def test_inventory_redfish_fields_are_checked():
    ok = Inventory.model_validate(_inv({"driver": "redfish", "address": "bmc1.example",
                                        "cert_sha256": "AB:" * 31 + "AB"}))
    assert ok.nodes[0].bmc.url == "https://bmc1.example" and ok.nodes[0].bmc.cert_sha256 == "ab" * 32
    for bmc, msg in (({"driver": "redfish", "address": "http://bmc1"}, "password in clear"),
                     ({"driver": "ipmi", "address": "10.0.0.1", "insecure": True}, "Redfish settings"),
                     ({"driver": "redfish", "address": "bmc1", "cert_sha256": "12"}, "64 hex digits"),
                     ({"driver": "redfish", "address": "bmc1", "system": "/Systems/1"}, "under /redfish/v1")):
        with pytest.raises(ValueError, match=msg):
            Inventory.model_validate(_inv(bmc))
    with pytest.raises(ValueError, match="needs bmc.driver: redfish"):
        Inventory.model_validate(_inv({"address": "10.0.0.1"}, boot="vmedia"))


def test_missing_ca_bundle_is_a_spec_error(emu):
    with pytest.raises(SpecError, match="CA bundle not found"):
        client(emu.url, trust=TrustPolicy(ca_file="/nonexistent/ca.pem")).get_power()


@pytest.fixture()
def session_proxy(emu, ca):
    with FaultProxy(emu.url, ca.issue("sessions"), upstream_ca=str(ca.cert_file), sessions=True) as p:
        yield p


def test_redfish_session_is_opened_used_and_deleted(session_proxy, ca):
    c = client(session_proxy.url, ca)
    assert c.get_power() in ("on", "off")
    c.set_bootdev("network", persist=False, uefi=True)
    assert session_proxy.sessions_created == 1 and session_proxy.open_sessions == 1
    assert session_proxy.token_requests >= 3            # the calls rode on the session token, not basic auth
    logins = [s.body for s in session_proxy.seen if s.method == "POST" and s.path.endswith("/Sessions")]
    assert logins == [{"UserName": "admin", "Password": "***"}]   # (the proxy's record masks it)
    c.close()
    assert session_proxy.sessions_deleted == 1 and session_proxy.open_sessions == 0


def test_wrong_password_through_a_session_service(session_proxy, ca):
    c = client(session_proxy.url, ca, password="Wrong-Password-55")
    with pytest.raises(BMCAuthError) as err:
        c.get_power()
    assert "Wrong-Password-55" not in str(err.value) and session_proxy.open_sessions == 0


def test_bmc_refusing_continuous_gets_once(emu, proxy, ca):
    proxy.refuse_boot("BootSourceOverrideEnabled", "Continuous")
    c = client(proxy.url, ca)
    try:
        c.set_bootdev("hd", persist=True, uefi=True)
        sent = [b.get("BootSourceOverrideEnabled") for b in _patches(proxy)]
        assert sent == ["Continuous", "Once"]
        assert emu.system_json(emu.systems[0])["Boot"]["BootSourceOverrideTarget"] == "Hdd"
        proxy.refuse_boot("BootSourceOverrideEnabled", "Once")      # a refusal of a one-time boot is final
        with pytest.raises(BMCError, match="HTTP 400"):
            c.set_bootdev("network", persist=False, uefi=True)
    finally:
        proxy.refuse_boot("BootSourceOverrideEnabled", None)
        c.close()


def test_bmc_refusing_the_boot_mode_gets_the_target_alone(emu, proxy, ca):
    system = emu.systems[0]
    c = client(proxy.url, ca)
    try:
        c.set_bootdev("hd", persist=True, uefi=True)                     # start from UEFI
        proxy.refuse_boot("BootSourceOverrideMode", "Legacy")
        c.set_bootdev("network", persist=False, uefi=False)
        tail = _patches(proxy)[-2:]
        assert tail == [{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                         "BootSourceOverrideMode": "Legacy"},
                        {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}]
        boot = emu.system_json(system)["Boot"]
        assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Pxe", "UEFI")
    finally:
        proxy.refuse_boot("BootSourceOverrideMode", None)
        c.close()


def test_orchestrator_over_redfish_retries_busy_and_fails_the_rest_without_secrets(ca, tmp_path, monkeypatch):
    """Verify, one-time network boot and power on through the orchestrator, as for IPMI:
    a 503-answering BMC is retried to success, a wrong password and a silent BMC fail
    their node alone, and no password reaches the state file."""
    from cloudplan.lab.bmcsim.redfish import free_tcp_port
    from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions
    from cloudplan.provision.states import NodeState
    from cloudplan.provision.store import StateStore

    monkeypatch.setenv("RF_OK", RF_PASSWORD)
    monkeypatch.setenv("RF_BAD", "Bad-Password-777")
    names = ["ok", "busy", "wrongpw", "silent"]
    systems = {n: FakeSystem(n) for n in names}
    with Emulator(list(systems.values()), tls=ca.issue("orch"), password=RF_PASSWORD) as e, \
            FaultProxy(e.url, ca.issue("orch-busy"), upstream_ca=str(ca.cert_file)) as busy, \
            FaultProxy(e.url, ca.issue("orch-silent"), upstream_ca=str(ca.cert_file)) as silent:
        busy.fail_next(4)                  # a burst of 503s, then answers
        silent.go_silent()
        url = {"ok": e.url, "busy": busy.url, "wrongpw": e.url, "silent": silent.url}
        inv = Inventory.model_validate({
            "provisioning": {"http": f"127.0.0.1:{free_tcp_port()}", "dhcp": False},
            "nodes": [{"name": n, "role": "compute", "rack": "r1", "boot_mode": "legacy",
                       "bmc": {"driver": "redfish", "address": url[n], "system": systems[n].path,
                               "ca_file": str(ca.cert_file), "username": "admin",
                               "password_env": "RF_BAD" if n == "wrongpw" else "RF_OK"}} for n in names]})
        opts = ProvisionOptions(stop_at=NodeState.waiting_boot, bmc_timeout_s=10, call_timeout_s=3)
        with StateStore(tmp_path / "s.db", exclusive=True) as store:
            result = Orchestrator(inv, store, opts).run()
            recs = {r.name: r for r in store.nodes()}
            kinds = {n: [ev.kind for ev in store.events(n)] for n in names}
        silent.answer_again()
        assert {n: r.state for n, r in recs.items()} == {
            "ok": NodeState.waiting_boot, "busy": NodeState.waiting_boot,
            "wrongpw": NodeState.failed, "silent": NodeState.failed}, recs["busy"].error
        assert "credentials rejected" in recs["wrongpw"].error and "retry" not in kinds["wrongpw"]
        assert "no answer within 3 s" in recs["silent"].error and "retry" in kinds["silent"]
        assert "retry" in kinds["busy"] and busy.failed_answers > 0
        for n in ("ok", "busy"):
            boot = e.system_json(systems[n])["Boot"]
            assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Pxe", "Legacy")
        assert result.states["ok"] is NodeState.waiting_boot
    raw = (tmp_path / "s.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("s.db*"))
    assert RF_PASSWORD.encode() not in raw and b"Bad-Password-777" not in raw


def test_a_dropped_connection_deletes_its_session_in_the_background(session_proxy, ca):
    c = client(session_proxy.url, ca, timeout=2.0)
    assert c.get_power() in ("on", "off") and session_proxy.open_sessions == 1
    session_proxy.go_silent()
    t0 = time.monotonic()
    with pytest.raises(BMCUnreachable):
        c.get_power()
    assert time.monotonic() - t0 < 4.0              # the session's clean-up did not hold the caller
    time.sleep(1.0)                                 # its DELETE reaches the silent BMC and is lost ...
    assert session_proxy.sessions_deleted == 0
    session_proxy.answer_again()                    # ... and is sent again once the BMC answers
    deadline = time.monotonic() + 10
    while session_proxy.sessions_deleted < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_proxy.sessions_deleted == 1      # the abandoned session was deleted, not left to expire
    assert c.get_power() in ("on", "off") and session_proxy.sessions_created == 2
    c.close()
    assert session_proxy.open_sessions == 0
