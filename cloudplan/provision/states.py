"""The durable node state machine of zero-touch provisioning.

A node walks ``pending -> verifying-bmc -> bmc-verified -> setting-boot ->
waiting-boot``, then, when the inventory gives an OS image, ``deploying`` (the
deploy ramdisk reported in and writes the image) ``-> image-written`` (image
verified, seed written, the ramdisk powered off) ``-> rebooting`` (disk boot set,
power on) ``-> reported-in`` (the installed OS phoned its host key home);
without an image, the booted ramdisk itself is what gets verified
(``waiting-boot -> phoned-home``). Both end ``-> verifying-ssh -> deployed``;
any active state may fall to ``failed``. Every transition is stored (see ``store.py``) before
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
    deploy = "deploy"              # the deploy ramdisk writes and checks the image, writes the seed
    boot_disk = "boot-disk"        # boot device back to disk
    first_boot = "first-boot"      # power on from disk, the installed OS phones home
    verify_ssh = "verify-ssh"      # SSH with the pinned host key, facts
    done = "done"


class NodeState(str, Enum):
    pending = "pending"
    verifying_bmc = "verifying-bmc"
    bmc_verified = "bmc-verified"
    setting_boot = "setting-boot"
    waiting_boot = "waiting-boot"
    phoned_home = "phoned-home"
    deploying = "deploying"
    image_written = "image-written"
    rebooting = "rebooting"
    reported_in = "reported-in"
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
                        NodeState.deploying, NodeState.image_written, NodeState.rebooting,
                        NodeState.reported_in, NodeState.verifying_ssh, NodeState.deployed)

    def is_waiting_boot(self) -> bool:
        return self is NodeState.waiting_boot

    def has_host_key(self) -> bool:
        """The node phoned home; its host key and address are stored."""
        return self in (NodeState.phoned_home, NodeState.reported_in, NodeState.verifying_ssh)

    def is_image_written(self) -> bool:
        """The root disk holds the verified image and the seed: booting it is all that is left."""
        return self is NodeState.image_written

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
    NodeState.deploying: Step.deploy,
    NodeState.image_written: Step.boot_disk,
    NodeState.rebooting: Step.first_boot,
    NodeState.reported_in: Step.verify_ssh,
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
    S.waiting_boot: frozenset({S.phoned_home, S.deploying, S.setting_boot, S.verifying_bmc, S.failed}),
    S.phoned_home: frozenset({S.verifying_ssh, S.verifying_bmc, S.failed}),
    S.deploying: frozenset({S.image_written, S.setting_boot, S.verifying_bmc, S.failed}),
    S.image_written: frozenset({S.rebooting, S.verifying_bmc, S.failed}),
    S.rebooting: frozenset({S.reported_in, S.verifying_bmc, S.failed}),
    S.reported_in: frozenset({S.verifying_ssh, S.verifying_bmc, S.failed}),
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
    - phoned-home / reported-in / verifying-ssh resume where they were (boot
      device to disk, SSH verification with the stored host key): power is
      left alone;
    - image-written resumes there: the disk holds the verified image and seed,
      so the node is booted from it (no second write);
    - setting-boot / waiting-boot / deploying go back to the start: the boot
      service of the dead run is gone and a report may have been lost, so the
      node is booted again with a fresh token (it was never deployed);
    - rebooting starts over too: the installed OS phones home once per
      instance, and a phone-home lost with the dead run would never come again;
      a new deploy gives it a new instance;
    - everything else (pending, verifying, failed) starts over.
    """
    if stored.is_deployed() or stored.has_host_key() or stored.is_image_written():
        return stored
    return NodeState.pending
