"""Zero-touch bare-metal provisioning.

- ``states``: the node state machine (``NodeState`` with ``is_*`` helpers, allowed
  transitions, where a run resumes);
- ``store``: the SQLite state file (WAL, one transaction per transition, event
  log, run lock);
- ``bmc``: the pyghmi IPMI driver (sessions, watchdog, error translation, retries);
- ``orchestrator``: nodes in parallel, bounded, with timeouts, retries and resume;
- ``pxe``, ``bootserver``, ``cloudinit``, ``sshverify``: the boot services and the
  SSH check the orchestrator calls;
- ``testbmc``: simulated BMCs for tests and benchmarks.
"""
