"""The BMC protocol the orchestrator uses, and its drivers.

- :mod:`.base`: the :class:`BMC` protocol, the clock, backoff, ``retry_call``,
  the per-call watchdog and the one-time-boot read-back;
- :mod:`.ipmi`: IPMI 2.0 on pyghmi (``bmc.driver: ipmi``, the default);
- :mod:`.redfish`: Redfish on sushy (``bmc.driver: redfish``), with :mod:`.tls`
  for CA bundles and pinned certificates.

:func:`client_for` picks the driver the inventory names. Every driver raises
only the :class:`~cloudplan.errors.BMCError` family, never with a password.
"""

from __future__ import annotations

from cloudplan.inventory import BMCDriver, Node
from cloudplan.provision.bmc.base import (BACKOFF_INITIAL_S, BACKOFF_MAX_S, BOOTDEV_ATTEMPTS, BMC, REAL_CLOCK,
                                         BMCInfo, BootDevice, Capability, Clock, backoff_delays,
                                         power_on_or_cycle, retry_call, set_boot_network, set_boot_once)
from cloudplan.provision.bmc.ipmi import IPMIClient, start_pyghmi_kicker, translate

__all__ = ["BMC", "BMCInfo", "BootDevice", "Capability", "Clock", "REAL_CLOCK", "IPMIClient", "backoff_delays",
           "client_for", "power_on_or_cycle", "retry_call", "set_boot_network", "set_boot_once",
           "start_pyghmi_kicker", "translate", "BACKOFF_INITIAL_S", "BACKOFF_MAX_S", "BOOTDEV_ATTEMPTS"]


def client_for(node: Node, password: str, *, call_timeout_s: float | None = None) -> BMC:
    """The driver ``node.bmc.driver`` names, for that node's BMC."""
    b = node.bmc
    if b.driver is BMCDriver.redfish:
        from cloudplan.provision.bmc.redfish import CALL_TIMEOUT_S, RedfishClient
        from cloudplan.provision.bmc.tls import TrustPolicy

        return RedfishClient(url=b.url, username=b.username, password=password, system=b.system,
                             trust=TrustPolicy(ca_file=b.ca_file, cert_sha256=b.cert_sha256, insecure=b.insecure),
                             node=node.name, call_timeout_s=call_timeout_s or CALL_TIMEOUT_S)
    return IPMIClient(address=b.address, port=b.port, username=b.username, password=password, node=node.name,
                      call_timeout_s=call_timeout_s or 10.0)
