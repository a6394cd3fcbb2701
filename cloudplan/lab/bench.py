"""Time a whole bring-up of the virtual rack: lab up, the real `cloudplan provision`, lab down.

The figure is the one an operator cares about: from the first power-on
command to the last node deployed (SSH-verified), read from the provisioning
state file's event log, not from a stopwatch around the command.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudplan.errors import LabError
from cloudplan.lab import rack
from cloudplan.lab.state import lab_paths
from cloudplan.provision.store import StateStore


def deploy_window(db: Path) -> dict:
    """Per node: seconds from its first power command to deployed; and the rack's first-to-last window."""
    with StateStore(db, create=False) as st:
        recs = st.nodes()
        events = {r.name: st.events(r.name) for r in recs}
    first_power = {n: min((e.at for e in ev if e.kind == "power"), default=None) for n, ev in events.items()}
    deployed = {n: max((e.at for e in ev if e.to_state == "deployed" and e.kind == "transition"), default=None)
                for n, ev in events.items()}
    ok = [n for n in events if first_power[n] is not None and deployed[n] is not None]
    if not ok:
        raise LabError("no node was deployed: see `cloudplan status --state " + str(db) + "`")
    return {"deployed": len(ok), "nodes": len(recs),
            "per_node_s": {n: round(deployed[n] - first_power[n], 1) for n in ok},
            "first_power_to_last_deployed_s": round(max(deployed[n] for n in ok)
                                                    - min(first_power[n] for n in ok), 1)}


def bring_up(nodes: int, *, cache_dir: Path | None = None, boot_timeout_s: float = 300.0) -> dict:
    """Make a lab of ``nodes`` machines, provision it, measure, and remove it (always)."""
    lab_dir = Path(tempfile.mkdtemp(prefix="cloudplan-lab-bench-"))
    ns = f"cplab-bench-{secrets.token_hex(2)}"
    try:
        lab = rack.up(lab_dir, nodes=nodes, namespace=ns, cache_dir=cache_dir)
        p = lab_paths(lab_dir)
        t0 = time.monotonic()
        run = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "cloudplan.cli", "provision",
                              str(lab.inventory), "--state", str(p["provision_state"]), "--dhcp",
                              "--boot-timeout", str(boot_timeout_s)], capture_output=True, text=True)
        figures = deploy_window(p["provision_state"])
        figures.update(command_s=round(time.monotonic() - t0, 1), exit_code=run.returncode)
        return figures
    finally:
        rack.down(lab_dir, missing_ok=True)
