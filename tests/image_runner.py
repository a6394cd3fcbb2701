"""`cloudplan provision` of an image deploy in a process of its own (so a test can SIGKILL it).

The machines of these tests are played (provision_fixtures.NodePlayer) and their
"installed OS" is a host sshd, whose / is the test host's, not a deployed disk:
the installed-OS checks (cloudplan.provision.installcheck, proven on a real boot
in test_deploy_mirror.py) are replaced by one command over the pinned SSH
connection, recorded in the facts. Everything else is the real orchestrator.

Usage: python image_runner.py INVENTORY STATE [OPTION=VALUE ...] (ProvisionOptions fields).
"""

from __future__ import annotations

import json
import sys

from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.provision.orchestrator import Orchestrator, ProvisionOptions
from cloudplan.provision.store import StateStore


def recorded_check(node):
    return lambda run: {"root_disk": None, "networks": [], "checked": "host sshd, not a deployed disk",
                        "hostname": run("hostname").strip()}


def main(argv: list[str]) -> int:
    inventory, state, *opts = argv
    options = ProvisionOptions(**{k: json.loads(v) for k, v in (o.split("=", 1) for o in opts)})
    with StateStore(state, exclusive=True) as st:
        result = Orchestrator(load_model(Inventory, inventory), st, options, source=inventory,
                              installed_check=recorded_check).run()
    print(json.dumps({"ok": result.ok, "errors": result.errors}))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
