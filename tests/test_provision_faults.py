"""Provisioning when the state file stops taking writes: one error, every node where it was.

Real parts: simulated BMCs over IPMI, the real boot server, a real sshd, the
state file on a 1 MiB tmpfs the test fills while a node is being booted.
"""

from __future__ import annotations

import logging
import sys

import pytest
from provision_fixtures import fill_disk, make_world, small_fs  # noqa: F401 - fixtures
from test_hijack import OPTS, _factory

from cloudplan.errors import StateFileError
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.provision.orchestrator import Orchestrator
from cloudplan.provision.states import NodeState
from cloudplan.provision.store import StateStore

pytestmark = pytest.mark.root


def test_a_disk_filling_mid_run_stops_the_run_with_one_error_and_loses_nothing(make_world, small_fs, caplog):
    w = make_world({"a": {}, "b": {}})
    state = small_fs / "state.db"
    inv = load_model(Inventory, w.inventory)
    caplog.set_level(logging.INFO)
    with StateStore(state, exclusive=True) as st:
        with pytest.raises(StateFileError, match="state.db: cannot write: the disk is full"):
            Orchestrator(inv, st, OPTS, client_factory=_factory(
                {("set_power", "on"): lambda: fill_disk(small_fs / "filler")})).run()
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    (small_fs / "filler").unlink()
    with StateStore(state, create=False) as st:
        stored = {r.name: r for r in st.nodes()}
    # Each node keeps the last state that was stored: none failed for the disk, none lost.
    assert set(stored) == {"a", "b"}
    assert all(r.state is not NodeState.failed for r in stored.values()), stored
    # ... and the next run, with room on the disk, finishes the job.
    with StateStore(state, exclusive=True) as st:
        result = Orchestrator(inv, st, OPTS).run()
    assert result.ok, result.errors
    assert sys.exc_info() == (None, None, None)
