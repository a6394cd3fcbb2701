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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloudplan.errors import ProvisioningFailed

# Debian packages the build needs, and the binary each provides.
ISO_TOOLS = {"grub-mkrescue": "grub-common", "xorriso": "xorriso", "mformat": "mtools"}
GRUB_PLATFORMS = {"/usr/lib/grub/i386-pc": "grub-pc-bin", "/usr/lib/grub/x86_64-efi": "grub-efi-amd64-bin"}
VOLUME_ID = "CIDATA"         # cloud-init's NoCloud looks for a filesystem with this label
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
    cmdline = content.cmdline.replace("\n", " ").replace('"', "")
    return ("serial --unit=0 --speed=115200\nterminal_output console serial\n"
            "set timeout=0\nset default=0\n"
            f'menuentry "cloudplan deploy {content.node}" {{\n'
            f'  echo "cloudplan: booting the deploy ramdisk of {content.node} ($grub_platform)"\n'
            f"  linux /boot/vmlinuz {cmdline}\n"
            "  initrd /boot/initrd\n"
            "}\n")


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
        cmd = ["grub-mkrescue", *GRUB_SLIM_ARGS, "-o", str(partial), str(root), "--", "-volid", VOLUME_ID]
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
