"""The durable node state machine of zero-touch provisioning.

A node walks ``pending -> verifying-bmc -> bmc-verified -> setting-boot ->
waiting-boot -> phoned-home -> verifying-ssh -> deployed``; any active state
may fall to ``failed``. Every transition is stored (see ``store.py``) before
the side effect it announces, so after a crash the stored state says what may
already have happened to the machine and where to resume (``resume_state``).

The step names are what errors, events and ``cloudplan status`` show.
"""

from __future__ import annotations

from enum import Enum


class Step(str, Enum):
    """What the orchestrator was doing; errors name it."""

    verify_bmc = "verify-bmc"      # reachable, credentials, power state, system GUID
    set_boot = "set-boot"          # one-time network boot, read back
    power = "power"                # power on, or cycle when already on
    phone_home = "phone-home"      # iPXE script, user-data, phone-home with the token
    boot_disk = "boot-disk"        # boot device back to disk
    verify_ssh = "verify-ssh"      # SSH with the pinned host key, facts
    done = "done"


class NodeState(str, Enum):
    pending = "pending"
    verifying_bmc = "verifying-bmc"
    bmc_verified = "bmc-verified"
    setting_boot = "setting-boot"
    waiting_boot = "waiting-boot"
    phoned_home = "phoned-home"
    verifying_ssh = "verifying-ssh"
    deployed = "deployed"
    failed = "failed"

    def is_deployed(self) -> bool:
        return self is NodeState.deployed

    def is_failed(self) -> bool:
        return self is NodeState.failed

    def is_terminal(self) -> bool:
        return self in (NodeState.deployed, NodeState.failed)

    def is_active(self) -> bool:
        """A process was working on the node (or died while doing so)."""
        return not self.is_terminal() and self is not NodeState.pending

    def may_be_powered(self) -> bool:
        """Power may have been applied for this deployment already."""
        return self in (NodeState.setting_boot, NodeState.waiting_boot, NodeState.phoned_home,
                        NodeState.verifying_ssh, NodeState.deployed)

    def is_waiting_boot(self) -> bool:
        return self is NodeState.waiting_boot

    def has_host_key(self) -> bool:
        """The node phoned home; its host key and address are stored."""
        return self in (NodeState.phoned_home, NodeState.verifying_ssh)

    @property
    def step(self) -> Step:
        return _STEP_OF[self]


_STEP_OF = {
    NodeState.pending: Step.verify_bmc,
    NodeState.verifying_bmc: Step.verify_bmc,
    NodeState.bmc_verified: Step.set_boot,
    NodeState.setting_boot: Step.set_boot,
    NodeState.waiting_boot: Step.phone_home,
    NodeState.phoned_home: Step.boot_disk,
    NodeState.verifying_ssh: Step.verify_ssh,
    NodeState.deployed: Step.done,
    NodeState.failed: Step.verify_bmc,
}

S = NodeState
# Every allowed move. Restarting (`-> verifying-bmc`) is allowed from any
# non-deployed state: a failed node is retried from the start by the next run.
TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    S.pending: frozenset({S.verifying_bmc, S.failed}),
    S.verifying_bmc: frozenset({S.verifying_bmc, S.bmc_verified, S.failed}),
    S.bmc_verified: frozenset({S.setting_boot, S.verifying_bmc, S.failed}),
    S.setting_boot: frozenset({S.setting_boot, S.waiting_boot, S.verifying_bmc, S.failed}),
    S.waiting_boot: frozenset({S.phoned_home, S.setting_boot, S.verifying_bmc, S.failed}),
    S.phoned_home: frozenset({S.verifying_ssh, S.verifying_bmc, S.failed}),
    S.verifying_ssh: frozenset({S.verifying_ssh, S.deployed, S.verifying_bmc, S.failed}),
    S.deployed: frozenset(),
    S.failed: frozenset({S.verifying_bmc, S.failed}),
}
del S


def can_transition(src: NodeState, dst: NodeState) -> bool:
    return dst in TRANSITIONS[src]


def resume_state(stored: NodeState) -> NodeState:
    """Where a new run picks a node up, given the state a previous run left it in.

    - deployed stays deployed: its BMC is not touched again (no power cycle);
    - phoned-home / verifying-ssh resume where they were (boot device back to
      disk, SSH verification with the stored host key): power is left alone;
    - setting-boot / waiting-boot go back to setting the boot device: the boot
      service of the dead run is gone and a phone-home may have been lost, so
      the node is booted again with a fresh token (it was never deployed);
    - everything else (pending, verifying, failed) starts over.
    """
    if stored.is_deployed() or stored.has_host_key():
        return stored
    return NodeState.pending
