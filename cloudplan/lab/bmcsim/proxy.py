"""A fault-injecting HTTPS proxy to put in front of a Redfish emulator.

It terminates TLS with a certificate of its own (so a test can also present a
certificate that does not match), forwards each request to the emulator, and
can instead: answer ``503 Service Unavailable`` to the next N requests (a BMC
whose web server is busy), go silent (accept, read, never answer: a hung BMC),
answer an action ``202 Accepted`` with a task monitor ``Location`` (how
BMCs report long actions), or refuse a boot override some BMCs refuse
(``400`` for ``BootSourceOverrideEnabled: Continuous``).

With ``sessions=True`` it also serves a Redfish SessionService, which the
emulator lacks: ``POST /redfish/v1/SessionService/Sessions`` checks the
credentials against the emulator and answers an ``X-Auth-Token``; requests
carrying that token are forwarded with the session's credentials; ``DELETE``
of the session ends it. It records what cloudplan sent (method, path, JSON
body; never the Authorization header) so a test can check the exact request.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudplan.lab.bmcsim.redfish import CertFiles

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass
class Seen:
    method: str
    path: str
    body: object


class FaultProxy:
    def __init__(self, upstream: str, tls: CertFiles, *, upstream_ca: str, host: str = "127.0.0.1",
                 sessions: bool = False):
        self.upstream, self.tls, self.upstream_ca = upstream.rstrip("/"), tls, upstream_ca
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_status = 503
        self._fail_every = 0          # >0: every Nth request answered 503, for good
        self._count = 0
        self._silent = threading.Event()
        self._release = threading.Event()
        self._task_suffixes: tuple[str, ...] = ()
        self._refuse: tuple[str, object] | None = None
        self.sessions = sessions
        self._sessions: dict[str, tuple[str, str]] = {}     # token -> (session path, basic auth header)
        self.sessions_created = self.sessions_deleted = self.token_requests = 0
        self.seen: list[Seen] = []
        self.failed_answers = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: tests read .seen
                pass

            def do_GET(self):  # noqa: N802
                proxy._handle(self)

            do_POST = do_PATCH = do_DELETE = do_PUT = do_GET  # noqa: N815

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name=f"proxy-{self.port}")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- what the test controls ----------------------------------------------------

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail_left, self._fail_status = n, status

    def fail_every(self, n: int) -> None:
        """Answer 503 to every ``n``-th request from now on (0: stop)."""
        with self._lock:
            self._fail_every, self._count = n, 0

    def go_silent(self) -> None:
        self._release.clear()
        self._silent.set()

    def answer_again(self) -> None:
        self._silent.clear()
        self._release.set()

    def tasks_for(self, *path_suffixes: str) -> None:
        """POSTs to paths ending so are forwarded, then answered 202 with a task monitor."""
        self._task_suffixes = path_suffixes

    def refuse_boot(self, key: str, value: object) -> None:
        """PATCHes whose Boot section sets ``key`` to ``value`` get 400 (None: refuse nothing)."""
        self._refuse = None if value is None else (key, value)

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.answer_again()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the proxying --------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        shown = {**body, "Password": "***"} if isinstance(body, dict) and "Password" in body else body
        with self._lock:
            self.seen.append(Seen(req.command, req.path, shown))
            self._count += 1
            failing = self._fail_left > 0 or (self._fail_every > 0 and self._count % self._fail_every == 0)
            if failing:
                self._fail_left = max(0, self._fail_left - 1)
                self.failed_answers += 1
        if self._silent.is_set():
            self._release.wait(120)   # bounded: a test that forgets to release does not hang the process
            return
        if failing:
            self._reply(req, self._fail_status, {"error": {"code": "Base.1.0.ServiceTemporarilyUnavailable",
                                                          "message": "service busy, retry later"}},
                        {"Retry-After": "1"})
            return
        if self.sessions and self._session_call(req, body, raw):
            return
        if self._refused(body):
            self._reply(req, 400, {"error": {"code": "Base.1.0.PropertyValueNotInList",
                                             "message": "The value for BootSourceOverrideEnabled is not supported"}},
                        {})
            return
        status, headers, content = self._forward(req, raw)
        if req.command == "POST" and status < 300 and req.path.endswith(self._task_suffixes or ("\0",)):
            self._reply(req, 202, {}, {"Location": "/redfish/v1/TaskService/Tasks/42"})
            return
        self._send(req, status, headers, content)

    def _refused(self, body) -> bool:
        if self._refuse is None or not isinstance(body, dict):
            return False
        key, value = self._refuse
        return (body.get("Boot") or {}).get(key) == value

    def _session_call(self, req, body, raw: bytes) -> bool:
        """Session create/delete; token auth rewritten to the session's basic auth. True: answered."""
        sessions = "/redfish/v1/SessionService/Sessions"
        if req.command == "POST" and req.path.rstrip("/") == sessions:
            user, pw = (body or {}).get("UserName", ""), (body or {}).get("Password", "")
            basic = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
            status, _, _ = self._forward(req, b"", method="GET", path="/redfish/v1/Systems",
                                         extra={"Authorization": basic})
            if status != 200:
                self._reply(req, 401, {"error": {"code": "Base.1.0.GeneralError", "message": "bad credentials"}}, {})
                return True
            token, sid = secrets.token_hex(16), secrets.token_hex(4)
            with self._lock:
                self._sessions[token] = (f"{sessions}/{sid}", basic)
                self.sessions_created += 1
            self._reply(req, 201, {"@odata.id": f"{sessions}/{sid}", "Id": sid, "UserName": user},
                        {"X-Auth-Token": token, "Location": f"{sessions}/{sid}"})
            return True
        token = req.headers.get("X-Auth-Token")
        if token is None:
            return False
        with self._lock:
            entry = self._sessions.get(token)
            if entry is not None:
                self.token_requests += 1
        if entry is None:
            self._reply(req, 401, {"error": {"code": "Base.1.0.NoValidSession", "message": "no such session"}}, {})
            return True
        if req.command == "DELETE" and req.path.rstrip("/") == entry[0]:
            with self._lock:
                self._sessions.pop(token, None)
                self.sessions_deleted += 1
            self._send(req, 204, {}, b"")
            return True
        status, headers, content = self._forward(req, raw, extra={"Authorization": entry[1]})
        self._send(req, status, headers, content)
        return True

    def _forward(self, req, raw: bytes, *, method: str | None = None, path: str | None = None,
                 extra: dict | None = None):
        import requests

        headers = {k: v for k, v in req.headers.items()
                   if k.lower() not in _HOP and k.lower() not in ("host", "x-auth-token")}
        headers.update(extra or {})
        rsp = requests.request(method or req.command, self.upstream + (path or req.path), data=raw or None,
                               headers=headers,
                               verify=self.upstream_ca, timeout=60)
        return rsp.status_code, rsp.headers, rsp.content

    def _reply(self, req, status: int, obj: dict, extra: dict) -> None:
        data = json.dumps(obj).encode()
        self._send(req, status, {"Content-Type": "application/json", **extra}, data)

    @staticmethod
    def _send(req, status: int, headers, content: bytes) -> None:
        req.send_response(status)
        for k, v in dict(headers).items():
            if k.lower() not in _HOP:
                req.send_header(k, v)
        req.send_header("Content-Length", str(len(content)))
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(content)
        req.close_connection = True
