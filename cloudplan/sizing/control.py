"""The control plane's hosts: controllers that grow with the cloud, network nodes, and the
converged edge option (the control plane on the hyperconverged hosts).

Rules (named defaults; where a figure is cloudplan's own, it says so):
- threads: at least ``policy.controller_min_cores``, and one per
  CONTROLLER_HYPERVISORS_PER_THREAD hypervisors plus one per CONTROLLER_VMS_PER_THREAD
  VMs (API workers, conductors, schedulers, the OVN databases and RabbitMQ grow with
  both; cloudplan's own linear rule: it reaches Red Hat's large-deployment controller,
  2 x 12 cores / 48 threads, at 480 hypervisors);
- RAM: at least ``policy.controller_min_ram_gib`` and CONTROLLER_RAM_GIB_PER_THREAD per
  thread (Red Hat OSP director guide, controller requirements: 3 GB per vCPU
  recommended, 1.5 GB the minimum), plus the Ceph monitor, manager and gateway;
- fast local disk for Galera, RabbitMQ's quorum queues and the OVN databases: a
  mirrored pair of NVMe drives of CONTROLLER_DISK_GB (Red Hat's recommendations for
  large deployments: a 500 GB SSD root disk) plus CONTROLLER_DISK_GB_PER_1000_VMS
  (cloudplan's own allowance for the Nova, Neutron and Cinder rows and the binary logs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from cloudplan.blueprint import NodeRole
from cloudplan.catalog import Bay, Catalog, Drive
from cloudplan.errors import Infeasible
from cloudplan.sizing.options import NodeOption, _base_configs, _make
from cloudplan.spec import Hyperconverged, Workload

CONTROLLER_HYPERVISORS_PER_THREAD = 10
CONTROLLER_VMS_PER_THREAD = 1000
CONTROLLER_RAM_GIB_PER_THREAD = 3.0
CONTROLLER_DISK_GB = 500.0
CONTROLLER_DISK_GB_PER_1000_VMS = 20.0
CONTROLLER_DISKS = 2            # mirrored: losing a drive must not cost the node its Galera member
# Network nodes (Kolla-Ansible's [network] group: the OVN gateway chassis, HAProxy and
# keepalived): Red Hat's Networker role asks for the controller minimum, 32 GB RAM;
# 16 threads carry the gateways' packet processing and the load balancer.
NETWORK_NODE_THREADS = 16
NETWORK_NODE_RAM_GIB = 32.0
# A converged edge site keeps on each hyperconverged host the share a controller
# would need at its minimum: 16 threads and Red Hat's 32 GB controller minimum, plus
# the Ceph monitor, manager and gateway that run beside it.
EDGE_CONTROL_THREADS = 16
EDGE_CONTROL_RAM_GIB = 32.0
EDGE_HOSTS = 3                  # the Galera and RabbitMQ quorum


@dataclass(frozen=True)
class ControllerNeed:
    threads: int
    ram_gib: float
    disk_gb: float


def controller_need(wl: Workload, hypervisors: int) -> ControllerNeed:
    pol = wl.policy
    vms = sum(wl.grown_count(f) for f in wl.flavors)
    threads = max(pol.controller_min_cores, math.ceil(hypervisors / CONTROLLER_HYPERVISORS_PER_THREAD
                                                      + vms / CONTROLLER_VMS_PER_THREAD))
    ram = max(pol.controller_min_ram_gib, CONTROLLER_RAM_GIB_PER_THREAD * threads) + _ceph_daemons_gib(wl)
    disk = CONTROLLER_DISK_GB + CONTROLLER_DISK_GB_PER_1000_VMS * vms / 1000.0
    return ControllerNeed(threads, ram, disk)


def _ceph_daemons_gib(wl: Workload) -> float:
    pol = wl.policy
    return pol.mon_ram_gib + pol.mgr_ram_gib + pol.rgw_ram_gib


def _fast_disk(cat: Catalog, need_gb: float) -> Drive | None:
    drives = [d for d in cat.drives if d.bay == Bay.nvme and d.capacity_tb * 1000 >= need_gb]
    return min(drives, key=lambda d: (d.price_usd, d.name)) if drives else None


def controller_option(wl: Workload, cat: Catalog, hypervisors: int) -> NodeOption:
    """The cheapest controller build that meets :func:`controller_need` for ``hypervisors``."""
    need = controller_need(wl, hypervisors)
    disk = _fast_disk(cat, need.disk_gb)
    fits = [(ch, cpu, dimm, n) for ch, cpu, dimm, n in _base_configs(cat, "control")
            if ch.sockets * cpu.threads >= need.threads and dimm.size_gib * n >= need.ram_gib - 1e-9]
    # Without a chassis that takes the mirrored NVMe pair (or an NVMe drive large enough), the
    # databases stay on the barebone's boot drives: the blueprint then shows no local drives.
    bays = [cfg for cfg in fits if cfg[0].bays.get(Bay.nvme, 0) >= CONTROLLER_DISKS]
    if disk is None or not bays:
        disk, bays = None, fits
    cands = [_with_local_disks(_make(cat.price_book, wl.policy, NodeRole.control, *cfg), disk, cat) for cfg in bays]
    if not cands:
        raise Infeasible(f"no chassis in the catalog gives a controller {need.threads} threads, {need.ram_gib:g} GiB "
                         f"RAM (the control plane of {hypervisors} hypervisors; Ceph monitor, manager and gateway "
                         f"included)",
                         requirement="policy.controller_min_ram_gib")
    return min(cands, key=lambda o: (o.capex_usd, o.power_w, o.key))


def _with_local_disks(o: NodeOption, disk: Drive | None, cat: Catalog) -> NodeOption:
    """The controller with its mirrored fast disks priced in (they hold no OSD)."""
    if disk is None:
        return o
    pb = cat.price_book
    return replace(o, capex_usd=o.capex_usd + CONTROLLER_DISKS * disk.price_usd * pb.drive_price_factor,
                   power_w=o.power_w + CONTROLLER_DISKS * disk.power_w,
                   peak_power_w=o.peak_power_w + CONTROLLER_DISKS * disk.peak_draw_w,
                   local_drive=disk, local_drive_count=CONTROLLER_DISKS)


def network_option(wl: Workload, cat: Catalog) -> NodeOption | None:
    """The cheapest network-node build, when the policy asks for network nodes."""
    if not wl.policy.network_nodes:
        return None
    cands = [_make(cat.price_book, wl.policy, NodeRole.network, *cfg) for cfg in _base_configs(cat, "control")]
    cands = [o for o in cands if o.threads >= NETWORK_NODE_THREADS and o.ram_gib >= NETWORK_NODE_RAM_GIB - 1e-9]
    if not cands:
        raise Infeasible(f"no chassis in the catalog gives a network node {NETWORK_NODE_THREADS} threads and "
                         f"{NETWORK_NODE_RAM_GIB:g} GiB RAM", requirement="policy.network_nodes")
    return min(cands, key=lambda o: (o.capex_usd, o.power_w, o.key))


def edge_workload(wl: Workload) -> Workload:
    """The workload as the converged edge sizes it: every VM host hyperconverged, each keeping
    the control plane's share (any three can carry it, so a lost host's share moves)."""
    pol = wl.policy
    keep = pol.model_copy(update={
        "hyperconverged": Hyperconverged.always if wl.storage else pol.hyperconverged,
        "reserved_host_cores": pol.reserved_host_cores + EDGE_CONTROL_THREADS,
        "reserved_host_memory_mb": pol.reserved_host_memory_mb
        + int((EDGE_CONTROL_RAM_GIB + _ceph_daemons_gib(wl)) * 1024)})
    return wl.model_copy(update={"policy": keep})
