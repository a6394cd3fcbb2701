"""A bootable deploy ISO per node: the deploy ramdisk and the node's own seed.

``grub-mkrescue`` (Debian's grub-common with grub-pc-bin and
grub-efi-amd64-bin, driving ``xorriso`` and ``mtools``) writes one ISO that
boots both ways: El Torito for legacy BIOS (``i386-pc``) and an EFI system
partition image for UEFI (``x86_64-efi``), both reading one ``grub.cfg``.

The volume label is ``CIDATA`` and the NoCloud seed (``user-data``,
``meta-data``, ``network-config``) sits at its root, so cloud-init in the
ramdisk finds its seed on the CD itself; the kernel command line carries the
static address too (``ip=``) for a ramdisk that brings the network up in its
initramfs. Nothing on the provisioning network has to answer DHCP or TFTP.

:func:`deploy_content` fills the same ISO with cloudplan's deploy ramdisk
instead (:mod:`cloudplan.images.deploy_ramdisk`): its ``grub.cfg`` carries
the node's ``cloudplan.*`` deploy arguments with the static provisioning
address, and the ramdisk fetches the image and the seed from the boot server,
so the CD holds no seed and is labelled ``CPDEPLOY``: a CD left in the drive
must not be taken by the installed OS's cloud-init for a NoCloud seed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloudplan.errors import ProvisioningFailed
from cloudplan.provision.deploy.cmdline import DeployArgs, kernel_cmdline

# Debian packages the build needs, and the binary each provides.
ISO_TOOLS = {"grub-mkrescue": "grub-common", "xorriso": "xorriso", "mformat": "mtools"}
GRUB_PLATFORMS = {"/usr/lib/grub/i386-pc": "grub-pc-bin", "/usr/lib/grub/x86_64-efi": "grub-efi-amd64-bin"}
VOLUME_ID = "CIDATA"         # cloud-init's NoCloud looks for a filesystem with this label
DEPLOY_VOLUME_ID = "CPDEPLOY"   # the deploy ramdisk's ISO: no seed on it, so not CIDATA
# The deploy ramdisk's console: the first serial port, which the BMC's serial-over-LAN shows.
DEPLOY_CONSOLE = "console=tty0 console=ttyS0,115200n8"
# GRUB's script parser would expand or split on these; the kernel arguments must reach Linux unchanged.
_GRUB_SPECIAL = set("$;&|<>(){}\\'\"`*?[]#!~")
# Only the GRUB modules grub.cfg uses, no fonts, locales or themes, modules xz-compressed:
# about 4 MB of GRUB per ISO instead of 20 (one ISO per node being deployed).
GRUB_MODULES = ("linux normal iso9660 echo serial terminal test configfile search search_label "
                "part_msdos part_gpt fat")
GRUB_SLIM_ARGS = (f"--install-modules={GRUB_MODULES}", "--fonts=", "--locales=", "--themes=", "--compress=xz")
BUILD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class IsoContent:
    node: str
    kernel: Path
    initrd: Path
    cmdline: str              # the full kernel command line (ds=, ip=, the installer's own)
    seed: dict[str, str]      # file name at the ISO's root -> text (user-data, meta-data, network-config)
    volume_id: str = VOLUME_ID


def deploy_content(node: str, kernel: Path, initrd: Path, args: DeployArgs, *,
                   console: str = DEPLOY_CONSOLE) -> IsoContent:
    """An ISO booting the deploy ramdisk with ``args``, which must give a static address (no DHCP here)."""
    if args.ip == "dhcp":
        raise ProvisioningFailed("a deploy from virtual media needs a static provisioning address in its "
                                 "arguments (ip=ADDR/PREFIX): no DHCP answers on this path", node=node,
                                 step="vmedia-iso")
    # No panic=: a ramdisk that dies before its own error handling stays down for the orchestrator's
    # deadline to find, rather than rebooting into the same CD and token.
    cmdline = " ".join(x for x in (console.strip(), kernel_cmdline(args, node=node)) if x)
    return IsoContent(node=node, kernel=kernel, initrd=initrd, cmdline=cmdline, seed={},
                      volume_id=DEPLOY_VOLUME_ID)


def missing_tools() -> list[str]:
    """Debian packages the ISO build needs and this machine lacks (empty when all are there)."""
    missing = [pkg for tool, pkg in ISO_TOOLS.items() if shutil.which(tool) is None]
    missing += [pkg for d, pkg in GRUB_PLATFORMS.items() if not Path(d).is_dir()]
    return sorted(set(missing))


def check_tools() -> None:
    missing = missing_tools()
    if missing:
        raise ProvisioningFailed(f"building the deploy ISO needs the Debian packages {' '.join(missing)} "
                                 f"(apt-get install {' '.join(missing)})", step="vmedia-iso")


def grub_cfg(content: IsoContent) -> str:
    # One entry, no menu wait: a BMC-driven boot has no one at the console. GRUB
    # writes to the first serial port too, so the BMC's serial-over-LAN shows it.
    cmdline = " ".join(_grub_word(w, content.node) for w in content.cmdline.split())
    return ("serial --unit=0 --speed=115200\nterminal_output console serial\n"
            "set timeout=0\nset default=0\n"
            f'menuentry "cloudplan deploy {content.node}" {{\n'
            f'  echo "cloudplan: booting the deploy ramdisk of {content.node} ($grub_platform)"\n'
            f"  linux /boot/vmlinuz {cmdline}\n"
            "  initrd /boot/initrd\n"
            "}\n")


def _grub_word(word: str, node: str) -> str:
    """One kernel argument as GRUB must read it: single-quoted when GRUB's parser would touch it."""
    if "'" in word:
        raise ProvisioningFailed(f"kernel argument {word.split('=')[0]!r} holds a single quote, which grub.cfg "
                                 "cannot carry", node=node, step="vmedia-iso")
    return f"'{word}'" if _GRUB_SPECIAL & set(word) else word


def build_iso(content: IsoContent, out: Path, *, timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Write ``out`` (atomically: a half-built ISO is never served)."""
    check_tools()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cloudplan-iso-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        (root / "boot" / "grub").mkdir(parents=True)
        shutil.copyfile(content.kernel, root / "boot" / "vmlinuz")
        shutil.copyfile(content.initrd, root / "boot" / "initrd")
        (root / "boot" / "grub" / "grub.cfg").write_text(grub_cfg(content), encoding="utf-8")
        for name, text in content.seed.items():
            (root / name).write_text(text, encoding="utf-8")
        partial = Path(tmp) / "out.iso"
        cmd = ["grub-mkrescue", *GRUB_SLIM_ARGS, "-o", str(partial), str(root), "--", "-volid", content.volume_id]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ProvisioningFailed(f"grub-mkrescue did not finish within {timeout_s:g} s",
                                     node=content.node, step="vmedia-iso") from None
        if run.returncode != 0 or not partial.is_file():
            tail = " ".join(run.stderr.strip().splitlines()[-3:])
            raise ProvisioningFailed(f"grub-mkrescue failed ({run.returncode}): {tail}", node=content.node,
                                     step="vmedia-iso")
        os.chmod(partial, 0o600)   # it holds the node's phone-home token
        os.replace(partial, out)
    return out


def el_torito_report(iso: Path) -> str:
    """``xorriso -report_el_torito plain``: the boot catalog, for checks and for humans."""
    run = subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"], capture_output=True,
                         text=True, timeout=60)
    if run.returncode != 0:
        raise ProvisioningFailed(f"xorriso cannot read {iso.name}: {run.stderr.strip()[-200:]}", step="vmedia-iso")
    return run.stdout
