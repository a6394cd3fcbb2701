"""Two `cloudplan provision` processes sharing one PostgreSQL state store, as two
cloudplan hosts (one per site or rack row) would: real pyghmi BMCs on loopback,
a real sshd per node, each process its own boot server, a real PostgreSQL
server. Each node must be handled by exactly one process: booted once, from
the boot server of the process that claimed it, and deployed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures
from provision_fixtures import make_world  # noqa: F401 - make_world is a fixture

from cloudplan.provision.states import NodeState
from cloudplan.provision.store import open_store

# sshd in its own UTS namespace (unshare --uts) needs root
pytestmark = pytest.mark.root


def _second_host(w, tmp_path):
    """The same inventory as the second cloudplan host sees it: its own boot server port."""
    data = yaml.safe_load(w.inventory.read_text())
    data["provisioning"]["http"] = f"127.0.0.1:{w.http_ports[1]}"
    inv = tmp_path / "inventory-host-b.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    return inv


def _run_both(w, inv_b, url, only_a: list[str], only_b: list[str], tmp_path):
    """Start both hosts' `cloudplan provision` at once; (exit code, output) of each."""
    timeouts = ["--boot-timeout", "60", "--bmc-timeout", "20", "--ssh-timeout", "60"]
    cmd = [sys.executable, "-c", "from cloudplan.cli import main; main()", "provision"]
    procs = [subprocess.Popen([*cmd, str(inv), "--state", url, "--only", ",".join(only), *timeouts],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              # each host its own local files
                              env={**os.environ, "XDG_STATE_HOME": str(tmp_path / f"host-{host}")})
             for host, inv, only in (("a", w.inventory, only_a), ("b", inv_b, only_b))]
    try:
        outputs = ["".join(p.communicate(timeout=240)) for p in procs]
        return [(p.returncode, out) for p, out in zip(procs, outputs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _check_each_node_handled_once(w, url, names):
    with open_store(url, create=False) as st:
        recs = {r.name: r for r in st.nodes()}
        assert {n: recs[n].state for n in names} == {n: NodeState.deployed for n in names}, (
            {n: (r.state.value, r.error) for n, r in recs.items()}, w.fleet.hook_log(),
            {n: [(e.kind, e.detail) for e in st.events(n)] for n in names if not recs[n].state.is_deployed()})
        for n in names:
            seq = [e.to_state for e in st.events(n) if e.kind == "transition"]
            assert seq == ["pending", "verifying-bmc", "bmc-verified", "setting-boot", "waiting-boot",
                           "phoned-home", "verifying-ssh", "deployed"], (n, seq)
        runs = st.runs()
        spans = st._read("SELECT started_at, finished_at FROM runs ORDER BY id")
    # the machines saw one boot each, from one boot server
    assert w.fleet.power_ons() == {n: 1 for n in names}
    served: dict[str, list[str]] = {}
    for name, what in w.fleet.hook_log():
        if what.startswith("served by "):
            served.setdefault(name, []).append(what.removeprefix("served by "))
    assert {n: len(served.get(n, [])) for n in names} == {n: 1 for n in names}, served
    assert all(r[2] == "finished" for r in runs) and len(runs) == 2
    (start_1, end_1), (start_2, end_2) = spans
    assert start_2 < end_1 and start_1 < end_2, "the two runs did not overlap in time"
    return {n: served[n][0] for n in names}


def test_two_hosts_on_disjoint_nodes(make_world, pg_url, tmp_path):
    w = make_world({n: {} for n in ("a1", "a2", "b1", "b2")}, hosts=2)
    inv_b = _second_host(w, tmp_path)
    (rc_a, out_a), (rc_b, out_b) = _run_both(w, inv_b, pg_url, ["a1", "a2"], ["b1", "b2"], tmp_path)
    assert rc_a == 0, out_a
    assert rc_b == 0, out_b
    served = _check_each_node_handled_once(w, pg_url, w.names)
    url_a, url_b = (f"http://127.0.0.1:{p}" for p in w.http_ports)
    assert served == {"a1": url_a, "a2": url_a, "b1": url_b, "b2": url_b}


def test_two_hosts_on_overlapping_nodes(make_world, pg_url, tmp_path):
    w = make_world({n: {} for n in ("n1", "n2", "n3", "n4", "n5")}, hosts=2)
    inv_b = _second_host(w, tmp_path)
    (rc_a, out_a), (rc_b, out_b) = _run_both(w, inv_b, pg_url, ["n1", "n2", "n3", "n4"], ["n2", "n3", "n4", "n5"],
                                             tmp_path)
    served = _check_each_node_handled_once(w, pg_url, w.names)
    url_a, url_b = (f"http://127.0.0.1:{p}" for p in w.http_ports)
    assert served["n1"] == url_a and served["n5"] == url_b      # only one host asked for these
    # A host that left a shared node to the other says so when the node was not deployed by its end
    for rc, out in ((rc_a, out_a), (rc_b, out_b)):
        errors = [line for line in out.splitlines() if line.startswith("  n")]
        assert rc == (1 if errors else 0), out
        assert all("left to provision run" in line and " on host " in line for line in errors), out
        assert "Traceback" not in out, out
