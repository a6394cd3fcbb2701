"""Simulated BMCs for the lab, the tests and the benchmarks.

- :mod:`.ipmi`: many IPMI 2.0 BMCs on pyghmi's server-side ``Bmc`` in one process;
- :mod:`.redfish`: sushy-tools' Redfish emulator (its fake driver) run as child
  processes over HTTPS, and a fault-injecting proxy to put in front of one;
- :mod:`.qemu_redfish`: a Redfish endpoint per QEMU machine (that emulator with
  a driver running QEMU: power, boot override, virtual media as its CD-ROM, OVMF).

The production BMC code (:mod:`cloudplan.provision.bmc`) knows none of them.
"""
