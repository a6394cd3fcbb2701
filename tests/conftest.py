"""Suite-wide: the wall-clock minutes since the suite began, after each test file's line.

A run that is cut off (CI stops a job at its time limit) then still shows where the
time went, file by file, in the last lines it printed.
"""

from __future__ import annotations

import time

import pytest

_began = time.monotonic()
_last_of_file: set[str] = set()
_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    by_file = {item.nodeid.split("::", 1)[0]: item.nodeid for item in items}
    _last_of_file.clear()
    _last_of_file.update(by_file.values())


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid: str, location) -> None:
    if nodeid not in _last_of_file or _config is None:
        return
    reporter = _config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.verbosity <= 0:   # -v prints a line per test: nothing to append to
        reporter.write(f" {(time.monotonic() - _began) / 60:5.1f} min")
