"""Zero-touch provisioning end to end, with real parts: simulated BMCs speaking
IPMI (pyghmi Bmc, in their own process), the real boot server over HTTP, a
real sshd per node (own UTS namespace, so its hostname is the node's name),
the real SQLite state file, and the CLI run as a subprocess that is SIGKILLed.

The test plays the machines: when a simulated BMC powers a node on from the
network, a thread fetches the node's iPXE script and user-data and phones home
with the token from the user-data and the host key of the node's sshd.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from provision_fixtures import (BMC_PASSWORD, PASSWORD_ENV, make_world, mac_of, sigkill_when,  # noqa: F401 - a fixture
                                stored_states, wait_for)

from cloudplan.cli import main
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions, plan
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore
from cloudplan.lab.bmcsim.ipmi import Fault, FleetProcess, SimSpec

# sshd in its own UTS namespace (unshare --uts) needs root
pytestmark = pytest.mark.root


def _events(state: Path, name: str):
    with StateStore(state, create=False) as st:
        return st.events(name)


def test_end_to_end_with_faults(make_world, capsys):
    w = make_world({
        "good-1": {},
        "good-2": {"boot_mode": "legacy"},
        "badkey": {"play": "wrong-key"},
        "never": {"play": "never", "sshd": False},
        "wrongpw": {"password": "not-what-the-inventory-says", "sshd": False},
        "unreach": {"fault": Fault.unreachable, "sshd": False},
        "wrongtoken": {"play": "wrong-token", "sshd": False},
        "ignoresboot": {"fault": Fault.ignores_boot, "sshd": False},
        "stops": {"fault": Fault.stops_answering, "silent_after": 3, "sshd": False},
    })
    inv = load_model(Inventory, w.inventory)
    # A call's timeout leaves room for a loaded machine: nine simulated BMCs share one process, and a
    # call answered after its timeout is sent again, which the exact command lists below would count.
    opts = ProvisionOptions(concurrency=4, boot_timeout_s=8, bmc_timeout_s=20, call_timeout_s=6, ssh_timeout_s=15)
    progress = []
    with StateStore(w.state, exclusive=True) as store:
        result = Orchestrator(inv, store, opts, on_progress=lambda c, n: progress.append((dict(c), n))).run()
        recs = {r.name: r for r in store.nodes()}
        events = {n: store.events(n) for n in w.names}

    assert not result.ok
    state = {n: r.state for n, r in recs.items()}
    assert state["good-1"] is NodeState.deployed and state["good-2"] is NodeState.deployed
    assert set(result.errors) == set(w.names) - {"good-1", "good-2"}
    assert recs["good-1"].facts["hostname"] == "good-1"

    def failed(name, step, text):
        # in full, as text: a failure under load must name its cause (pytest shortens long reprs)
        r = recs[name]
        why = (f"{name}: {r.state.value} at {r.step}: {r.error}\n"
               + "\n".join(f"  {e.kind}: {e.detail}" for e in events[name]))
        assert (r.state, r.step) == (NodeState.failed, step), why
        assert text in r.error, why

    failed("badkey", "verify-ssh", "host key mismatch")
    failed("never", "phone-home", "no phone-home within 8 s")
    failed("wrongpw", "verify-bmc", "credentials rejected")
    failed("unreach", "verify-bmc", "no answer")
    failed("wrongtoken", "phone-home", "no phone-home")
    failed("ignoresboot", "phone-home", "no phone-home")
    failed("stops", "set-boot", "no answer")

    kinds = {n: [e.kind for e in ev] for n, ev in events.items()}
    assert "retry" not in kinds["wrongpw"], [(e.kind, e.detail) for e in events["wrongpw"]]  # never retried
    assert "retry" in kinds["unreach"]                        # an unreachable BMC is
    assert any(e.kind == "phone-home-rejected" and e.detail == "bad token" for e in events["wrongtoken"]), \
        [(e.kind, e.detail) for e in events["wrongtoken"]]
    assert "bootdev-unconfirmed" in kinds["ignoresboot"]
    assert {"ipxe-served", "user-data-served", "phone-home"} <= set(kinds["good-1"])

    # the simulators saw what the state file says was done
    cmds, boots, power_ons = w.fleet.commands(), w.fleet.boots(), w.fleet.power_ons()
    assert cmds["good-1"] == ["bootdev network uefi", "on", "bootdev hd persistent uefi"]
    assert cmds["good-2"] == ["bootdev network", "on", "bootdev hd persistent"]
    assert boots["good-1"] == ["network"] and boots["ignoresboot"] == ["hd"]
    assert cmds["wrongpw"] == []
    for n in w.names:
        assert recs[n].power_ons == power_ons[n], n

    # Healthy nodes did not wait for the faulty ones: each was powered on, and so on its way, before
    # "never" gave up on its boot, 8 s after its own power-on. (Not the phone-home or the deployment:
    # on a loaded machine a healthy node's BMC call answered late and sent again put those after it.)
    def at(name, to):
        return next(e.at for e in events[name] if e.to_state == to and e.kind == "transition")

    def powered(name):
        return next(e.at for e in events[name] if e.kind == "power")
    for good in ("good-1", "good-2"):
        assert powered(good) < at("never", "failed"), "\n".join(
            f"{e.at - events[good][0].at:6.2f} {e.kind} {e.to_state} {e.detail}" for e in events[good])

    assert progress and progress[-1][1] == len(w.names) and progress[-1][0][NodeState.deployed] == 2

    # no BMC or SSH secret anywhere in the state file
    raw = b"".join(p.read_bytes() for p in w.state.parent.glob("state.db*"))
    assert BMC_PASSWORD.encode() not in raw and b"not-what-the-inventory-says" not in raw
    assert b"PRIVATE KEY" not in raw

    assert main(["status", "--state", str(w.state), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["state"] for r in rows}["good-1"] == "deployed"
    assert all({"name", "state", "step", "error", "seconds_in_state"} <= set(r) for r in rows)
    assert main(["events", "--state", str(w.state), "good-1"]) == 0
    text = capsys.readouterr().out
    assert "verify-ssh" in text and "deployed" in text and "phone-home" in text


def test_a_node_that_powers_off_mid_install_is_booted_again(make_world):
    w = make_world({"dies": {"play": "dies-first"}, "dies-always": {"play": "dies-first", "sshd": False}})
    inv = load_model(Inventory, w.inventory)
    opts = ProvisionOptions(boot_timeout_s=30, bmc_timeout_s=8, call_timeout_s=3, power_check_s=0.5)
    with StateStore(w.state, exclusive=True) as store:
        Orchestrator(inv, store, opts.model_copy(update={"only": ["dies"]})).run()
        # with no boot retry left, a power-off is a failure at once, long before the boot timeout
        Orchestrator(inv, store, opts.model_copy(update={"only": ["dies-always"], "boot_retries": 0})).run()
        recs = {r.name: r for r in store.nodes()}
        events = {n: [e.kind for e in store.events(n)] for n in w.names}
    assert recs["dies"].state is NodeState.deployed, recs["dies"]
    assert "powered-off" in events["dies"] and recs["dies"].power_ons == 2
    assert w.fleet.commands()["dies"][:4] == ["bootdev network uefi", "on", "bootdev network uefi", "on"]
    r = recs["dies-always"]
    assert (r.state, r.step) == (NodeState.failed, "phone-home") and "powered off before phoning home" in r.error


def test_a_node_without_mac_or_uuid_is_known_by_its_bmc_guid_and_its_mac_learned(make_world):
    w = make_world({"nomac": {"mac_known": False}})
    inv = load_model(Inventory, w.inventory)
    assert inv.nodes[0].mac is None and inv.nodes[0].uuid is None
    opts = ProvisionOptions(boot_timeout_s=30, bmc_timeout_s=8, call_timeout_s=3)
    with StateStore(w.state, exclusive=True) as store:
        assert Orchestrator(inv, store, opts).run().ok
        rec = store.get("nomac")
        kinds = [e.kind for e in store.events("nomac")]
    assert rec.state is NodeState.deployed and rec.mac == mac_of(0)
    assert "ipxe-served" in kinds and "phone-home" in kinds


def test_preflight_refuses_before_touching_a_bmc(make_world, capsys, tmp_path, monkeypatch):
    w = make_world({"n1": {"sshd": False}})
    text = w.inventory.read_text()
    no_key = w.inventory.with_name("no-key.yaml")
    no_key.write_text(text.replace(str(tmp_path / "id_ed25519") + ".pub", str(tmp_path / "missing.pub")))
    assert main(["provision", str(no_key), "--state", str(tmp_path / "s1.db")]) == 1
    assert "missing.pub: provisioning.ssh_public_key_file: cannot read SSH public key" in capsys.readouterr().err
    no_boot = w.inventory.with_name("no-boot.yaml")
    data = yaml.safe_load(text)
    del data["provisioning"]["boot"]
    no_boot.write_text(yaml.safe_dump(data))
    assert main(["provision", str(no_boot), "--state", str(tmp_path / "s2.db")]) == 1
    assert f"Error: {no_boot}: provisioning.boot: no installer to boot" in capsys.readouterr().err
    monkeypatch.delenv(PASSWORD_ENV)
    assert main(["provision", str(w.inventory), "--state", str(tmp_path / "s3.db")]) == 1
    assert f"Error: {w.inventory}: n1.bmc.password_env: environment variable {PASSWORD_ENV} is not set" \
        in capsys.readouterr().err
    assert w.fleet.commands()["n1"] == []


def test_dry_run_and_lock(make_world, capsys):
    w = make_world({"n-1": {"sshd": False}, "n-2": {"sshd": False}})
    assert main(["provision", str(w.inventory), "--state", str(w.state), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "n-1" in out and "n-2" in out and "network boot" in out
    assert not w.state.exists()
    assert w.fleet.commands() == {"n-1": [], "n-2": []} and w.fleet.power_ons() == {"n-1": 0, "n-2": 0}

    with StateStore(w.state, exclusive=True):
        assert main(["provision", str(w.inventory), "--state", str(w.state)]) == 1
    assert "in use by another provision run" in capsys.readouterr().err
    assert w.fleet.commands() == {"n-1": [], "n-2": []}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cloudplan.cli import main; main()", *args]


def _states_are(state: Path, **expected: NodeState) -> bool:
    return stored_states(state) == expected


def test_sigkill_mid_run_then_resume(make_world):
    w = make_world({"a": {}, "b": {}, "c": {"play": "never-first"}})
    args = ["provision", str(w.inventory), "--state", str(w.state), "--boot-timeout", "120", "--bmc-timeout", "20"]
    first = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sigkill_when(first, lambda: _states_are(w.state, a=NodeState.deployed, b=NodeState.deployed,
                                            c=NodeState.waiting_boot), 60, "a and b deployed, c waiting for its boot")
    assert first.returncode == -signal.SIGKILL
    assert w.fleet.power_ons() == {"a": 1, "b": 1, "c": 1}

    second = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr

    with StateStore(w.state, create=False) as st:
        recs = {r.name: r for r in st.nodes()}
        assert {n: r.state for n, r in recs.items()} == {n: NodeState.deployed for n in "abc"}
        # deployed nodes were not touched again; c was booted again with a fresh token
        assert w.fleet.power_ons() == {"a": 1, "b": 1, "c": 2}
        assert {n: r.power_ons for n, r in recs.items()} == {"a": 1, "b": 1, "c": 2}
        cmds = w.fleet.commands()
        assert cmds["a"] == ["bootdev network uefi", "on", "bootdev hd persistent uefi"]
        assert cmds["c"].count("bootdev network uefi") == 2 and cmds["c"][-1] == "bootdev hd persistent uefi"
        for n in "ab":
            ev = st.events(n)
            last_deployed = max(i for i, e in enumerate(ev) if e.to_state == "deployed" and e.kind == "transition")
            assert last_deployed == len(ev) - 1, f"{n} has events after it was deployed"
        seq = [e.to_state for e in st.events("c") if e.kind == "transition"]
        assert seq == ["pending", "verifying-bmc", "bmc-verified", "setting-boot", "waiting-boot",
                       "verifying-bmc", "bmc-verified", "setting-boot", "waiting-boot",
                       "phoned-home", "verifying-ssh", "deployed"]
        assert sum(e.kind == "power" for e in st.events("c")) == 2
        runs = st.db.execute("SELECT outcome FROM runs ORDER BY id").fetchall()
        assert runs == [(None,), ("finished",)]      # the killed run never finished; nothing was lost


def test_ctrl_c_keeps_the_state_and_the_next_run_resumes(make_world):
    w = make_world({"a": {}, "c": {"play": "never-first"}})
    args = ["provision", str(w.inventory), "--state", str(w.state), "--boot-timeout", "120", "--bmc-timeout", "20"]
    first = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _states_are(w.state, a=NodeState.deployed, c=NodeState.waiting_boot),
                 60, "a deployed, c waiting for its boot")
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, stderr
    assert "Interrupted; the state is kept" in stderr and "Traceback" not in stderr, stderr
    with StateStore(w.state, create=False) as st:
        assert st.get("c").state is NodeState.waiting_boot    # interrupted, not failed
        assert st.db.execute("SELECT outcome FROM runs ORDER BY id").fetchall() == [("interrupted",)]
    second = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert w.fleet.power_ons() == {"a": 1, "c": 2}


def test_only_unknown_node_is_a_usage_error(make_world, capsys):
    w = make_world({"n-1": {"sshd": False}})
    assert main(["provision", str(w.inventory), "--state", str(w.state), "--only", "nope", "--dry-run"]) == 2
    assert "nope" in capsys.readouterr().err


def test_resume_after_phone_home_does_not_touch_power(make_world):
    """A node whose phone-home was stored before a crash goes straight to disk boot
    and SSH verification with the stored host key: no power command at all."""
    w = make_world({"p-1": {}})
    sshd = w.sshds["p-1"]
    with StateStore(w.state, exclusive=True) as st:
        st.ensure_nodes(["p-1"])
        for s in (NodeState.verifying_bmc, NodeState.bmc_verified, NodeState.setting_boot,
                  NodeState.waiting_boot):
            st.transition("p-1", s, step=s.step.value)
        st.transition("p-1", NodeState.phoned_home, step="phone-home", host_key=sshd.host_key,
                      address=sshd.address)
        plan_text = [p.actions for p in plan(
            load_model(Inventory, w.inventory), st, ProvisionOptions())]
        assert plan_text == [["set boot device to disk", "SSH verification with the reported host key"]]
        result = Orchestrator(load_model(Inventory, w.inventory), st, ProvisionOptions(ssh_timeout_s=15)).run()
        assert result.ok, result.errors
        assert st.get("p-1").power_ons == 0
        assert any(e.kind == "resume" for e in st.events("p-1"))
    assert w.fleet.power_ons() == {"p-1": 0}
    assert w.fleet.commands() == {"p-1": ["bootdev hd persistent uefi"]}

    # deployed now: a new run leaves its BMC alone entirely
    assert main(["provision", str(w.inventory), "--state", str(w.state)]) == 0
    assert w.fleet.commands() == {"p-1": ["bootdev hd persistent uefi"]}
