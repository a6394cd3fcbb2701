"""The virtual rack, end to end: real QEMU machines, real IPMI BMCs, real dnsmasq/iPXE.

`cloudplan lab up` makes four powered-off machines; the real `cloudplan
provision` (a separate process, run inside the lab's namespace as the lab
prints) brings them up by IPMI and PXE only, with the faults of the field
played on real machines:

- lab-cmp-03 is killed (its QEMU process) mid-install: the orchestrator sees
  it powered off, boots it again, and it deploys;
- lab-cmp-04's BMC ignores the boot override: it boots from its blank disk,
  never phones home, and fails alone, reported, without holding the others up;
- the provisioning process itself is killed with SIGKILL once a node is
  deployed, and a second run resumes: no node lost, none powered after it
  was deployed, every node's history complete.

Then `cloudplan lab down` leaves nothing behind. Needs root (CI runs as root);
without root or QEMU the test fails with a message, it never skips.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from provision_fixtures import stored_states

from cloudplan.cli import main
from cloudplan.lab import rack
from cloudplan.lab.state import lab_paths, load_state
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore
from cloudplan.lab.bmcsim.ipmi import Fault

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "lab"         # the installer image is built once and reused
BOOT_TIMEOUT_S = 150                    # TCG guests on 2 cores: ~20-40 s to phone home
RUN_LIMIT_S = 600


def _require_lab_host() -> None:
    try:
        rack.check_host()
    except Exception as err:  # the message names what is missing
        pytest.fail(f"the virtual rack cannot run here: {err}")


def _provision_argv(lab_dir: Path, ns: str) -> list[str]:
    p = lab_paths(lab_dir)
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "cloudplan.cli", "provision", str(p["inventory"]),
            "--state", str(p["provision_state"]), "--dhcp", "--boot-timeout", str(BOOT_TIMEOUT_S),
            "--concurrency", "8", "--power-check", "5"]




def _errors(db: Path) -> dict[str, str | None]:
    with StateStore(db, create=False) as st:
        return {r.name: r.error for r in st.nodes() if r.error}


def _event_kinds(db: Path, name: str) -> list[str]:
    if not db.exists():
        return []
    with StateStore(db, create=False) as st:
        return [e.kind for e in st.events(name)] if st.has_node(name) else []


def _wait(pred, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"provision exited ({proc.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def _vm_pid(lab_dir: Path, name: str) -> int | None:
    return rack._pid_alive(lab_paths(lab_dir)["vms"] / f"{name}.pid", "qemu-system")


def _leftovers(lab_dir: Path, ns: str) -> list[str]:
    left = []
    if rack.namespace_exists(ns):
        left.append(f"namespace {ns}")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    left += [ln.strip() for ln in ps.splitlines() if str(lab_dir) in ln and "ps -eo" not in ln]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    left += [ln.split(":")[1].strip() for ln in links.splitlines() if "labtap" in ln or "labbr" in ln]
    return left


def _print_diagnostics(lab_dir: Path) -> None:
    """The lab daemon's log and every node's history, for a failed run's log."""
    p = lab_paths(lab_dir)
    if p["daemon_log"].exists():
        print("--- daemon.log (last lines)\n" + "\n".join(p["daemon_log"].read_text(errors="replace").splitlines()[-30:]))
    for f in sorted(p["vms"].glob("*.qemu.log")) if p["vms"].exists() else []:
        if f.stat().st_size:
            print(f"--- {f.name}\n" + f.read_text(errors="replace")[-2000:])
    if p["provision_state"].exists():
        with StateStore(p["provision_state"], create=False) as st:
            for e in st.events():
                print(f"{e.at:.1f} {e.node} {e.kind} {e.from_state}->{e.to_state} {e.step} {e.detail}")


@pytest.fixture
def lab():
    _require_lab_host()
    lab_dir = Path(tempfile.mkdtemp(prefix="cloudplan-lab-"))
    ns = f"cplab-{secrets.token_hex(3)}"
    try:
        yield lab_dir, ns
    finally:
        _print_diagnostics(lab_dir)
        consoles = lab_dir / "vms"
        if consoles.exists():   # what the machines printed, for a failed run's log
            for f in sorted(consoles.glob("*.console")):
                print(f"--- {f.name} (last lines)\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        rack.down(lab_dir, missing_ok=True)
        if rack.namespace_exists(ns):
            subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(lab_dir, ignore_errors=True)


def test_fault_flag_is_checked(capsys):
    assert main(["lab", "up", "--fault", "lab-cmp-01=on-fire", "--dir", "/nonexistent"]) == 2
    assert "ignores-boot" in capsys.readouterr().err


def test_lab_up_needs_root_and_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["lab", "up", "--dir", str(tmp_path / "lab")]) == 1
    assert capsys.readouterr().err.strip().startswith("Error: the lab needs root")
    assert not (tmp_path / "lab").exists()


def test_status_without_a_lab_names_the_directory(capsys, tmp_path):
    assert main(["lab", "status", "--dir", str(tmp_path)]) == 1
    assert f"{tmp_path}/lab.json: no lab here" in capsys.readouterr().err


def test_a_rack_comes_up_with_no_hands_and_comes_down_clean(lab, capsys):
    lab_dir, ns = lab
    rc = main(["lab", "up", "--nodes", "4", "--dir", str(lab_dir), "--namespace", ns, "--cache", str(CACHE),
               "--fault", "lab-cmp-04=ignores-boot"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert f"ip netns exec {ns} cloudplan provision {lab_dir}/inventory.yaml" in printed
    state = load_state(lab_dir)
    assert [n.fault for n in state.nodes] == [Fault.none] * 3 + [Fault.ignores_boot]

    # The machines are off, and their BMCs say so to a real IPMI client.
    assert main(["lab", "status", "--dir", str(lab_dir), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["daemon_pid"] and st["namespace_exists"] and {n["power"] for n in st["nodes"]} == {"off"}
    pw = lab_paths(lab_dir)["password"]
    ipmi = subprocess.run(["ip", "netns", "exec", ns, "ipmitool", "-I", "lanplus", "-C", "3", "-H",
                           state.nodes[0].bmc_address, "-U", "admin", "-f", str(pw), "chassis", "power", "status"],
                          capture_output=True, text=True, timeout=30)
    assert "Chassis Power is off" in ipmi.stdout, ipmi.stderr

    db = lab_paths(lab_dir)["provision_state"]
    t0 = time.monotonic()
    # Its output goes to a file: a pipe nobody reads would fill and stall the run.
    first_log = Path(tempfile.mkstemp(prefix="cloudplan-lab-first-", suffix=".log")[1])
    with open(first_log, "w") as out:
        first = subprocess.Popen(_provision_argv(lab_dir, ns), stdout=out, stderr=subprocess.STDOUT)
    try:
        # lab-cmp-03 goes dark mid-install: its VM is killed a few seconds after power-on.
        pid3 = _wait(lambda: _vm_pid(lab_dir, "lab-cmp-03"), 120, "lab-cmp-03 powered on", first)
        time.sleep(3)
        os.kill(pid3, signal.SIGKILL)
        _wait(lambda: "powered-off" in _event_kinds(db, "lab-cmp-03"), 60, "the power check to notice", first)
        # The provisioning process dies (SIGKILL) once a node is deployed.
        _wait(lambda: NodeState.deployed in stored_states(db).values(), RUN_LIMIT_S, "a first deployed node", first)
    finally:
        first.kill()
        first.wait()
        print("--- first run (killed)\n" + first_log.read_text(errors="replace")[-3000:])
        print(f"errors when it was killed: {_errors(db) if db.exists() else {}}")
        first_log.unlink()
    killed_at = {n: s for n, s in stored_states(db).items()}
    assert len(killed_at) == 4, killed_at
    with StateStore(db, create=False) as st:
        power_ons_at_kill = {r.name: r.power_ons for r in st.nodes()}

    second = subprocess.run(_provision_argv(lab_dir, ns), capture_output=True, text=True, timeout=RUN_LIMIT_S)
    wall_s = time.monotonic() - t0
    final = stored_states(db)
    assert final == {"lab-cmp-01": NodeState.deployed, "lab-cmp-02": NodeState.deployed,
                     "lab-cmp-03": NodeState.deployed, "lab-cmp-04": NodeState.failed}, \
        (final, _errors(db), second.stdout[-2000:], second.stderr[-2000:])
    assert second.returncode == 1, "the exit code is 0 only when every node is deployed"
    print(f"first power-on to last node deployed, SIGKILL and resume included: {wall_s:.0f} s")

    with StateStore(db, create=False) as st:
        recs = {r.name: r for r in st.nodes()}
        events = {n: st.events(n) for n in recs}
    assert "phone-home" in recs["lab-cmp-04"].error and "boot timeout" in recs["lab-cmp-04"].error
    for name in ("lab-cmp-01", "lab-cmp-02", "lab-cmp-03"):
        r = recs[name]
        # SSH verification ran against the node, pinned to the host key it phoned home with.
        assert r.facts == {"hostname": name, "cores": 1, "ram_gib": pytest.approx(r.facts["ram_gib"]),
                           "disks": 1}, r.facts
        assert r.host_key and r.host_key.split()[0] in ("ssh-ed25519", "ecdsa-sha2-nistp256")
        kinds = [e.kind for e in events[name]]
        deployed_at = max(i for i, e in enumerate(events[name]) if e.to_state == "deployed")
        assert "power" not in kinds[deployed_at + 1:], f"{name} powered after it was deployed"
        states_seen = {e.to_state for e in events[name]}
        assert {"verifying-bmc", "setting-boot", "waiting-boot", "phoned-home", "verifying-ssh",
                "deployed"} <= states_seen, (name, kinds)
    assert "powered-off" in [e.kind for e in events["lab-cmp-03"]], "the killed machine went unnoticed"
    # A node deployed before the SIGKILL is left alone by the second run.
    for name, s in killed_at.items():
        if s is NodeState.deployed:
            assert recs[name].power_ons == power_ons_at_kill[name], (name, recs[name].power_ons)

    assert main(["lab", "down", "--dir", str(lab_dir)]) == 0
    assert _leftovers(lab_dir, ns) == []
    assert not lab_dir.exists()


# -- `lab up --inventory`: machines built to match a laid-out inventory (no machines started here) -------


@pytest.fixture
def laid_out(tmp_path, capsys) -> Path:
    """The edge example sized and laid out on the lab's site."""
    bp, inv = tmp_path / "edge.yaml", tmp_path / "planned.yaml"
    assert main(["size", str(REPO / "examples" / "edge.yaml"), "-o", str(bp)]) == 0
    assert main(["layout", str(bp), "--site", str(REPO / "examples" / "lab-site.yaml"), "-o", str(inv)]) == 0
    # the converged control plane's controllers are named (they are hyperconverged hosts)
    assert "controllers: r1-hci-01 (r1), r1-hci-02 (r1), r1-hci-03 (r1)\n" in capsys.readouterr().out
    return inv


def _os_image():
    from types import SimpleNamespace

    return SimpleNamespace(size_bytes=3 << 30, path=Path("/images/os.raw"), sha256="ab" * 32)


def test_lab_builds_the_laid_out_nodes_and_hands_back_their_inventory(laid_out, tmp_path):
    from cloudplan.inventory import BMCDriver, Inventory, ProvisioningConfig
    from cloudplan.io import load_model
    from cloudplan.lab import adopt

    planned = load_model(Inventory, laid_out)
    state = adopt.lab_state(planned, str(laid_out), namespace="ns1", kernel=Path("k"), initrd=Path("i"), cpus=1,
                            memory_mib=2048, os_image=_os_image(), miscabled=["r1-hci-03"], planned=laid_out)
    assert [(n.name, n.bmc_address, n.bmc_port, n.redfish, n.uefi, n.address, n.api_address, n.miscabled)
            for n in state.nodes] == [
        ("r1-hci-01", "10.77.1.11", 443, True, True, "10.77.0.11", "10.20.0.11", False),
        ("r1-hci-02", "10.77.1.12", 443, True, True, "10.77.0.12", "10.20.0.12", False),
        ("r1-hci-03", "10.77.1.13", 443, True, True, "10.77.0.13", "10.20.0.13", True)]
    assert (state.network_cidr, state.bmc_cidr, state.api_cidr, state.api_gateway, state.storage_vlan) == (
        "10.77.0.0/24", "10.77.1.0/24", "10.20.0.0/24", "10.20.0.1", 40)
    assert len({n.mac for n in state.nodes} | {m for n in state.nodes for m in n.api_macs}) == 9
    prov = ProvisioningConfig(http="10.77.0.1:8080")
    got = adopt.integrated(planned, state, tmp_path, prov)
    assert got.provisioning == prov and got.control_plane == planned.control_plane
    assert list(got.bonds) == ["bond0"] and got.bonds["bond0"].members == ["lan0", "lan1"]
    for old, new, lab in zip(planned.nodes, got.nodes, state.nodes):
        assert (new.name, new.addresses, new.role, new.also, new.rack, new.u) == (
            old.name, old.addresses, old.role, old.also, old.rack, old.u)
        assert new.bmc.driver is BMCDriver.redfish and new.bmc.url == old.bmc.url
        assert new.bmc.password_file == str(tmp_path / "bmc-password")
        assert new.bmc.ca_file == str(tmp_path / "ca" / "ca.pem")
        assert (new.mac, new.uuid, new.nics) == (lab.mac, lab.uuid, {"lan0": lab.api_macs[0], "lan1": lab.api_macs[1]})
        assert new.root_disk.serial == lab.root_serial and new.data_disk_serials == [lab.data_serial]
        assert (new.expect.cores, new.expect.ram_gib) == (1, 2.0)     # the machine, not the planned server
        assert old.expect.cores > 1


@pytest.mark.parametrize("edit, message", [
    (lambda inv: inv["networks"]["api"].update(vlan=20), "networks.api.vlan: VLAN 20: the lab carries the API "
                                                          "network untagged"),
    (lambda inv: inv["networks"].pop("bmc"), "networks.bmc: the lab needs this network"),
    (lambda inv: inv["nodes"][1]["bmc"].update(address="https://192.0.2.7"),
     "nodes[1].bmc.address: r1-hci-02's BMC '192.0.2.7' is not an address on the bmc network 10.77.1.0/24"),
    (lambda inv: inv["nodes"][0]["addresses"].pop("api"), "nodes[0].addresses.api: r1-hci-01 needs an address"),
    (lambda inv: inv["nodes"][2]["addresses"].update(provisioning="10.77.0.1"),
     "nodes[2].addresses.provisioning: r1-hci-03's 10.77.0.1 is taken by the lab's boot service"),
    (lambda inv: inv["nodes"][0]["addresses"].update(api="10.20.0.1"),
     "nodes[0].addresses.api: r1-hci-01's 10.20.0.1 is taken by the API gateway, which the lab holds"),
])
def test_an_inventory_the_lab_cannot_build_names_the_file_and_field(laid_out, edit, message):
    import yaml

    from cloudplan.errors import LabError
    from cloudplan.inventory import Inventory
    from cloudplan.io import load_model
    from cloudplan.lab import adopt

    data = yaml.safe_load(laid_out.read_text())
    edit(data)
    laid_out.write_text(yaml.safe_dump(data))
    with pytest.raises(LabError) as err:
        adopt.lab_state(load_model(Inventory, laid_out), str(laid_out), namespace="ns1", kernel=Path("k"),
                        initrd=Path("i"), cpus=1, memory_mib=2048, os_image=_os_image(), miscabled=None,
                        planned=laid_out)
    assert str(err.value).startswith(f"{laid_out}: ") and message in str(err.value), str(err.value)


def test_lab_up_inventory_refuses_options_it_would_contradict(laid_out, capsys, tmp_path):
    assert main(["lab", "up", "--dir", str(tmp_path / "lab"), "--inventory", str(laid_out)]) == 1
    assert "--inventory builds image-deploy machines: give --image too" in capsys.readouterr().err
    assert main(["lab", "up", "--dir", str(tmp_path / "lab"), "--inventory", str(laid_out), "--image",
                 str(tmp_path / "img"), "--uefi", "r1-hci-01"]) == 1
    assert "the inventory says each node's firmware" in capsys.readouterr().err
    assert main(["lab", "up", "--dir", str(tmp_path / "lab"), "--redfish", "lab-cmp-01"]) == 1
    assert "--redfish need --image" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists()
