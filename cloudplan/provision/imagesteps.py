"""The node steps of an image deploy, part of the orchestrator's per-node pipeline (``_NodeRun``).

After the one-time network boot (the orchestrator's own steps): the deploy
ramdisk's reports up to ``done`` (``deploying -> image-written``), the machine
off, disk boot set through the BMC and power on (``rebooting``), the installed
OS's phone-home (``reported-in``), then the orchestrator's SSH verification with
the installed-OS checks. Every transition is stored before the side effect it
announces; ``states.resume_state`` says where a new run picks a node up.
"""

from __future__ import annotations

from cloudplan.errors import ProvisioningFailed, ProvisioningTimeout
from cloudplan.inventory import BootMode, BootPath
from cloudplan.provision.states import NodeState, Step
from cloudplan.provision.store import token_hash


class ImageDeploySteps:
    """Mixed into the orchestrator's ``_NodeRun``: uses its node, options, store, BMC and boot service."""

    def _run_image(self, at: NodeState, rec) -> None:
        """Image deploy: ramdisk writes the disk, the node boots it, the installed OS reports in."""
        token_digest = rec.token_sha256
        if at is NodeState.pending:
            self._verify_bmc()
            self._set_boot_and_power()
            if self.opts.stop_at is NodeState.waiting_boot:
                return
            self._wait_deployed()
            token_digest = token_hash(self._token or "")
        elif at.is_image_written():
            self._event("resume", "resuming at image-written: the disk holds the verified image; booting it")
        if at in (NodeState.pending, NodeState.image_written):
            self._power_on_from_disk(token_digest)
            host_key, address = self._wait_installed()
        else:
            self._event("resume", f"resuming at {rec.state.value}: host key already reported, power left alone")
            host_key, address = rec.host_key, rec.address
        self._verify_ssh(host_key, address, installed=True)

    def _prepare_deploy(self, token: str) -> None:
        """This boot's seed (its phone-home carries ``token``) and the ramdisk's arguments, at the boot service."""
        from cloudplan.provision.deploy.boot import deploy_args, deploy_boot, deploy_media, write_seed

        cfg, base = self.o.cfg, self.o.boot.url
        seed, seed_sha = write_seed(self.o.inv, self.node, state_dir=self.o.state_dir, base_url=base, token=token,
                                    ssh_user=cfg.ssh_user, ssh_public_keys=self.o.ssh_public_keys)
        args = deploy_args(self.o.inv, self.node, base_url=base, token=token, image=self.o.image,
                           seed_sha256=seed_sha)
        self.o.boot.set_deploy(self.name, deploy_boot(cfg.boot, args, node=self.name), seed)
        if self.path.path is not BootPath.pxe:
            # Virtual media and UEFI HTTP boot carry the ramdisk on the node's ISO, its arguments in grub.cfg.
            self._deploy = deploy_media(cfg.boot, args, cache=self.o.state_dir / "boot-files")

    def _wait_deployed(self) -> None:
        """The ramdisk's reports, up to ``done``: the first within the boot timeout, the rest within the
        deploy timeout. A machine that goes dark before ``done`` is booted again (``boot_retries``)."""
        self.step = Step.phone_home
        retries, seen = self.opts.boot_retries, 0
        deadline = self.o.clock.now() + self.opts.boot_timeout_s
        next_check = self.o.clock.now() + self.opts.power_check_s
        while True:
            left = deadline - self.o.clock.now()
            if left <= 0 or self.o.stopping.is_set():
                what = (f"no report from the deploy ramdisk within {self.opts.boot_timeout_s:g} s (boot timeout)"
                        if seen == 0 else f"deploy not done within {self.opts.deploy_timeout_s:g} s "
                        f"(deploy timeout; last report: {self.o.boot.reports(self.name)[-1].step})")
                raise ProvisioningTimeout(what, node=self.name, step=self.step.value)
            try:
                reports = self.o.boot.wait_report(self.name, seen, timeout_s=min(left, 2.0))
            except ProvisioningTimeout:
                reports = None
            if reports:
                for r in reports[seen:]:
                    if seen == 0:
                        self.step = Step.deploy
                        self._to(NodeState.deploying, "the deploy ramdisk reported in")
                        deadline = self.o.clock.now() + self.opts.deploy_timeout_s
                    seen += 1
                    if r.failed:
                        raise ProvisioningFailed(f"the deploy ramdisk failed: {r.error or 'no reason given'}",
                                                 node=self.name, step=self.step.value)
                    if r.done:
                        cleared = ", ".join(f"{d} {m}" for d, m in r.data_disks) or "none"
                        mirror = (f", mirrored onto {r.mirror_disk} (serial {r.mirror_serial or '-'})"
                                  if r.mirror_disk else "")
                        self._to(NodeState.image_written, f"image written to {r.root_disk or '?'} (serial "
                                 f"{r.root_serial or '-'}), read back and matched, seed written{mirror}; data "
                                 f"disks cleared: {cleared}")
                        return
                continue
            if self.o.clock.now() < next_check:
                continue
            next_check = self.o.clock.now() + self.opts.power_check_s
            if self._booted_again(retries, "its deploy was done"):
                retries, seen = retries - 1, 0
                deadline = self.o.clock.now() + self.opts.boot_timeout_s

    def _power_on_from_disk(self, token_digest: str | None) -> None:
        """Once the ramdisk has powered the machine off: disk boot (persistent), then power on; the installed
        OS's phone-home (same token) is accepted from then on, from its static address."""
        self.step = Step.boot_disk
        client = self._client()
        # The CD out before the disk boots (again on a resume: ejecting an empty drive changes nothing).
        self.path.after_phone_home(self._boot_ctx())
        deadline = self.o.clock.now() + self.opts.poweroff_timeout_s
        while self._bmc("read power state", client.get_power) != "off":
            if self.o.clock.now() >= deadline:
                self._event("power", f"still on {self.opts.poweroff_timeout_s:g} s after its deploy; "
                                     "powering it off (the disk was synced before the last report)")
                self._bmc("power off", lambda: client.set_power("off"))
                break
            if self.o.stopping.is_set():
                raise ProvisioningFailed("stopping", node=self.name, step=self.step.value)
            self.o.clock.sleep(min(2.0, self.opts.power_check_s))
        uefi = self.node.boot_mode is BootMode.uefi
        self._bmc("boot device to disk", lambda: client.set_bootdev("hd", persist=True, uefi=uefi))
        self._event("boot-disk", "boot device set to disk (persistent)")
        if self.o.boot is None or not token_digest:
            raise ProvisioningFailed("no boot server or token to take the installed OS's report",
                                     node=self.name, step=self.step.value)
        from cloudplan.provision.planning import static_address

        self.o.boot.expect_installed(self._boot_identity(), token_digest, static_address(self.node))
        self.step = Step.first_boot
        state = self._bmc("read power state", client.get_power)
        action = "on" if state == "off" else "reset"
        self._event("power", f"power {action} requested, from disk (was {state})", power_on=True)
        self._bmc(f"power {action}", lambda: client.set_power(action))
        self._to(NodeState.rebooting, f"power {action} from disk")

    def _wait_installed(self) -> tuple[str, str]:
        """The installed OS's phone-home within the first-boot timeout; a machine gone dark fails now."""
        self.step = Step.first_boot
        deadline = self.o.clock.now() + self.opts.first_boot_timeout_s
        next_check = self.o.clock.now() + self.opts.power_check_s
        while True:
            left = deadline - self.o.clock.now()
            if left <= 0 or self.o.stopping.is_set():
                raise ProvisioningTimeout(f"the installed OS did not phone home within "
                                          f"{self.opts.first_boot_timeout_s:g} s of the power-on from disk "
                                          "(first-boot timeout)", node=self.name, step=self.step.value)
            try:
                home = self.o.boot.wait_phone_home(self.name, timeout_s=min(left, 2.0))
                break
            except ProvisioningTimeout:
                pass
            if self.o.clock.now() >= next_check:
                next_check = self.o.clock.now() + self.opts.power_check_s
                if self._powered_off():
                    raise ProvisioningFailed("powered off during its first boot from disk", node=self.name,
                                             step=self.step.value)
        self._to(NodeState.reported_in, f"installed OS: {home.host_key.split()[0]} host key from {home.address}",
                 host_key=home.host_key, address=home.address, mac=home.mac)
        return home.host_key, home.address
