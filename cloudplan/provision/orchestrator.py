"""Zero-touch provisioning of an inventory: every node from off to deployed.

Each node runs its own pipeline (``_NodeRun``) in its own thread, so a node
that fails or hangs never holds up another; ``concurrency`` bounds how many
nodes talk to their BMC or over SSH at once, while waiting for a boot holds no
slot (like Ironic's conductor waiting for the agent's callback). Every step has
a deadline and retries what is retryable with backoff; a wrong BMC password
fails the node at once.

Every transition is stored before the side effect it announces, so after a
crash or Ctrl-C the next run resumes each node from its stored state
(``states.resume_state``): deployed nodes are not touched, nodes that phoned
home go straight to SSH verification, and nothing is powered twice after it
was deployed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from cloudplan.errors import CloudplanError, ProvisioningFailed, ProvisioningTimeout, StateFileError
from cloudplan.inventory import BootMode, Inventory, Node, ProvisioningConfig
from cloudplan.provision.bmc import BMC, REAL_CLOCK, Clock, client_for, retry_call
from cloudplan.provision.boot import BootContext, BootPathDriver, DeployMedia, driver_for
from cloudplan.provision.bootserver import normalize_mac
from cloudplan.provision.cloudinit import read_public_keys
from cloudplan.provision.imagesteps import ImageDeploySteps
# plan and password_problems are part of this module's interface too (tests and benchmarks use them from here)
from cloudplan.provision.planning import (bmc_where, password_problems, plan, preflight,  # noqa: F401
                                          select_nodes, static_address)
from cloudplan.provision.states import NodeState, Step, resume_state
from cloudplan.provision.store import Store, token_hash

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[NodeState, int], int], None]
ClientFactory = Callable[[Node, str], BMC]


class ProvisionOptions(BaseModel):
    concurrency: int = Field(default=32, ge=1, description="nodes talking to their BMC or SSH at once")
    boot_timeout_s: float = Field(default=1800.0, gt=0, description="power-on to phone-home, seconds")
    bmc_timeout_s: float = Field(default=120.0, gt=0,
                                 description="time to get one BMC step done, retries included, seconds")
    call_timeout_s: float = Field(default=10.0, gt=0, description="watchdog per BMC call (IPMI or Redfish), "
                                  "seconds")
    ssh_timeout_s: float = Field(default=300.0, gt=0,
                                 description="time for SSH verification to succeed, retries included, seconds")
    ssh_attempt_timeout_s: float = Field(default=30.0, gt=0, description="one SSH connection attempt, seconds")
    bootdev_attempts: int = Field(default=3, ge=1, description="set + read back tries before going on")
    power_check_s: float = Field(default=20.0, gt=0, description="while waiting for the phone-home, how often "
                                 "the BMC's power state is read, seconds")
    boot_retries: int = Field(default=1, ge=0, description="network boots tried again for a node that powers off "
                              "before phoning home (a crash or a cut power during install)")
    deploy_timeout_s: float = Field(default=1800.0, gt=0, description="image deploys: the ramdisk's first report "
                                    "to its last (image written, read back, seed written), seconds")
    poweroff_timeout_s: float = Field(default=120.0, gt=0, description="image deploys: the ramdisk's last report "
                                      "to the machine off (then it is powered off through the BMC), seconds")
    first_boot_timeout_s: float = Field(default=900.0, gt=0, description="image deploys: power on from disk to "
                                        "the installed OS's phone-home, seconds")
    dhcp: bool | None = Field(default=None, description="start dnsmasq; None: as the inventory says")
    only: list[str] | None = Field(default=None, description="node names to provision; None: all")
    stop_at: NodeState | None = Field(default=None,
                                      description="stop each node once it reaches this state (benchmarks)")
    progress_interval_s: float = Field(default=0.5, gt=0, description="how often progress is reported, seconds")


@dataclass
class RunResult:
    asked: list[str]
    states: dict[str, NodeState]
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)   # per node, this run
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every node asked for is deployed (or reached ``stop_at``)."""
        return not self.errors and all(not s.is_failed() for s in self.states.values())

    def counts(self) -> dict[NodeState, int]:
        out = {s: 0 for s in NodeState}
        for s in self.states.values():
            out[s] += 1
        return out


def default_client(node: Node, password: str, call_timeout_s: float = 10.0) -> BMC:
    """The driver the inventory's ``bmc.driver`` names (IPMI or Redfish)."""
    return client_for(node, password, call_timeout_s=call_timeout_s)


def _guid_matches(bmc_guid: str, node_uuid: str) -> bool:
    """SMBIOS UUIDs are printed in two byte orders in the field; accept either."""
    try:
        a, b = uuidlib.UUID(bmc_guid), uuidlib.UUID(node_uuid)
    except ValueError:
        return False
    return a == b or a.bytes == b.bytes_le


class _NodeRun(ImageDeploySteps):
    """The pipeline of one node, started from wherever its stored state says."""

    def __init__(self, orch: "Orchestrator", node: Node):
        self.o, self.node, self.name = orch, node, node.name
        self.store = orch.store
        self.opts = orch.options
        self.client: BMC | None = None
        self.step: Step = Step.verify_bmc
        self.bmc_guid: str | None = None
        self.path: BootPathDriver = driver_for(orch.inv.boot_path(node))
        self._token: str | None = None
        self._deploy: DeployMedia | None = None   # image deploys on an ISO path: what the ISO boots
        self.known_guid: str | None = None    # the system GUID an earlier run stored
        self.retired: list[str] = []          # token hashes of this node's earlier boot attempts

    # helpers
    def _event(self, kind: str, detail: str = "", **kw) -> None:
        self.store.event(self.name, kind, detail, step=self.step.value, **kw)

    def _to(self, state: NodeState, detail: str = "", **kw) -> None:
        self.store.transition(self.name, state, step=self.step.value, detail=detail, **kw)

    def _bmc(self, what: str, fn: Callable):
        """A BMC operation: one slot per attempt (backoff sleeps hold none), retried until the step deadline."""
        def attempt():
            with self.o.slots:
                return fn()
        return retry_call(attempt, timeout_s=self.opts.bmc_timeout_s, clock=self.o.clock,
                          what=f"{self.name}: {what}",
                          on_retry=lambda e, w: self._event("retry", f"{what}: {e} (again in {w:.1f} s)"))

    # the pipeline
    def run(self) -> None:
        rec = self.store.get(self.name)
        at = resume_state(rec.state)
        if at.is_deployed():
            return
        self.known_guid = rec.bmc_guid
        if rec.token_sha256:  # an earlier run's boot may still phone home: it must be refused
            self.retired.append(rec.token_sha256)
        try:
            if self.o.image is not None:
                self._run_image(at, rec)
                return
            if at is NodeState.pending:
                self._verify_bmc()
                self._set_boot_and_power()
                if self.opts.stop_at is NodeState.waiting_boot:
                    return
                host_key, address = self._wait_phone_home()
            else:
                self._event("resume", f"resuming at {rec.state.value}: host key already reported, "
                                      "power left alone")
                host_key, address = rec.host_key, rec.address
            self._boot_disk()
            self._verify_ssh(host_key, address)
        except StateFileError as err:
            # Nothing more can be stored: the whole run stops, every node keeping its last stored state.
            self.o.state_failed(err)
        except CloudplanError as err:
            self._fail(str(err))
        except Exception as err:  # a bug must fail this node, not the run; keep the traceback in the log
            log.exception("%s: unexpected error in step %s", self.name, self.step.value)
            self._fail(f"internal error: {type(err).__name__}: {err}")
        finally:
            if self.client is not None:
                self.client.close()
            if self.o.boot is not None:
                self.o.boot.unregister(self.name)
                self.path.release(self.o.boot, self.name)

    def _fail(self, message: str) -> None:
        if self.o.stopping.is_set():
            return  # interrupted: leave the stored state for the next run to resume
        try:
            self.store.transition(self.name, NodeState.failed, step=self.step.value, error=message)
        except StateFileError as err:
            self.o.state_failed(err)

    def _client(self) -> BMC:
        if self.client is None:
            password = self.node.bmc.password(self.name)   # resolved at the moment of use
            self.store.register_secrets([password])
            self.client = self.o.client_factory(self.node, password)
        return self.client

    def _boot_identity(self) -> Node:
        """The node as the boot service must recognise it. Without a MAC or UUID in the
        inventory, the system GUID its BMC reported stands in for the SMBIOS UUID iPXE
        sends (one value on real servers, byte order aside); the MAC is learned at boot."""
        if self.node.uuid or not self.bmc_guid:
            return self.node
        return self.node.model_copy(update={"uuid": self.bmc_guid})

    def _verify_bmc(self) -> None:
        self.step = Step.verify_bmc
        self._to(NodeState.verifying_bmc, f"BMC {bmc_where(self.node)}", new_attempt=True)
        client = self._client()
        info = self._bmc("verify BMC", client.info)
        self._check_guid(info.system_guid)
        self.bmc_guid = info.system_guid
        self._to(NodeState.bmc_verified, f"power {info.power}, system GUID {info.system_guid}",
                 bmc_guid=info.system_guid)

    def _check_guid(self, reported: str) -> None:
        """A BMC that answers for another machine (a wrong address in the inventory, a swapped
        cable) must not be told to reset it: stop here, before any power action."""
        bmc = f"BMC {self.node.bmc.address}:{self.node.bmc.port}"
        if self.node.uuid and not _guid_matches(reported, self.node.uuid):
            self._event("guid-mismatch", f"{bmc} reports system GUID {reported}, the inventory says {self.node.uuid}")
            raise ProvisioningFailed(f"{bmc} reports system GUID {reported}, the inventory says {self.node.uuid}: "
                                     "it is another machine; no power command sent (check the BMC address "
                                     "and the node's uuid)", node=self.name, step=self.step.value)
        if not self.node.uuid and self.known_guid and not _guid_matches(reported, self.known_guid):
            self._event("guid-mismatch", f"{bmc} reports system GUID {reported}, an earlier run saw "
                                         f"{self.known_guid}")
            raise ProvisioningFailed(f"{bmc} reports system GUID {reported}, an earlier run saw {self.known_guid} "
                                     "at this address: it is another machine now; no power command sent (if the machine was "
                                     "replaced, give its uuid in the inventory)",
                                     node=self.name, step=self.step.value)

    def _set_boot_and_power(self) -> None:
        self.step = Step.set_boot
        token = secrets.token_urlsafe(24)
        digest = token_hash(token)
        self._to(NodeState.setting_boot, f"one-time {self.path.describe} boot", token_sha256=digest)
        self._token = token
        client = self._client()
        if self.o.image is not None and self.o.boot is not None:
            self._prepare_deploy(token)
        # The path registers the attempt held (not armed) until the power command below: whatever
        # boots before it is an earlier boot; the tokens of earlier attempts are refused.
        armed = self.path.arm(self._boot_ctx())
        self.retired.append(digest)
        self.step = Step.power
        state = self._bmc("read power state", client.get_power)
        action = "on" if state == "off" else "reset"
        # Logged (and counted) before it is sent: after a crash the log says it may have happened.
        self._event("power", f"power {action} requested (was {state})", power_on=True)
        if self.o.boot is not None:
            self.o.boot.arm(self.name)
        self._bmc(f"power {action}", lambda: client.set_power(action))
        self._to(NodeState.waiting_boot, f"power {action}; {armed}")

    def _wait_phone_home(self) -> tuple[str, str]:
        self.step = Step.phone_home
        if self.o.boot is None:
            raise ProvisioningFailed("no boot server running", node=self.name, step=self.step.value)
        retries = self.opts.boot_retries
        deadline = self.o.clock.now() + self.opts.boot_timeout_s
        next_check = self.o.clock.now() + self.opts.power_check_s
        while True:
            left = deadline - self.o.clock.now()
            if left <= 0 or self.o.stopping.is_set():
                raise ProvisioningTimeout(f"no phone-home within {self.opts.boot_timeout_s:g} s "
                                          "(boot timeout)", node=self.name, step=self.step.value)
            try:
                home = self.o.boot.wait_phone_home(self.name, timeout_s=min(left, 2.0))
                break
            except ProvisioningTimeout:
                pass
            if self.o.clock.now() < next_check:
                continue
            next_check = self.o.clock.now() + self.opts.power_check_s
            # A machine that went dark mid-install never phones home: notice it now, not at the boot timeout.
            if self._booted_again(retries, "phoning home"):
                retries -= 1
                deadline = self.o.clock.now() + self.opts.boot_timeout_s
        self._to(NodeState.phoned_home, f"{home.host_key.split()[0]} host key from {home.address}",
                 host_key=home.host_key, address=home.address, mac=home.mac)
        return home.host_key, home.address

    def _booted_again(self, retries: int, before: str) -> bool:
        """One power reading: a machine that went dark ``before`` ("phoning home") is booted again with a
        fresh token while ``retries`` last, else the node fails. True when it was booted again."""
        if not self._powered_off():
            return False
        if retries == 0:
            raise ProvisioningFailed(f"powered off before {before} ({self.opts.boot_retries} boot retries used)",
                                     node=self.name, step=self.step.value)
        self._event("powered-off", f"node powered off before {before}; booting it again")
        self._set_boot_and_power()
        self.step = Step.phone_home
        return True

    def _powered_off(self) -> bool:
        """One power reading; a BMC that does not answer now is no reason to give up the wait."""
        try:
            with self.o.slots:
                return self._client().get_power() == "off"
        except CloudplanError as err:
            self._event("power-check", f"power state unknown: {err}")
            return False

    def _boot_ctx(self) -> BootContext:
        return BootContext(inv=self.o.inv, node=self._boot_identity(), token=self._token or "", client=self._client(),
                           boot=self.o.boot, state_dir=self.o.state_dir, bmc=self._bmc,
                           on_event=lambda kind, detail: self._event(kind, detail), clock=self.o.clock,
                           bootdev_attempts=self.opts.bootdev_attempts, ssh_public_keys=self.o.ssh_public_keys,
                           retired=list(self.retired), deploy=self._deploy)

    def _boot_disk(self) -> None:
        self.step = Step.boot_disk
        self.path.after_phone_home(self._boot_ctx())   # e.g. eject the virtual CD (again, on a resume)
        client = self._client()
        uefi = self.node.boot_mode is BootMode.uefi
        self._bmc("boot device to disk", lambda: client.set_bootdev("hd", persist=True, uefi=uefi))
        self._event("boot-disk", "boot device set to disk (persistent)")

    def _verify_ssh(self, host_key: str, address: str, installed: bool = False) -> None:
        from cloudplan.provision.sshverify import verify_node

        self.step = Step.verify_ssh
        self._to(NodeState.verifying_ssh, f"ssh {address}:{self.o.cfg.ssh_port}")
        cfg = self.o.cfg

        def attempt():
            with self.o.slots:
                return verify_node(address, port=cfg.ssh_port, username=cfg.ssh_user,
                                   key_filename=cfg.ssh_private_key_file, host_key=host_key,
                                   expect=self.node.expect, hostname=self.name,
                                   timeout_s=self.opts.ssh_attempt_timeout_s,
                                   installed=self.o.installed_check(self.node) if installed else None)

        # Only "cannot reach" is worth retrying (sshd still starting); a wrong host key,
        # a refused key or wrong facts will not change.
        facts = retry_call(attempt, timeout_s=self.opts.ssh_timeout_s, clock=self.o.clock,
                           what=f"{self.name}: SSH", retryable=lambda e: "cannot reach" in str(e),
                           on_retry=lambda e, w: self._event("retry", f"ssh: {e} (again in {w:.1f} s)"))
        self.step = Step.done
        found = {"hostname": facts.hostname, "cores": facts.cores, "ram_gib": round(facts.ram_gib, 2),
                 "disks": facts.disks}
        detail = f"{facts.cores} cores, {facts.ram_gib:.1f} GiB, {facts.disks} data disks"
        if facts.installed:
            found["installed"] = facts.installed
            detail += f"; / on {facts.installed.get('root_disk')}, networks {', '.join(facts.installed['networks'])}"
        self._to(NodeState.deployed, detail, facts=found)


# -- the run -------------------------------------------------------------------------


class Orchestrator:
    def __init__(self, inv: Inventory, store: Store, options: ProvisionOptions | None = None, *,
                 client_factory: ClientFactory | None = None, boot=None, clock: Clock = REAL_CLOCK,
                 on_progress: ProgressFn | None = None, state_dir: Path | None = None, source: str | None = None,
                 installed_check: Callable | None = None):
        self.inv, self.store = inv, store
        self.source = source              # the inventory file, for errors
        self.options = options or ProvisionOptions()
        self.cfg: ProvisioningConfig = inv.provisioning or ProvisioningConfig(http="127.0.0.1:0", dhcp=False)
        self.clock = clock
        self.on_progress = on_progress
        self.state_dir = state_dir or store.work_dir
        self.client_factory = client_factory or (
            lambda node, pw: default_client(node, pw, self.options.call_timeout_s))
        self.boot = boot                  # a BootServer; started by run() when None
        self._own_boot = boot is None
        self.slots = threading.BoundedSemaphore(self.options.concurrency)
        self._ssh_keys: list[str] | None = None
        self._dns = None
        self._state_error: StateFileError | None = None
        self.held: dict[str, str] = {}    # node -> the other run that works on it
        self.stopping = threading.Event()
        self.image = None                 # ImageSource of an image deploy, resolved when the boot server starts
        # The installed-OS checks (cloudplan.provision.installcheck) as a function of the node.
        self.installed_check = installed_check or self._installed_check

    def _installed_check(self, node: Node):
        from cloudplan.provision.installcheck import verify_installed

        return lambda run: verify_installed(run, self.inv, node)

    @property
    def ssh_public_keys(self) -> list[str]:
        """Read when first needed (preflight has checked the file by then)."""
        if self._ssh_keys is None:
            f = self.cfg.ssh_public_key_file
            self._ssh_keys = read_public_keys(f) if f else []
        return self._ssh_keys

    def state_failed(self, err: StateFileError) -> None:
        """The state file stopped taking writes: stop every node where it is; the run ends with this error."""
        if self._state_error is None:
            self._state_error = err
            log.error("%s; stopping every node where it is", err)
        self.stopping.set()

    # services
    def _start_services(self, nodes: list[Node], stack) -> None:
        from cloudplan.provision.bootserver import BootServer

        if self.boot is None:
            host, _, port = self.cfg.http.rpartition(":")
            keys = self.ssh_public_keys
            self.boot = BootServer(host.strip("[]"), int(port), boot=self.cfg.boot, ssh_public_key="\n".join(keys),
                                   on_event=self._boot_event, addresses=self._machine_addresses)
            stack.append(self.boot)
            self.boot.start()
        if self.cfg.image is not None:
            from cloudplan.provision.deploy.boot import image_source

            self.image = image_source(self.cfg.image, self.boot.url, source=self.source)
            if self.image.path is not None:
                self.boot.serve_image(self.image.path)
        dhcp = self.cfg.dhcp if self.options.dhcp is None else self.options.dhcp
        if dhcp:
            from cloudplan.provision.pxe import Dnsmasq

            dns = Dnsmasq(self.cfg, http_url=self.boot.url, state_dir=self.state_dir, nodes=nodes)
            stack.append(dns)
            dns.start()
            self._dns = dns

    def _machine_addresses(self, node: Node, mac: str | None) -> list[str] | None:
        """Where the machine may speak from: its static provisioning address, else what our
        dnsmasq leased to the MAC it booted from; None when neither is known (the first
        address that fetches its iPXE script is then taken as the machine's)."""
        static = static_address(node)
        if static is not None:
            return [static]
        if self._dns is not None and mac:
            return [lease["ip"] for lease in self._dns.leases() if normalize_mac(lease["mac"]) == mac]
        return None

    def _boot_event(self, name: str, kind: str, detail: str) -> None:
        try:
            if name and self.store.has_node(name):
                self.store.event(name, kind, detail, step=Step.phone_home.value)
        except StateFileError as err:
            self.state_failed(err)

    def _report(self, names: list[str]) -> None:
        if self.on_progress is None:
            return
        wanted = set(names)
        counts = {s: 0 for s in NodeState}
        for rec in self.store.nodes():
            if rec.name in wanted:
                counts[rec.state] += 1
        self.on_progress(counts, len(names))

    def run(self) -> RunResult:
        nodes = select_nodes(self.inv, self.options.only)
        if self.boot is None and self.options.stop_at is None:
            preflight(self.cfg, self.source, paths={self.inv.boot_path(n) for n in nodes},
                      nodes=[n for n in nodes if not self._deployed(n)])
        names = [n.name for n in nodes]
        self.store.ensure_nodes(names)
        self.store.begin_run()
        if self.store.interrupted_runs():
            log.info("an earlier run was interrupted; resuming each node from its stored state")
        started = time.monotonic()
        stack: list = []
        outcome = "interrupted"
        seconds: dict[str, float] = {}
        threads: list[threading.Thread] = []
        try:
            todo = self._claim([n for n in nodes if not self.store.get(n.name).state.is_deployed()])
            if todo:
                self._start_services(todo, stack)
            threads = [threading.Thread(target=self._timed, args=(n, seconds), name=f"node-{n.name}", daemon=True)
                       for n in todo]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(self.options.progress_interval_s)
                    self._report(names)
            self._report(names)
            outcome = "finished"
        except StateFileError as err:
            self.state_failed(err)
            for t in threads:  # each stops at its next look at the stop flag or step deadline
                t.join(self.options.bmc_timeout_s + self.options.ssh_attempt_timeout_s)
        finally:
            self.stopping.set()
            for svc in reversed(stack):
                try:
                    svc.stop()
                except Exception as err:  # stopping a service must not hide the run's own error
                    log.warning("stopping %s: %s", type(svc).__name__, err)
            try:
                self.store.end_run(outcome if self._state_error is None else "state file failed")
            except StateFileError as err:
                self.state_failed(err)
        if self._state_error is not None:
            raise self._state_error
        records = {r.name: r for r in self.store.nodes()}
        result = RunResult(asked=names, states={n: records[n].state for n in names},
                           seconds=seconds, wall_s=time.monotonic() - started)
        for n in names:
            rec = records[n]
            if n in self.held and not rec.state.is_deployed():
                result.errors[n] = f"left to {self.held[n]}, which holds it (state now {rec.state.value})"
                continue
            target_ok = rec.state.is_deployed() or (self.options.stop_at is not None
                                                     and rec.state is self.options.stop_at)
            if not target_ok:
                result.errors[n] = rec.error or f"stopped in state {rec.state.value}"
        return result

    def _claim(self, nodes: list[Node]) -> list[Node]:
        """The nodes this run works on: those no other live run holds (a store several hosts share)."""
        claim = self.store.claim([n.name for n in nodes])
        self.held = claim.held
        for name, holder in claim.held.items():
            log.info("%s: held by %s; left to it", name, holder)
        taken = set(claim.claimed)
        return [n for n in nodes if n.name in taken]

    def _deployed(self, node: Node) -> bool:
        return self.store.has_node(node.name) and self.store.get(node.name).state.is_deployed()

    def _timed(self, node: Node, seconds: dict[str, float]) -> None:
        t0 = time.monotonic()
        _NodeRun(self, node).run()
        seconds[node.name] = time.monotonic() - t0
