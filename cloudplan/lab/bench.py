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


# An image deploy's steps, as (name, state it starts at, state it ends at); None: the first power command.
IMAGE_STEPS = (("ramdisk boot", None, "deploying"), ("image write", "deploying", "image-written"),
               ("reboot", "image-written", "rebooting"), ("first boot", "rebooting", "reported-in"),
               ("ssh verification", "reported-in", "deployed"))


def step_shares(db: Path) -> dict:
    """Per step of an image deploy: seconds per node (mean, max) and its share of power-on to deployed,
    from the last pass of each node through the states (a resumed node's earlier tries are not counted)."""
    with StateStore(db, create=False) as st:
        events = {r.name: st.events(r.name) for r in st.nodes()}
    per: dict[str, list[float]] = {name: [] for name, _, _ in IMAGE_STEPS}
    for ev in events.values():
        entered = {}
        for e in ev:
            if e.kind == "power" and "from disk" not in e.detail:
                entered = {None: e.at}      # a network boot starts the node's (last) deploy
            elif e.kind == "transition" and e.to_state:
                entered.setdefault(e.to_state, e.at)
        if "deployed" not in entered or None not in entered:
            continue
        for name, start, end in IMAGE_STEPS:
            if start in entered and end in entered:
                per[name].append(entered[end] - entered[start])
    total = sum(sum(v) for v in per.values()) or 1.0
    return {name: {"mean_s": round(sum(v) / len(v), 1), "max_s": round(max(v), 1),
                   "share": round(sum(v) / total, 3)} for name, v in per.items() if v}


def bring_up(nodes: int, *, cache_dir: Path | None = None, boot_timeout_s: float = 300.0,
             image_cache: Path | None = None, ramdisk_cache: Path | None = None,
             deploy_timeout_s: float = 1800.0, first_boot_timeout_s: float = 900.0) -> dict:
    """Make a lab of ``nodes`` machines, provision it, measure, and remove it (always). With
    ``image_cache`` the machines get an image deploy and each step's share is measured too."""
    lab_dir = Path(tempfile.mkdtemp(prefix="cloudplan-lab-bench-"))
    ns = f"cplab-bench-{secrets.token_hex(2)}"
    try:
        lab = rack.up(lab_dir, nodes=nodes, namespace=ns, cache_dir=cache_dir, image_cache=image_cache,
                      ramdisk_cache=ramdisk_cache)
        p = lab_paths(lab_dir)
        t0 = time.monotonic()
        run = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "cloudplan.cli", "provision",
                              str(lab.inventory), "--state", str(p["provision_state"]), "--dhcp",
                              "--boot-timeout", str(boot_timeout_s), "--deploy-timeout", str(deploy_timeout_s),
                              "--first-boot-timeout", str(first_boot_timeout_s)], capture_output=True, text=True)
        figures = deploy_window(p["provision_state"])
        figures.update(command_s=round(time.monotonic() - t0, 1), exit_code=run.returncode)
        if image_cache is not None:
            figures["steps"] = step_shares(p["provision_state"])
        return figures
    finally:
        rack.down(lab_dir, missing_ok=True)
