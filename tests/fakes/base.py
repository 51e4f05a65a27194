"""A recording HTTP server on loopback that each stand-in builds its routes on."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    reset: bool = False  # drop the connection with a TCP reset instead of answering


@dataclass
class _Fault:
    match: str  # substring of the path (or path?query) that this fault applies to
    response: Response
    times: int


class FakeServer:
    """Subclass and implement route(); start() serves on a free 127.0.0.1 port.

    fail(match, status, body, times) makes the next `times` requests whose path contains
    `match` answer with that instead, so a test can script 429s, 500s, stalls or resets.
    With tls (a server context), it serves HTTPS, as the real service does.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY the client's delayed
            # ACK adds ~40 ms to every answer, which real services do not.
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                req = Request(
                    self.command, parts.path, query, dict(self.headers), body, time.time()
                )
                with fake._lock:
                    fake.requests.append(req)
                resp = fake._fault_for(req) or fake.route(req)
                if resp.delay_s:
                    time.sleep(resp.delay_s)
                if resp.reset:
                    # SO_LINGER 0: close() sends RST, as a peer or middlebox that drops us does.
                    linger = struct.pack("ii", 1, 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.connection.close()
                    self.close_connection = True
                    return
                payload = resp.body
                headers = dict(resp.headers)
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                    headers.setdefault("Content-Type", "application/json")
                elif isinstance(payload, str):
                    payload = payload.encode()
                try:
                    self.send_response(resp.status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client gave up (a timeout test): nothing to answer

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.tls = tls
        if tls is not None:
            # The handshake happens in each request's thread, not in the accept loop.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    # -- to implement
    def route(self, req: Request) -> Response:
        return Response(404, {"error": "no route"})

    # -- scripting
    def fail(
        self,
        match: str,
        status: int,
        body="",
        times: int = 1,
        delay_s: float = 0.0,
        reset: bool = False,
    ):
        with self._lock:
            self._faults.append(_Fault(match, Response(status, body, {}, delay_s, reset), times))

    def _fault_for(self, req: Request) -> Response | None:
        target = req.path + "?" + "&".join(f"{k}={v}" for k, v in req.query.items())
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.match in target:
                    fault.times -= 1
                    return fault.response
        return None

    def count(self, match: str = "") -> int:
        return sum(1 for r in self.requests if match in r.path)

    # -- lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        if self.tls is not None:
            return f"https://{host}" + ("" if port == 443 else f":{port}")
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
