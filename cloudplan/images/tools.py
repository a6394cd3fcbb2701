"""Running the host tools an image build needs, with errors that name the tool and its package."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from cloudplan.errors import ImageError

log = logging.getLogger(__name__)
SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Which Debian package brings each tool, for the error that says what to install.
PACKAGES = {
    "mmdebstrap": "mmdebstrap", "sfdisk": "fdisk", "losetup": "mount", "mount": "mount", "umount": "mount",
    "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools", "mmd": "mtools",
    "grub-mkimage": "grub-common", "qemu-img": "qemu-utils", "tar": "tar",
}
GRUB_BIOS_SETUP = Path("/usr/lib/grub/i386-pc/grub-bios-setup")


def tool(name: str) -> str:
    if name == "grub-bios-setup":
        if GRUB_BIOS_SETUP.is_file():
            return str(GRUB_BIOS_SETUP)
        raise ImageError("grub-bios-setup is missing (Debian package grub-pc-bin)")
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        raise ImageError(f"{name} is missing (Debian package {PACKAGES.get(name, name)})")
    return path


def run(argv: list[str], *, step: str, timeout: float = 1800, cwd: Path | None = None,
        input_text: str | None = None) -> str:
    """stdout of ``argv`` (argv[0] a tool name); a failure names the step and the tool's last words."""
    cmd = [tool(argv[0]), *argv[1:]]
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    log.debug("%s: %s", step, " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                              input=input_text)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{step}: {argv[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ImageError(f"{step}: {argv[0]} failed (exit {done.returncode}): {done.stderr.strip()[-600:]}")
    return done.stdout


def need_root(step: str) -> None:
    if os.geteuid() != 0:
        raise ImageError(f"{step} needs root (loop devices and mounts): run it as root")
