"""Real Redfish parts for the tests: sushy-tools' emulator over HTTPS with a CA the
test makes, a fault proxy in front of it, and a file server for virtual media.

Every process and server is started on loopback by the fixture that uses it and
stopped by it."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cloudplan.lab.bmcsim.proxy import FaultProxy
from cloudplan.lab.bmcsim.redfish import Emulator, FakeSystem, TestCA
from cloudplan.provision.bmc.redfish import RedfishClient
from cloudplan.provision.bmc.tls import TrustPolicy

RF_PASSWORD = "rf-Secret-93k"


def need_sushy_tools() -> None:
    try:
        import sushy_tools  # noqa: F401
    except ImportError:
        pytest.fail("sushy-tools is required by this test: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    need_sushy_tools()
    return TestCA(tmp_path_factory.mktemp("ca"))


def client(url: str, ca: TestCA | None = None, *, password: str = RF_PASSWORD, system: str | None = None,
           timeout: float = 10.0, trust: TrustPolicy | None = None, node: str = "n") -> RedfishClient:
    trust = trust or TrustPolicy(ca_file=str(ca.cert_file))
    return RedfishClient(url=url, username="admin", password=password, system=system, trust=trust, node=node,
                         call_timeout_s=timeout, task_timeout_s=20.0)


class FileServer:
    """Plain HTTP on loopback serving one directory (what a BMC fetches virtual media from)."""

    def __init__(self, root: Path):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                          partial(_QuietHandler, directory=str(root)))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._t = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


__all__ = ["Emulator", "FakeSystem", "FaultProxy", "FileServer", "RF_PASSWORD", "TestCA", "ca", "client",
           "need_sushy_tools"]
