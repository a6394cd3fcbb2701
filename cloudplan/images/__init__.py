"""Deployable OS images, built from distribution packages.

``build_image`` makes a Debian disk image (GPT: BIOS boot, EFI system and root
partitions; GRUB for legacy BIOS and UEFI) with cloud-init, openssh-server,
python3 and netplan, which cloudplan's deploy step writes to a node's root disk;
``build_deploy_ramdisk`` the kernel and initramfs that write it there.
"""

from cloudplan.images.debian import DEFAULT_SUITE, IMAGE_PACKAGES, OSImage, build_image
from cloudplan.images.deploy_ramdisk import DeployRamdisk, build_deploy_ramdisk

__all__ = ["DEFAULT_SUITE", "IMAGE_PACKAGES", "DeployRamdisk", "OSImage", "build_deploy_ramdisk", "build_image"]
