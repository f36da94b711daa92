"""A reference HTTP deployment target for the `http` driver: a real threaded server on 127.0.0.1.

It implements the driver's contract (README, "HTTP contract"): it stores one deployment per user and
definition, answers `{"changed": false}` to a PUT that changes nothing, replays the stored answer for a
repeated `Idempotency-Key`, counts requests and records their headers, and can be told to fail: a
queue of faults (an HTTP status N times, 429 with Retry-After, a slow answer, a dropped connection)
is consumed one per request.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Fault:
    kind: str  # "status" | "slow" | "drop"
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0
    body: bytes = b""
    method: str | None = None  # only requests with this method consume the fault
    then_apply: bool = True  # "slow": after the pause, handle the request (else answer `status`, unapplied)


@dataclass
class Target:
    token: str | None = None  # when set, requests need `Authorization: Bearer <token>`
    echo: bool = False  # echo every request body back in the response (a careless target)
    deployments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    idempotency: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    replays: int = 0
    applies: int = 0  # PUTs that changed the stored deployment
    faults: list[Fault] = field(default_factory=list)
    user_faults: dict[str, Fault] = field(default_factory=dict)  # every request for that user, forever
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # -- telling it to fail ------------------------------------------------------------------------
    def fail(self, status: int = 500, times: int = 1, retry_after: str | None = None, body: str = "",
             method: str | None = None) -> None:
        with self.lock:
            self.faults += [Fault("status", status, retry_after, body=body.encode(), method=method)] * times

    def slow(self, seconds: float, times: int = 1, method: str | None = None) -> None:
        with self.lock:
            self.faults += [Fault("slow", seconds=seconds, method=method)] * times

    def drop(self, times: int = 1, method: str | None = None) -> None:
        with self.lock:
            self.faults += [Fault("drop", method=method)] * times

    def fail_user(self, user: str, fault: Fault) -> None:
        with self.lock:
            self.user_faults[user] = fault

    def _next_fault(self, method: str, user: str) -> Fault | None:
        with self.lock:
            if user in self.user_faults:
                return self.user_faults[user]
            for index, fault in enumerate(self.faults):
                if fault.method in (None, method):
                    return self.faults.pop(index)
        return None

    # -- inspection --------------------------------------------------------------------------------
    def count(self, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if method in (None, r.method))

    def methods(self) -> Counter[str]:
        with self.lock:
            return Counter(r.method for r in self.requests)

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the target first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Target:
        target = self

        class Handler(_Handler):
            owner = target

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Target:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: Target
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        target = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with target.lock:
            seen = Seen(method, self.path, dict(self.headers.items()), body, time.monotonic())
            target.requests.append(seen)
        parts = self.path.strip("/").split("/")
        user = unquote(parts[1]) if len(parts) > 1 else ""
        fault = target._next_fault(method, user)
        if fault is not None:
            if fault.kind == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.kind == "slow":
                time.sleep(fault.seconds)
            if fault.kind == "status" or not fault.then_apply:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._send(fault.status, fault.body or {"error": f"injected {fault.status}"}, headers)
                return
        if target.token is not None and self.headers.get("Authorization") != f"Bearer {target.token}":
            self._send(401, {"error": "missing or wrong bearer token"})
            return
        if len(parts) != 4 or parts[0] != "users" or parts[2] != "definitions":
            self._send(404, {"error": "no such route"})
            return
        key = (unquote(parts[1]), unquote(parts[3]))
        status, answer = self._route(method, key, body)
        if target.echo and answer is not None:  # a careless target: the request comes back, also encoded
            answer["echo"] = body.decode("utf-8", "replace")
            answer["echo_base64"] = base64.b64encode(body).decode()
            answer["echo_authorization"] = self.headers.get("Authorization", "")
        self._send(status, answer)

    def _route(self, method: str, key: tuple[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        target = self.owner
        idem = self.headers.get("Idempotency-Key")
        with target.lock:
            stored = target.deployments.get(key)
            if method == "GET":
                return (200, dict(stored)) if stored is not None else (404, {"error": "not deployed"})
            if idem and f"{method} {idem}" in target.idempotency:
                target.replays += 1
                status, saved = target.idempotency[f"{method} {idem}"]
                return status, json.loads(saved) if saved else None
            if method == "DELETE":
                if stored is None:
                    status, answer = 404, {"error": "not deployed"}
                else:
                    del target.deployments[key]
                    status, answer = 200, {"changed": True}
            else:
                wanted = json.loads(body)
                fields = ("assets", "binary_assets", "parameters", "content_digest")
                if stored is not None and all(stored.get(f) == wanted.get(f) for f in fields):
                    status, answer = 200, {"changed": False}
                else:
                    target.deployments[key] = wanted
                    target.applies += 1
                    status, answer = (200 if stored is not None else 201), {"changed": True}
            if idem:
                target.idempotency[f"{method} {idem}"] = (status, json.dumps(answer).encode())
            return status, answer
