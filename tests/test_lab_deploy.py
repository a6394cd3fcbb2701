"""From a workload to a rack Kolla-Ansible can reach: size -> layout -> lab -> provision -> manifests -> ansible.

`cloudplan size` sizes the edge example (three converged hosts) and `cloudplan layout` lays it out
on the lab's site (`examples/lab-site.yaml`); the test turns the first host into an older IPMI
chassis (PXE, legacy BIOS) and adds a compute node (IPMI, PXE, UEFI) whose API NICs will be cabled
to the wrong segment. `cloudplan lab up --inventory` builds a machine for each node (a blank root
disk and a data disk, each with a serial; two API NICs) behind the BMC the inventory names, on its
addresses: real IPMI BMCs, and for the Redfish hosts sushy-tools' emulator driving the machine's
QEMU over HTTPS with the lab's CA, UEFI firmware (OVMF). The real `cloudplan provision` (its own
process, inside the lab's namespace) boots the IPMI machines over PXE (dnsmasq, the NIC's iPXE ROM,
the boot service's script with the deploy ramdisk's arguments) and the Redfish ones from virtual
media: their deploy ISO (the ramdisk, its arguments and static address in grub.cfg) inserted,
booted once from CD, ejected after the ramdisk's last report; no DHCP or PXE. On every machine the
ramdisk streams the OS image (`cloudplan image build`) onto the root disk, reads it back against its
sha256, writes the node's seed, wipes the data disk, reports each step with its token and powers
off. cloudplan sets disk boot through the BMC and powers the machine on; the installed OS's
cloud-init applies the seed (static provisioning address; an active-backup bond of the two NICs
carrying the API network untagged and the storage network on VLAN 40; hostname, the SSH key) and
phones its own host key home; SSH verification pins it and checks / on the root disk by serial, a
kernel booted from disk, every network's address on its interface, the API gateway answering
through the bond, and the data disk empty. The miscabled node reports in from its disk, then fails
naming the network; the others are deployed. `cloudplan manifests` writes Kolla-Ansible's files from
the lab's inventory and the blueprint, and ansible (the release's own ansible-core) runs ping, setup
and stat through the generated `multinode` from the namespace, host keys pinned: the three hosts
answer at their API addresses, the interface globals.yml names carries that address, the Redfish
hosts run UEFI firmware and the IPMI one legacy BIOS; the miscabled node is the one unreachable.
(The VLAN is the storage network's, not the API's, because this host's kernel has neither 802.1Q
nor bridge VLAN filtering: the namespace, where ansible runs, cannot join a VLAN; the bridge passes
the tagged frames between the nodes.) `lab down` leaves nothing. Needs root (CI runs as root);
without root or QEMU the test fails, it never skips.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cloudplan.cli import main
from cloudplan.lab import rack
from cloudplan.lab.bench import deploy_window, step_shares
from cloudplan.lab.state import lab_paths
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
# Measured here (TCG, 1 vCPU per machine, 2 cores shared with other work): the ramdisk reports in
# 40-50 s after power-on; with three machines at once it wrote and read back the earlier 3 GiB image in
# 5-6 min at a load of 4-6 (9-10 min at 10-15), and the installed OS phones home 2-3 min after the
# power-on from disk (9-10 min at 10-15). Four machines at a load of 8-10: the whole test 10.4-11.9 min,
# first power-on to the last node deployed 592-634 s. Timeouts leave about twice the loaded figures.
BOOT_TIMEOUT_S = 300
DEPLOY_TIMEOUT_S = 1500
FIRST_BOOT_TIMEOUT_S = 1200
RUN_LIMIT_S = 3600
ANSIBLE_RELEASE = "2026.2"
IMAGE_STATES = ["verifying-bmc", "bmc-verified", "setting-boot", "waiting-boot", "deploying", "image-written",
                "rebooting", "reported-in", "verifying-ssh", "deployed"]


@pytest.fixture
def lab():
    try:
        rack.check_host()
    except Exception as err:  # the message names what is missing
        pytest.fail(f"the virtual rack cannot run here: {err}")
    lab_dir = Path(tempfile.mkdtemp(prefix="cloudplan-labd-"))
    ns = f"cplab-{secrets.token_hex(3)}"
    try:
        yield lab_dir, ns
    finally:
        p = lab_paths(lab_dir)
        for f in sorted(p["vms"].glob("*.console")) if p["vms"].exists() else []:
            print(f"--- {f.name} (last lines)\n" + "\n".join(f.read_text(errors="replace").splitlines()[-25:]))
        if p["provision_state"].exists():
            with StateStore(p["provision_state"], create=False) as st:
                for e in st.events():
                    print(f"{e.at:.1f} {e.node} {e.kind} {e.from_state}->{e.to_state} {e.step} {e.detail}")
        rack.down(lab_dir, missing_ok=True)
        if rack.namespace_exists(ns):
            subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(lab_dir, ignore_errors=True)


# The mixed rack: what layout made of the edge blueprint (three converged Redfish hosts), the first
# turned into an older IPMI chassis booted over PXE with legacy BIOS, and one compute node more whose
# API NICs are cabled wrong.
IPMI_NODE, REDFISH_NODES, BAD_NODE = "r1-hci-01", ("r1-hci-02", "r1-hci-03"), "r1-cmp-01"
API = {IPMI_NODE: "10.20.0.11", REDFISH_NODES[0]: "10.20.0.12", REDFISH_NODES[1]: "10.20.0.13", BAD_NODE: "10.20.0.14"}


def _mixed_rack(planned: Path) -> None:
    inv = yaml.safe_load(planned.read_text())
    nodes = {n["name"]: n for n in inv["nodes"]}
    assert sorted(nodes) == [IPMI_NODE, *REDFISH_NODES], sorted(nodes)
    assert {n["bmc"]["driver"] for n in nodes.values()} == {"redfish"}      # the catalog's 2026 chassis
    old = nodes[IPMI_NODE]
    old["bmc"] = {"driver": "ipmi", "address": "10.77.1.11", "username": "admin", "password_file": "bmc-password"}
    old.update(boot="pxe", boot_mode="legacy")
    for name in REDFISH_NODES:
        nodes[name]["boot"] = "vmedia"
    extra = copy.deepcopy(old)
    extra.update(name=BAD_NODE, role="compute", also=[], u=4, boot_mode="uefi",
                 addresses={"provisioning": "10.77.0.14", "api": API[BAD_NODE], "storage": "10.40.0.14"})
    extra["bmc"]["address"] = "10.77.1.14"
    inv["nodes"].append(extra)
    planned.write_text(yaml.safe_dump(inv, sort_keys=False))


@pytest.mark.timeout(RUN_LIMIT_S + 1200)   # the provisioning run's own limit, and the lab's build around it
def test_size_layout_lab_provision_manifests_then_ansible_reaches_the_rack(lab, capsys, tmp_path):
    lab_dir, ns = lab
    bp, planned, kolla = tmp_path / "edge.yaml", tmp_path / "planned.yaml", tmp_path / "kolla"
    assert main(["size", str(REPO / "examples" / "edge.yaml"), "-o", str(bp)]) == 0, capsys.readouterr()
    assert main(["layout", str(bp), "--site", str(REPO / "examples" / "lab-site.yaml"), "-o", str(planned)]) == 0
    _mixed_rack(planned)
    rc = main(["lab", "up", "--dir", str(lab_dir), "--namespace", ns, "--cache", str(CACHE / "lab"),
               "--image", str(CACHE / "os-image"), "--ramdisk-cache", str(CACHE / "deploy-ramdisk"),
               "--inventory", str(planned), "--miscabled", BAD_NODE])
    assert rc == 0, capsys.readouterr()
    p = lab_paths(lab_dir)
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "cloudplan.cli", "provision", str(p["inventory"]),
            "--state", str(p["provision_state"]), "--dhcp", "--boot-timeout", str(BOOT_TIMEOUT_S),
            "--deploy-timeout", str(DEPLOY_TIMEOUT_S), "--first-boot-timeout", str(FIRST_BOOT_TIMEOUT_S),
            "--power-check", "5"]
    t0 = time.monotonic()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    wall_s = time.monotonic() - t0
    print(run.stdout[-3000:], run.stderr[-3000:])
    assert run.returncode == 1, run.stderr[-2000:]      # 0 only when every node is deployed
    print(f"power-on to the last node done (three deployed, one failed): {wall_s:.0f} s")
    shares = step_shares(p["provision_state"])
    print(f"window {deploy_window(p['provision_state'])}, steps {shares}")
    assert set(shares) == {"ramdisk boot", "image write", "reboot", "first boot", "ssh verification"}

    with StateStore(p["provision_state"], create=False) as st:
        bad = st.get(BAD_NODE)
        assert bad.state is NodeState.failed
        assert "network api (bond0): gateway 10.20.0.1 does not answer" in bad.error, bad.error
        # UEFI over iPXE, then from its disk: its installed OS reported in before the network check failed it.
        assert [e.to_state for e in st.events(BAD_NODE) if e.kind == "transition"][-3:] == [
            "reported-in", "verifying-ssh", "failed"]
        _redfish_nodes_booted_from_virtual_media(st)
        deployed = [r for r in st.nodes() if r.name != BAD_NODE]
        for i, rec in enumerate(sorted(deployed, key=lambda r: r.name), start=1):
            assert rec.state is NodeState.deployed
            seen = [e.to_state for e in st.events(rec.name) if e.kind == "transition"][1:]
            assert seen == IMAGE_STATES, seen
            reports = [e.detail.split(":")[0].split(" ")[0] for e in st.events(rec.name)
                       if e.kind == "deploy-report"]
            assert reports == ["started", "root-disk", "image-written", "image-verified", "seed-written",
                               "data-wiped", "done"], reports
            inst = rec.facts["installed"]
            assert inst["root_serial"] == f"ROOT-{i:02d}" and inst["networks"] == ["provisioning", "api", "storage"]
            assert len(inst["empty_data_disks"]) == 1, inst
            assert rec.address == f"10.77.0.{10 + i}" and rec.power_ons == 2
        keys = {API[r.name]: r.host_key for r in deployed}

    assert main(["manifests", str(p["inventory"]), "--blueprint", str(bp), "-o", str(kolla)]) == 0
    _ansible_through_the_kolla_inventory(lab_dir, ns, kolla, keys)

    assert main(["lab", "down", "--dir", str(lab_dir)]) == 0
    assert not rack.namespace_exists(ns) and not lab_dir.exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(lab_dir) not in ps


def _redfish_nodes_booted_from_virtual_media(st: StateStore) -> None:
    """The Redfish BMCs: the deploy ISO inserted, booted once from CD, ejected after the ramdisk's last
    report and before the disk boot; no iPXE script fetched. The IPMI nodes: iPXE, no ISO."""
    for name in REDFISH_NODES:
        events = [(e.kind, e.detail) for e in st.events(name)]
        kinds = [k for k, _ in events]
        for kind in ("iso-built", "vmedia-served", "vmedia-inserted", "vmedia-ejected", "boot-disk"):
            assert kind in kinds, events
        assert kinds.index("vmedia-inserted") < kinds.index("power") < kinds.index("vmedia-ejected") \
            < kinds.index("boot-disk"), events
        assert ("transition", "power on; virtual CD boot confirmed") in events, events
        assert "ipxe-served" not in kinds, events
    for name in (IPMI_NODE, BAD_NODE):
        kinds = [e.kind for e in st.events(name)]
        assert "ipxe-served" in kinds and "iso-built" not in kinds, kinds


def _ansible_through_the_kolla_inventory(lab_dir: Path, ns: str, kolla: Path, keys: dict[str, str]) -> None:
    """`ansible -i kolla/multinode baremetal -m ping`, `-m setup`, `-m stat` from the namespace, as Kolla-Ansible
    would reach the hosts: ansible_host on the API network, the user and key provisioning installed, the
    host keys pinned to the ones the nodes reported. The miscabled node is the one unreachable."""
    from kolla_tools import venv

    multinode = (kolla / "multinode").read_text()
    for name, addr in API.items():
        assert f"{name} ansible_host={addr} ansible_user=root ansible_ssh_private_key_file=" in multinode, multinode
    globals_yml = yaml.safe_load((kolla / "globals.yml").read_text())
    named = {v for k, v in globals_yml.items() if k.endswith("_interface")}
    assert named == {"bond0"}, named
    known = lab_dir / "known_hosts"
    known.write_text("".join(f"{addr} {key}\n" for addr, key in keys.items()))
    ssh_args = f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o ConnectTimeout=10"
    env = {"PATH": f"{venv(ANSIBLE_RELEASE)}:/usr/sbin:/usr/bin:/sbin:/bin", "ANSIBLE_SSH_ARGS": ssh_args,
           "ANSIBLE_LOCAL_TEMP": str(lab_dir / "ansible-tmp"), "HOME": str(lab_dir),
           "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}
    for module in ("ping", "setup", "stat"):
        args = ["-a", "path=/sys/firmware/efi"] if module == "stat" else []
        # baremetal: the hosts (Kolla's bootstrap-servers targets it), not the deployment host, localhost
        got = subprocess.run(["ip", "netns", "exec", ns, "ansible", "-i", str(kolla / "multinode"), "baremetal",
                              "-m", module, *args, "-o"], capture_output=True, text=True, timeout=600, env=env)
        assert got.returncode == 4, got.stdout[-3000:] + got.stderr[-2000:]    # 4: a host unreachable
        lines = {ln.split()[0]: ln for ln in got.stdout.splitlines() if " | " in ln}
        assert {h for h, ln in lines.items() if "SUCCESS" in ln} == set(API) - {BAD_NODE}, got.stdout[-3000:]
        assert "UNREACHABLE" in lines[BAD_NODE], got.stdout[-3000:]
        ok = {h: json.loads(ln.split("=>", 1)[1]) for h, ln in lines.items() if "SUCCESS" in ln}
        if module == "stat":   # the Redfish machines run UEFI firmware (OVMF), the IPMI one legacy BIOS
            efi = {h: r["stat"]["exists"] for h, r in ok.items()}
            assert efi == {IPMI_NODE: False, REDFISH_NODES[0]: True, REDFISH_NODES[1]: True}, efi
        if module == "setup":
            for host, r in ok.items():
                facts = r["ansible_facts"]
                assert {"bond0", "bond0.40", "prov0", "lan0", "lan1"} <= set(facts["ansible_interfaces"]), \
                    facts["ansible_interfaces"]
                for iface in named:      # what globals.yml names carries the address Kolla will use
                    assert facts[f"ansible_{iface}"]["ipv4"]["address"] == API[host], facts[f"ansible_{iface}"]
                assert facts["ansible_bond0"]["mode"] == "active-backup"
                assert sorted(facts["ansible_bond0"]["slaves"]) == ["lan0", "lan1"]
                assert facts["ansible_default_ipv4"]["interface"] == "bond0"
                assert facts["ansible_bond0.40"]["ipv4"]["address"].startswith("10.40.0.")
                assert facts["ansible_hostname"] == host
