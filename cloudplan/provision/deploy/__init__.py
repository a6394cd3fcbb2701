"""What the deploy step writes for a node and what its deploy ramdisk is given.

The installed OS's own cloud-init applies the seed on first boot from disk; see
:mod:`cloudplan.provision.deploy.netconfig` and :mod:`cloudplan.provision.deploy.seed`.
The ramdisk's command line and reports are :mod:`cloudplan.provision.deploy.cmdline`,
its root disk rules :mod:`cloudplan.provision.deploy.rootdisk`.
"""

from cloudplan.provision.deploy.cmdline import DeployArgs, DeployReport, kernel_cmdline, parse_report
from cloudplan.provision.deploy.netconfig import network_config, render_network_config
from cloudplan.provision.deploy.rootdisk import Disk, RootDiskHints, choose_root_disk, disks_from_lsblk
from cloudplan.provision.deploy.seed import NodeSeed, build_seed_image, render_seed

__all__ = ["DeployArgs", "DeployReport", "Disk", "NodeSeed", "RootDiskHints", "build_seed_image",
           "choose_root_disk", "disks_from_lsblk", "kernel_cmdline", "network_config", "parse_report",
           "render_network_config", "render_seed"]
