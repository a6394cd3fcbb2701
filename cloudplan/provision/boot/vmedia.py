"""Boot paths that carry the node's ISO to it through its BMC: virtual media, UEFI HTTP boot.

Both build the same per-node ISO (:mod:`.iso`: cloudplan's deploy ramdisk
with the node's deploy arguments when the context carries them, else the
installer's kernel and initrd from ``provisioning.boot`` with a seed holding the
node's static address and this boot's phone-home URL) and publish it on the boot service under a
secret URL. Virtual media has the BMC fetch it and present it as a CD, boots
once from CD, and ejects it once the node has phoned home; HTTP boot gives
the URL to the firmware in the Redfish boot override (``UefiHttp``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from cloudplan.errors import BMCUnsupported, ProvisioningFailed
from cloudplan.inventory import BootPath, BootSpec
from cloudplan.provision import cloudinit
from cloudplan.provision.bmc import BootDevice, Capability, set_boot_once
from cloudplan.provision.boot import BootContext
from cloudplan.provision.boot import iso as isolib
from cloudplan.provision.boot import seed as seedlib

log = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 300.0
_fetch_lock = threading.Lock()
_fetched: dict[str, Path] = {}     # URL -> where this process stored it


def local_boot_file(url: str, cache: Path, what: str) -> Path:
    """A local copy of the installer's kernel or initrd, fetched once per process (so a
    new run sees a new image at the same URL) and shared by the nodes of the run."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parts.path))
        if not path.is_file():
            raise ProvisioningFailed(f"boot.{what} not found: {path}", step="vmedia-iso")
        return path
    if parts.scheme not in ("http", "https"):
        raise ProvisioningFailed(f"boot.{what}: cannot fetch a {parts.scheme}:// URL", step="vmedia-iso")
    dest = cache / f"{what}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    with _fetch_lock:
        if _fetched.get(url) != dest:
            cache.mkdir(parents=True, exist_ok=True)
            partial = dest.with_suffix(".part")
            try:
                with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as rsp, partial.open("wb") as out:
                    shutil.copyfileobj(rsp, out)
            except OSError as err:
                raise ProvisioningFailed(f"cannot fetch boot.{what} ({err})", step="vmedia-iso") from None
            partial.replace(dest)
            _fetched[url] = dest
    return dest


def build_node_iso(ctx: BootContext) -> Path:
    out = ctx.state_dir / "vmedia" / f"{ctx.node.name}.iso"
    if ctx.deploy is not None:
        d = ctx.deploy
        console = {"console": d.console} if d.console else {}
        return isolib.build_iso(isolib.deploy_content(ctx.node.name, d.kernel, d.initrd, d.args, **console), out)
    boot: BootSpec | None = ctx.inv.provisioning.boot if ctx.inv.provisioning else None
    if boot is None:
        raise ProvisioningFailed("no installer to put on the ISO: give provisioning.boot", node=ctx.node.name,
                                 step="vmedia-iso")
    cache = ctx.state_dir / "boot-files"
    seed = seedlib.render_seed(ctx.inv, ctx.node,
                               phone_home_url=cloudinit.phone_home_url(ctx.boot.url, ctx.node.name, ctx.token),
                               ssh_authorized_keys=ctx.ssh_public_keys)
    content = isolib.IsoContent(node=ctx.node.name, kernel=local_boot_file(boot.kernel, cache, "kernel"),
                                initrd=local_boot_file(boot.initrd, cache, "initrd"),
                                cmdline=seedlib.kernel_cmdline(ctx.inv, ctx.node, boot), seed=seed)
    return isolib.build_iso(content, out)


class _IsoBoot:
    path: BootPath
    describe: str
    capability: Capability

    def __init__(self) -> None:
        self._iso: Path | None = None     # this node's ISO, removed when released (it holds the token)

    def preflight(self) -> None:
        isolib.check_tools()

    def _publish(self, ctx: BootContext) -> str:
        if ctx.boot is None:
            raise ProvisioningFailed("no boot server to serve the ISO", node=ctx.node.name, step="set-boot")
        caps = ctx.bmc("read BMC capabilities", ctx.client.capabilities)
        if self.capability not in caps:
            raise BMCUnsupported(f"boot: {self.path.value} needs {self.capability.value}, which this BMC "
                                 "does not offer", node=ctx.node.name, address=ctx.client.where)
        ctx.register(static=True)
        iso = self._iso = build_node_iso(ctx)
        url = ctx.boot.publish(ctx.node.name, iso)
        ctx.on_event("iso-built", f"{iso.name}, {iso.stat().st_size // (1 << 20)} MiB")
        return url

    def release(self, boot: object, name: str) -> None:
        if boot is not None:
            boot.unpublish(name)
        iso, self._iso = self._iso, None
        if iso is not None:
            iso.unlink(missing_ok=True)


class VirtualMediaBoot(_IsoBoot):
    path = BootPath.vmedia
    describe = "virtual media"
    capability = Capability.virtual_media

    def arm(self, ctx: BootContext) -> str:
        url = self._publish(ctx)
        ctx.bmc("insert virtual media", lambda: ctx.client.insert_media(url))
        ctx.on_event("vmedia-inserted", "deploy ISO inserted as a virtual CD")
        confirmed = ctx.bmc("set boot device", lambda: set_boot_once(
            ctx.client, BootDevice.cd.value, uefi=ctx.uefi, attempts=ctx.bootdev_attempts, clock=ctx.clock,
            on_event=ctx.on_event))
        return f"virtual CD boot {'confirmed' if confirmed else 'not confirmed by the BMC'}"

    def after_phone_home(self, ctx: BootContext) -> None:
        ctx.bmc("eject virtual media", ctx.client.eject_media)
        ctx.on_event("vmedia-ejected", "deploy ISO ejected")
        self.release(ctx.boot, ctx.node.name)


class HttpBoot(_IsoBoot):
    path = BootPath.http
    describe = "UEFI HTTP"
    capability = Capability.http_boot

    def arm(self, ctx: BootContext) -> str:
        url = self._publish(ctx)
        confirmed = ctx.bmc("set boot device", lambda: set_boot_once(
            ctx.client, BootDevice.http.value, uefi=True, url=url, attempts=ctx.bootdev_attempts,
            clock=ctx.clock, on_event=ctx.on_event))
        return f"UEFI HTTP boot {'confirmed' if confirmed else 'not confirmed by the BMC'}"

    def after_phone_home(self, ctx: BootContext) -> None:
        self.release(ctx.boot, ctx.node.name)
