"""Image deploys through the orchestrator, with real parts: simulated IPMI BMCs in their own
process, the real boot service over HTTP (iPXE script, image, seed, reports, phone-home), a
real sshd per node, the real state file, and the run SIGKILLed in the new states.

The test plays the machines (provision_fixtures.NodePlayer): a network boot fetches the iPXE
script, takes the deploy ramdisk's arguments from its kernel line, fetches the image and the
seed and checks both against the digests given there, reports each step with the token and
powers off; a boot from disk reads the user-data out of that seed image (real mtools) and
phones home with the node's sshd host key. What the real ramdisk and the real installed OS do
is proven under QEMU in test_deploy_mirror.py and the lab; the installed-OS checks there too (a host sshd
has no deployed disk: see image_runner.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

import pytest
from image_runner import recorded_check
from provision_fixtures import make_world, sigkill_when, stored_states  # noqa: F401 - make_world is a fixture

from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions, plan
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore

pytestmark = pytest.mark.root   # sshd in its own UTS namespace (unshare --uts)

RUNNER = Path(__file__).with_name("image_runner.py")
IMAGE_STATES = ["pending", "verifying-bmc", "bmc-verified", "setting-boot", "waiting-boot", "deploying",
                "image-written", "rebooting", "reported-in", "verifying-ssh", "deployed"]


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "os.raw"
    path.write_bytes(os.urandom(1 << 20))
    return path


def _transitions(st: StateStore, name: str) -> list[str]:
    return [e.to_state for e in st.events(name) if e.kind == "transition"]


def _run(w, **opts) -> object:
    with StateStore(w.state, exclusive=True) as st:
        return Orchestrator(load_model(Inventory, w.inventory), st, ProvisionOptions(
            boot_timeout_s=30, ssh_timeout_s=20, power_check_s=1, **opts),
            installed_check=recorded_check).run()


def test_image_deploy_writes_reboots_from_disk_and_reports_in(make_world, image):
    w = make_world({"a": {}, "b": {}}, image=image)
    result = _run(w)
    assert result.ok, result.errors
    log = w.fleet.hook_log()
    with StateStore(w.state, create=False) as st:
        for n in "ab":
            rec = st.get(n)
            assert rec.state is NodeState.deployed
            assert _transitions(st, n) == IMAGE_STATES
            # The host key pinned is the one the installed OS reported, and SSH verification used it.
            assert rec.host_key == w.sshds[n].host_key.split()[0] + " " + w.sshds[n].host_key.split()[1]
            assert rec.facts["installed"]["hostname"] == n
            reports = [e.detail for e in st.events(n) if e.kind == "deploy-report"]
            assert [r.split(" ")[0].rstrip(":") for r in reports] == [
                "started", "root-disk", "image-written", "image-verified", "seed-written", "data-wiped", "done"]
            assert rec.power_ons == 2
    # network boot, then (after the ramdisk powered off) disk boot set persistently and power on
    assert w.fleet.commands() == {n: ["bootdev network uefi", "on", "bootdev hd persistent uefi", "on"] for n in "ab"}
    assert w.fleet.boots() == {n: ["network", "hd"] for n in "ab"}
    assert {(n, "installed OS phone-home 200") for n in "ab"} <= set(log), log


def test_a_failed_deploy_fails_its_node_with_the_ramdisks_reason(make_world, image):
    w = make_world({"a": {}, "bad": {"play": "deploy-fails"}}, image=image)
    result = _run(w)
    assert not result.ok
    with StateStore(w.state, create=False) as st:
        assert st.get("a").state is NodeState.deployed
        bad = st.get("bad")
        assert bad.state is NodeState.failed
        assert "the deploy ramdisk failed: image-verified: sha256 mismatch" in bad.error
    # never powered on from disk: nothing bootable was written
    assert w.fleet.commands()["bad"] == ["bootdev network uefi", "on"]


def test_no_report_is_a_boot_timeout_and_a_stalled_deploy_a_deploy_timeout(make_world, image):
    w = make_world({"silent": {"play": "never"}, "slow": {"pace": {"report_s": 3}}}, image=image)
    result = _run(w, deploy_timeout_s=4, boot_retries=0)
    assert "no report from the deploy ramdisk within 30 s (boot timeout)" in result.errors["silent"]
    assert "deploy not done within 4 s (deploy timeout; last report: " in result.errors["slow"]


def test_plan_of_an_image_deploy(make_world, image):
    w = make_world({"a": {"sshd": False}}, image=image)
    inv = load_model(Inventory, w.inventory)
    actions = plan(inv, None, ProvisionOptions())[0].actions
    assert actions[-6:] == ["wait for the deploy ramdisk's reports (image written, verified, seed written, done)",
                            "wait for it to power off", "set boot device to disk", "power on",
                            "wait for the installed OS to phone home",
                            "SSH verification of the installed OS with its reported host key"]
    # Over virtual media the ISO carries the deploy ramdisk, and comes out before the disk boots.
    from cloudplan.inventory import BMCDriver, BootPath

    node = inv.nodes[0].model_copy(update={"boot": BootPath.vmedia, "bmc": inv.nodes[0].bmc.model_copy(
        update={"driver": BMCDriver.redfish, "address": "https://127.0.0.9"})})
    vm = plan(inv.model_copy(update={"nodes": [node]}), None, ProvisionOptions())[0].actions
    assert "build the node's deploy ISO (the deploy ramdisk, its arguments with the static address), serve it" in vm
    assert vm[vm.index("wait for it to power off") + 1:][:2] == ["eject the virtual media", "set boot device to disk"]


def _runner(w, *opts: str) -> list[str]:
    return [sys.executable, str(RUNNER), str(w.inventory), str(w.state), "boot_timeout_s=60", "ssh_timeout_s=30",
            "power_check_s=1", *opts]




def test_sigkill_in_each_new_state_then_resume(make_world, image):
    """Killed with a node in each new state: image-written resumes by booting the disk (no second
    write), deploying and rebooting deploy again with a fresh token (a lost report or phone-home
    never comes back), and the tokens of the dead run are refused."""
    w = make_world({
        "w": {"pace": {"poweroff_s": 8}},            # held in image-written: the machine is slow to power off
        "d": {"pace": {"report_s": 2}},              # held in deploying
        "r": {"pace": {"first_boot_s": 8}},          # held in rebooting: the installed OS is slow to report
    }, image=image)
    env = {**os.environ, "PYTHONPATH": str(RUNNER.parent)}
    first = subprocess.Popen(_runner(w), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    sigkill_when(first, lambda: stored_states(w.state) == {"w": NodeState.image_written, "d": NodeState.deploying,
                                                     "r": NodeState.rebooting}, 40, "w, d, r in the new states")
    assert first.returncode == -signal.SIGKILL
    assert w.fleet.power_ons() == {"w": 1, "d": 1, "r": 2}

    second = subprocess.run(_runner(w), capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    with StateStore(w.state, create=False) as st:
        assert {r.name: r.state for r in st.nodes()} == {n: NodeState.deployed for n in "wdr"}
        # w: the disk the first run verified is booted, not written again
        assert _transitions(st, "w")[-5:] == ["image-written", "rebooting", "reported-in", "verifying-ssh",
                                              "deployed"]
        assert _transitions(st, "w").count("deploying") == 1
        assert any(e.kind == "resume" and "image-written" in e.detail for e in st.events("w"))
        # d and r: deployed again from the start
        for n in "dr":
            assert _transitions(st, n).count("deploying") == 2, (n, _transitions(st, n))
    assert w.fleet.power_ons() == {"w": 2, "d": 3, "r": 4}
    assert w.fleet.commands()["w"] == ["bootdev network uefi", "on", "bootdev hd persistent uefi", "on"]


def test_reports_and_seed_only_from_the_attempts_machine_with_its_token(make_world, image):
    """The boot service's new routes: the seed (it holds the token) and the reports go to and come from
    the machine that fetched this attempt's iPXE script, with this attempt's token; the installed OS's
    phone-home is refused until the node was powered on from disk."""
    w = make_world({"a": {"play": "never"}}, image=image)
    seen: dict = {}

    def probe(counts, total):
        if seen or counts[NodeState.waiting_boot] != 1:
            return
        seen["done"] = True
        base = f"http://127.0.0.1:{load_model(Inventory, w.inventory).provisioning.http.rsplit(':', 1)[1]}"
        me, other = w.addresses["a"], "127.0.0.99"
        script = _http("GET", f"{base}/boot/{w.player.nodes['a']['mac']}", me)[1]
        args = dict(x.split("=", 1) for x in script.split() if x.startswith("cloudplan."))
        seen["token_in_script"] = "cloudplan.token=" in script
        seen["seed_other"] = _http("GET", args["cloudplan.seed_url"], other)[0]
        seen["seed_me"] = _http("GET", args["cloudplan.seed_url"], me)[0]
        seen["image"] = _http("GET", args["cloudplan.image_url"], other)[0]
        form = {"token": args["cloudplan.token"], "step": "started"}
        seen["report_other"] = _http("POST", args["cloudplan.report_url"], other, form)[0]
        seen["report_bad_token"] = _http("POST", args["cloudplan.report_url"], me, {**form, "token": "x" * 32})[0]
        seen["report_me"] = _http("POST", args["cloudplan.report_url"], me, form)[0]
        seen["phone_home_early"] = _http("POST", f"{base}/phone-home/a/{args['cloudplan.token']}", me,
                                         {"pub_key_ed25519": w.sshds["a"].host_key})[0]
        seen["failed"] = _http("POST", args["cloudplan.report_url"], me, {**form, "step": "failed",
                                                                          "error": "test"})[0]
        seen["after_failed"] = _http("POST", args["cloudplan.report_url"], me, form)[0]

    with StateStore(w.state, exclusive=True) as st:
        result = Orchestrator(load_model(Inventory, w.inventory), st, ProvisionOptions(
            boot_timeout_s=20, power_check_s=30, progress_interval_s=0.1), on_progress=probe,
            installed_check=recorded_check).run()
    assert seen == {"done": True, "token_in_script": True, "seed_other": 404, "seed_me": 200, "image": 200,
                    "report_other": 403, "report_bad_token": 403, "report_me": 200, "phone_home_early": 403,
                    "failed": 200, "after_failed": 403}
    assert "the deploy ramdisk failed: test" in result.errors["a"]


def _http(method: str, url: str, source: str, form: dict | None = None) -> tuple[int, str]:
    u = urllib.parse.urlsplit(url)
    conn = HTTPConnection(u.hostname, u.port, timeout=10, source_address=(source, 0))
    try:
        body = urllib.parse.urlencode(form) if form is not None else None
        conn.request(method, u.path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
                     if body else {})
        rsp = conn.getresponse()
        return rsp.status, rsp.read().decode(errors="replace")
    finally:
        conn.close()


def test_a_url_image_is_not_served_and_its_digest_is_what_the_node_checks(make_world, image, tmp_path):
    w = make_world({"a": {"sshd": False}}, image=image)
    inv = load_model(Inventory, w.inventory)
    from cloudplan.provision.deploy.boot import deploy_args, image_source

    src = image_source(inv.provisioning.image, "http://10.0.0.1:8080")
    assert src.url == f"http://10.0.0.1:8080/images/{image.name}" and src.path == image
    assert json.loads(image.with_name(image.name + ".sha256").read_text())["sha256"] == src.sha256
    remote = inv.provisioning.image.model_copy(update={"path": None, "url": "https://example.org/d.raw.zst",
                                                        "sha256": "ab" * 32})
    src = image_source(remote, "http://10.0.0.1:8080")
    args = deploy_args(inv, inv.nodes[0], base_url="http://10.0.0.1:8080", token="t" * 24, image=src,
                       seed_sha256="cd" * 32)
    assert (args.image_url, args.image_sha256, args.ip) == ("https://example.org/d.raw.zst", "ab" * 32,
                                                            f"{w.addresses['a']}/8")
