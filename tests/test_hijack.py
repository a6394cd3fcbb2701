"""A phone-home belongs to one boot attempt of one machine; nobody else can deploy in its place.

Real parts throughout: simulated BMCs speaking IPMI in their own process, the
real boot server, a real sshd per machine on its own loopback address, and, for
the attacker, a second sshd on another loopback address. The moments that
matter (a boot of the killed run still running cloud-init while the next run
sets the boot device; an attacker acting while the node is armed) are made
exact by a client wrapper that runs the other party's requests just before
the orchestrator's own BMC command goes out.
"""

from __future__ import annotations

import secrets
import urllib.parse
import uuid
from http.client import HTTPConnection

import pytest
import yaml
from provision_fixtures import Sshd, World, keygen, make_world  # noqa: F401 - a fixture

from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions, default_client
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore, token_hash

pytestmark = pytest.mark.root   # sshd in its own UTS namespace

OPTS = ProvisionOptions(boot_timeout_s=30, bmc_timeout_s=8, call_timeout_s=3, ssh_timeout_s=15)
ATTACKER = "127.0.0.66"


class _Hooked:
    """The real IPMI client; ``hooks[(method, first_arg)]`` runs once just before that call."""

    def __init__(self, client, hooks: dict):
        self._client, self._hooks = client, dict(hooks)

    def __getattr__(self, attr):
        real = getattr(self._client, attr)

        def call(*args, **kw):
            hook = self._hooks.pop((attr, args[0] if args else None), None)
            if hook is not None:
                hook()
            return real(*args, **kw)
        return call if callable(real) else real


def _factory(hooks: dict):
    return lambda node, password: _Hooked(default_client(node, password, OPTS.call_timeout_s), hooks)


def _request(w: World, method: str, path: str, source: str, body: str | None = None) -> tuple[int, str]:
    u = urllib.parse.urlsplit(w.player.base_url)
    conn = HTTPConnection(u.hostname, u.port, timeout=10, source_address=(source, 0))
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        rsp = conn.getresponse()
        return rsp.status, rsp.read().decode()
    finally:
        conn.close()


def _phone_home(w: World, name: str, token: str, key: str, source: str) -> int:
    body = urllib.parse.urlencode({"pub_key_ed25519": key, "hostname": name, "instance_id": name})
    return _request(w, "POST", f"/phone-home/{name}/{token}", source, body)[0]


def _token_from(user_data: str) -> str:
    return yaml.safe_load(user_data)["phone_home"]["url"].rsplit("/", 1)[1]


def _left_by_a_killed_run(w: World, name: str, token: str) -> None:
    """The state a SIGKILLed run leaves: the node powered on and waiting for its boot."""
    with StateStore(w.state, exclusive=True) as st:
        st.ensure_nodes([name])
        for s in (NodeState.verifying_bmc, NodeState.bmc_verified):
            st.transition(name, s, step=s.step.value)
        st.transition(name, NodeState.setting_boot, step="set-boot", token_sha256=token_hash(token))
        st.transition(name, NodeState.waiting_boot, step="power")


def test_a_phone_home_from_an_earlier_boot_is_refused(make_world, tmp_path):
    """The lab's flaky failure, made exact: after a SIGKILL the machine still runs the boot the
    killed run started; while the next run sets the boot device, that boot phones home with
    its old token, and fetches its seed again from the new boot server. Neither may count."""
    w = make_world({"r": {}})
    old_token = secrets.token_urlsafe(24)
    _left_by_a_killed_run(w, "r", old_token)
    earlier_key = keygen(tmp_path / "earlier_boot_host_key")
    src = w.addresses["r"]
    seen = []

    def earlier_boot():
        seen.append(("old token", _phone_home(w, "r", old_token, earlier_key, src)))
        status, body = _request(w, "GET", "/nocloud/r/user-data", src)
        seen.append(("seed", status))
        if status == 200:
            seen.append(("new token", _phone_home(w, "r", _token_from(body), earlier_key, src)))

    inv = load_model(Inventory, w.inventory)
    with StateStore(w.state, exclusive=True) as st:
        result = Orchestrator(inv, st, OPTS, client_factory=_factory({("set_bootdev", "network"): earlier_boot})).run()
        rec = st.get("r")
        events = st.events("r")
    assert seen == [("old token", 403), ("seed", 404)]
    assert result.ok, (result.errors, [(e.kind, e.detail) for e in events])
    assert rec.state is NodeState.deployed and rec.host_key == " ".join(w.sshds["r"].host_key.split()[:2])
    refused = [(e.kind, e.detail) for e in events if e.kind.endswith(("-rejected", "-refused"))]
    assert ("phone-home-rejected", "token of an earlier boot attempt") in refused, refused
    assert any(k == "seed-refused" and "before this boot attempt's iPXE script" in d for k, d in refused), refused


def test_an_attacker_on_the_segment_cannot_deploy_in_the_machines_place(make_world, tmp_path):
    """Another host on the provisioning network, with its own sshd that would pass SSH
    verification (same hostname, accepts the deploy key), tries everything the segment lets it
    try: the node's iPXE script under its MAC and UUID, its seed by name, a phone-home with a
    guessed token, and after the real phone-home the real token (sent in clear)."""
    w = make_world({"v": {}})
    mac, node_uuid = "52:54:00:00:00:00", str(uuid.uuid5(uuid.NAMESPACE_DNS, "v"))
    key_line = (tmp_path / "id_ed25519.pub").read_text().strip()
    evil = Sshd("v", ATTACKER, int(yaml.safe_load(w.inventory.read_text())["provisioning"]["ssh_port"]),
                tmp_path / "sshd-attacker", key_line).start()
    attempts: dict[str, object] = {}

    def attack_while_armed():
        _, script = _request(w, "GET", f"/boot/{mac.replace(':', '-')}/{node_uuid}", ATTACKER)
        attempts["ipxe"] = ("no node expected" in script, "kernel" in script)
        attempts["seed"] = [_request(w, "GET", f"/nocloud/v/{what}", ATTACKER) for what in ("user-data", "meta-data")]
        attempts["no-such-node"] = _request(w, "GET", "/nocloud/nobody/meta-data", ATTACKER)
        attempts["guess"] = _phone_home(w, "v", secrets.token_urlsafe(24), evil.host_key, ATTACKER)
        # guessing on and on must not grow the state file by a row per request
        attempts["flood"] = {_phone_home(w, "v", secrets.token_urlsafe(24), evil.host_key, ATTACKER)
                             for _ in range(300)}

    def attack_after_phone_home():
        # The token travels in clear over HTTP: assume the attacker read it off the wire.
        with StateStore(w.state, create=False) as st:
            assert st.get("v").state is NodeState.phoned_home
        # (the machines are played in the simulators' process: fetch it again from the machine's address)
        real_token = _token_from(_request(w, "GET", "/nocloud/v/user-data", w.addresses["v"])[1])
        attempts["replay"] = _phone_home(w, "v", real_token, evil.host_key, ATTACKER)

    inv = load_model(Inventory, w.inventory)
    try:
        with StateStore(w.state, exclusive=True) as st:
            result = Orchestrator(inv, st, OPTS, client_factory=_factory({
                ("set_power", "on"): attack_while_armed, ("set_bootdev", "hd"): attack_after_phone_home})).run()
            rec = st.get("v")
            events = [(e.kind, e.detail) for e in st.events("v")]
    finally:
        evil.stop()
    assert attempts["ipxe"] == (True, False), "the attacker's iPXE answer must be the unknown-machine script"
    assert attempts["seed"] == [(404, "not found\n")] * 2
    assert attempts["no-such-node"] == (404, "not found\n"), "a waiting node must look like no node at all"
    assert attempts["guess"] == 403 and attempts["replay"] == 403 and attempts["flood"] == {403}
    rejected = [d for k, d in events if k == "phone-home-rejected"]
    assert len(rejected) <= 3 and any("more refused" in d for d in rejected), rejected
    assert result.ok, (result.errors, events)
    assert rec.address == w.addresses["v"] and rec.host_key == " ".join(w.sshds["v"].host_key.split()[:2])
    assert ("phone-home", f"ssh-ed25519 from {w.addresses['v']}") in events
    refusals = [d for k, d in events if k in ("ipxe-refused", "seed-refused", "phone-home-rejected")]
    assert any(ATTACKER in d for d in refusals), events
    assert all(k != "phone-home" or ATTACKER not in d for k, d in events)


def test_a_bmc_reporting_another_machines_guid_gets_no_power_command(make_world):
    w = make_world({"g": {"sshd": False}})
    data = yaml.safe_load(w.inventory.read_text())
    data["nodes"][0]["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_DNS, "some-other-machine"))
    w.inventory.write_text(yaml.safe_dump(data))
    inv = load_model(Inventory, w.inventory)
    with StateStore(w.state, exclusive=True) as st:
        result = Orchestrator(inv, st, OPTS).run()
        rec = st.get("g")
    assert not result.ok
    assert (rec.state, rec.step) == (NodeState.failed, "verify-bmc")
    assert "reports system GUID" in rec.error and "no power command sent" in rec.error
    assert w.fleet.commands() == {"g": []} and w.fleet.power_ons() == {"g": 0}
