"""What the deploy step writes for a node: its network-config v2 and NoCloud seed.

The installed OS's own cloud-init applies them on first boot from disk; see
:mod:`cloudplan.provision.deploy.netconfig` and :mod:`cloudplan.provision.deploy.seed`.
"""

from cloudplan.provision.deploy.netconfig import network_config, render_network_config
from cloudplan.provision.deploy.seed import NodeSeed, build_seed_image, render_seed

__all__ = ["NodeSeed", "build_seed_image", "network_config", "render_network_config", "render_seed"]
