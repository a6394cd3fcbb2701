"""The NoCloud seed the installed OS's cloud-init reads on its first boot from disk.

Three files (``user-data``, ``meta-data``, ``network-config``) on a small VFAT
filesystem labelled ``CIDATA``: NoCloud's documented local seed, which the
deploy step writes to a partition of the root disk (or a node gets as a second
disk), so the installed OS needs no network to find it. ``user-data`` creates
the SSH user (root only with ``disable_root: false``, cloud-init's default
refuses root logins), sets NTP and phones the new host keys home.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloudplan.errors import ProvisioningFailed
from cloudplan.inventory import Inventory, Node
from cloudplan.provision.deploy.netconfig import render_network_config
from cloudplan.templating import render

SEED_LABEL = "CIDATA"
# 2 MiB holds the three files many times over; VFAT needs a little room for its tables.
SEED_SIZE_KIB = 2048
# What the installed OS reports: its host keys, so SSH verification can pin them.
PHONE_HOME_POST = ("pub_key_ed25519", "pub_key_ecdsa", "pub_key_rsa", "instance_id", "hostname")
PHONE_HOME_TRIES = 10


@dataclass(frozen=True)
class NodeSeed:
    user_data: str
    meta_data: str
    network_config: str

    def files(self) -> dict[str, str]:
        return {"user-data": self.user_data, "meta-data": self.meta_data, "network-config": self.network_config}


def render_seed(inv: Inventory, node: Node, *, instance_id: str, ssh_user: str, ssh_public_keys: list[str],
                phone_home_url: str | None) -> NodeSeed:
    """The seed for ``node``'s installed OS; ``instance_id`` changes per deploy so cloud-init runs again."""
    ctx = {"name": node.name, "instance_id": instance_id, "ssh_user": ssh_user, "keys": ssh_public_keys,
           "ntp_servers": inv.ntp_servers, "phone_home_url": phone_home_url, "post": PHONE_HOME_POST,
           "tries": PHONE_HOME_TRIES}
    kw = {"error": ProvisioningFailed, "node": node.name, "step": "seed"}
    return NodeSeed(user_data=render("deploy/user-data.yaml.j2", ctx, **kw),
                    meta_data=render("deploy/meta-data.yaml.j2", ctx, **kw),
                    network_config=render_network_config(inv, node))


def _tool(name: str, package: str, node: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise ProvisioningFailed(f"{name} is missing (Debian package {package})", node=node, step="seed")
    return path


def build_seed_image(seed: NodeSeed, path: Path, *, node: str = "") -> Path:
    """A VFAT image labelled CIDATA holding the seed, made without mounting (mkfs.vfat, mcopy)."""
    mkfs, mcopy = _tool("mkfs.vfat", "dosfstools", node), _tool("mcopy", "mtools", node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for cmd in ([mkfs, "-n", SEED_LABEL, "-C", str(path), str(SEED_SIZE_KIB)],):
            _run(cmd, node)
        for name, text in seed.files().items():
            f = Path(tmp) / name
            f.write_text(text, encoding="utf-8")
            _run([mcopy, "-i", str(path), str(f), f"::{name}"], node)
    return path


def _run(cmd: list[str], node: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ProvisioningFailed(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()[-300:]}", node=node,
                                 step="seed")
