"""What a node boots to be deployed, and with which arguments: one place for every boot path.

PXE's iPXE script, a virtual-media ISO's boot menu and a UEFI HTTP boot all
start the same deploy ramdisk with the same command line; they differ only in
how the kernel and initrd reach the machine. :func:`deploy_boot` says what to
start (kernel, initrd, the full command line from
:func:`~cloudplan.provision.deploy.cmdline.kernel_cmdline`), from the
inventory, the node, the boot service's URL and this boot's one-time token.

URLs on the boot service (:class:`~cloudplan.provision.bootserver.BootServer`):
``/images/<file>`` the OS image, ``/seed/<node>.img`` the node's seed image,
``/deploy/<node>`` the ramdisk's reports; the installed OS phones home to
``/phone-home/<node>/<token>`` with the same token (accepted only once the node
was powered on from its disk).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from cloudplan.errors import ProvisioningFailed, SpecError
from cloudplan.inventory import QCOW2_REFUSAL, BootSpec, DeployImage, Inventory, Node, RootDisk
from cloudplan.provision import cloudinit
from cloudplan.provision.deploy.cmdline import DeployArgs, kernel_cmdline
from cloudplan.provision.deploy.rootdisk import RootDiskHints
from cloudplan.provision.deploy.seed import build_seed_image, render_seed

PROVISIONING = "provisioning"
HASH_CHUNK_BYTES = 4 << 20
QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class ImageSource:
    """The image as nodes fetch it: ``url`` and ``sha256``; ``path`` when the boot service serves it."""

    url: str
    sha256: str
    compression: str | None = None
    path: Path | None = None


@dataclass(frozen=True)
class DeployBoot:
    kernel: str
    initrd: str
    cmdline: str


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path``, remembered beside it (``<path>.sha256``) for as long as size and mtime hold:
    hashing a 3 GiB image takes seconds, and every run needs the digest."""
    st = path.stat()
    memo = path.with_name(path.name + ".sha256")
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text())
        if saved.get("key") == key:
            return saved["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            h.update(chunk)
    try:
        memo.write_text(json.dumps({"key": key, "sha256": h.hexdigest()}))
    except OSError:
        pass   # a read-only image directory only costs the next run a rehash
    return h.hexdigest()


def image_source(image: DeployImage, base_url: str, *, source: str | None = None) -> ImageSource:
    """Where nodes fetch the image and the digest they check it against."""
    if image.url is not None:
        return ImageSource(url=image.url, sha256=(image.sha256 or "").lower(), compression=image.compression)
    path = Path(image.path or "")
    if not path.is_file():
        raise SpecError(f"no image file at {path}", path=source, field="provisioning.image.path")
    with path.open("rb") as fh:
        if fh.read(4) == QCOW2_MAGIC:     # whatever its name says
            raise SpecError(f"{path}: {QCOW2_REFUSAL}", path=source, field="provisioning.image.path")
    # A digest given is trusted here: every node checks what it wrote against it, so a wrong one fails
    # the deploy (reported, nothing bootable left), never a disk.
    digest = image.sha256.lower() if image.sha256 else file_sha256(path)
    return ImageSource(url=f"{base_url}/images/{path.name}", sha256=digest, compression=image.compression,
                       path=path)


def seed_url(base_url: str, name: str) -> str:
    return f"{base_url}/seed/{name}.img"


def report_url(base_url: str, name: str) -> str:
    return f"{base_url}/deploy/{name}"


def write_seed(inv: Inventory, node: Node, *, state_dir: Path, base_url: str, token: str, ssh_user: str,
               ssh_public_keys: list[str]) -> tuple[Path, str]:
    """The node's seed image for this deploy (a new instance-id, the phone-home with ``token``); path, sha256."""
    seed = render_seed(inv, node, instance_id=f"{node.name}-{uuidlib.uuid4().hex[:12]}", ssh_user=ssh_user,
                       ssh_public_keys=ssh_public_keys,
                       phone_home_url=cloudinit.phone_home_url(base_url, node.name, token))
    path = build_seed_image(seed, state_dir / "seeds" / f"{node.name}.img", node=node.name)
    path.chmod(0o600)   # it holds this deploy's token
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _provisioning_ip(inv: Inventory, node: Node) -> tuple[str, str | None]:
    net = inv.networks.get(PROVISIONING)
    text = node.addresses.get(PROVISIONING)
    if not text:
        return "dhcp", None
    if net is None:
        raise ProvisioningFailed("addresses.provisioning needs networks.provisioning (its prefix)", node=node.name,
                                 step="deploy")
    ip = ipaddress.ip_interface(text).ip
    return f"{ip}/{net.network.prefixlen}", net.gateway


def _hints(disk: RootDisk | None) -> RootDiskHints | None:
    return RootDiskHints(**disk.model_dump()) if disk is not None else None


def deploy_args(inv: Inventory, node: Node, *, base_url: str, token: str, image: ImageSource,
                seed_sha256: str) -> DeployArgs:
    ip, gateway = _provisioning_ip(inv, node)
    return DeployArgs(
        image_url=image.url, image_sha256=image.sha256, report_url=report_url(base_url, node.name), token=token,
        seed_url=seed_url(base_url, node.name), seed_sha256=seed_sha256, compression=image.compression,
        ip=ip, gateway=gateway, mac=node.mac.lower() if node.mac else None,
        root_hints=_hints(node.root_disk) or RootDiskHints(), mirror_hints=_hints(node.root_disk_mirror),
        data_serials=tuple(node.data_disk_serials), data_erase=inv.data_disk_erase(node))


def deploy_boot(boot: BootSpec, args: DeployArgs, *, node: str) -> DeployBoot:
    """The ramdisk's kernel and initrd, and its command line: the site's (console=...) then the deploy's."""
    cmdline = " ".join(x for x in (boot.cmdline.strip(), kernel_cmdline(args, node=node)) if x)
    return DeployBoot(kernel=boot.kernel, initrd=boot.initrd, cmdline=cmdline)


def deploy_media(boot: BootSpec, args: DeployArgs, *, cache: Path):
    """What a node's ISO boots for an image deploy: local copies of the ramdisk's kernel and initrd
    (fetched once per run), the deploy's arguments and the site's kernel arguments (console=...)."""
    from cloudplan.provision.boot import DeployMedia
    from cloudplan.provision.boot.vmedia import local_boot_file

    return DeployMedia(kernel=local_boot_file(boot.kernel, cache, "kernel"),
                       initrd=local_boot_file(boot.initrd, cache, "initrd"), args=args,
                       console=boot.cmdline.strip() or None)

