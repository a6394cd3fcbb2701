"""Zero-touch bare-metal provisioning.

- ``states``: the node state machine (``NodeState`` with ``is_*`` helpers, allowed
  transitions, where a run resumes);
- ``store``: the SQLite state file (WAL, one transaction per transition, event
  log, run lock);
- ``bmc``: the BMC protocol and its drivers, IPMI (pyghmi) and Redfish (sushy);
- ``boot``: the boot paths: PXE/iPXE, Redfish virtual media (a per-node ISO), UEFI HTTP boot;
- ``orchestrator``: nodes in parallel, bounded, with timeouts, retries and resume;
- ``pxe``, ``bootserver``, ``cloudinit``, ``sshverify``: the boot services and the
  SSH check the orchestrator calls.

Simulated BMCs live in the lab (:mod:`cloudplan.lab.bmcsim`), not here.
"""
