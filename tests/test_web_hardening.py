"""SPEC 9.1 rule 13, web hardening, against a real `reconciler serve` subprocess with real sockets:
a correctly signed webhook body nested deeper than 64 levels is answered 400 (never a 500), and a client
that does not send its whole request (headers or body) within 10 seconds is disconnected; neither
affects other clients, which keep getting answers meanwhile.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.serve import ServeProcess, github_signature

JOB = "blocks:\n  - {definition: app, server: srv, users: all, content_tokens: {greeting: hi}}\n"
LIMIT = 10.0


def signed_push(server: ServeProcess, body: bytes) -> int:
    answer = server.post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": "push", "X-Hub-Signature-256": github_signature(body),
        "Content-Type": "application/json"})
    return int(answer.status_code)


def nested(depth: int) -> bytes:
    """A push payload whose arrays and objects nest exactly `depth` levels."""
    inner = '{"ref": "refs/heads/elsewhere"}'
    return ('{"ref": "refs/heads/elsewhere", "x": ' + "[" * (depth - 2) + inner + "]" * (depth - 2) + "}").encode()


def test_a_deeply_nested_signed_body_is_400_not_500(make_repo: Callable[..., Path],
                                                    serve: Callable[..., ServeProcess]) -> None:
    server = serve(make_repo(jobs={"first": JOB}))
    assert signed_push(server, nested(64)) == 200  # 64 levels: fine (a push to another branch: ignored)
    assert signed_push(server, nested(65)) == 400
    assert signed_push(server, nested(100_000)) == 400
    tricky = b'{"s": "' + b"[" * 5000 + b'", "ref": "refs/heads/elsewhere"}'  # brackets inside a string
    assert signed_push(server, tricky) == 200
    assert server.get("/healthz").status_code == 200
    assert "RecursionError" not in server.log.read_text("utf-8")


def _connect(server: ServeProcess) -> socket.socket:
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def _closed_after(sock: socket.socket, started: float) -> tuple[float, bytes]:
    """Block until the server closes the connection; (seconds since `started`, what it sent)."""
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return time.monotonic() - started, received
        received += chunk


def test_slow_clients_are_cut_off_and_others_are_served(make_repo: Callable[..., Path],
                                                        serve: Callable[..., ServeProcess]) -> None:
    server = serve(make_repo(jobs={"first": JOB}))
    started = time.monotonic()
    silent = _connect(server)  # connects and sends nothing
    headers = _connect(server)  # sends half of its headers
    headers.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n")
    body = _connect(server)  # whole headers, then a tenth of the body
    body.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n"
                 + b"{" * 100)
    trickle = _connect(server)  # a byte at a time, forever (slowloris)
    stop = threading.Event()

    def drip() -> None:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 10_000
        for byte in request:
            if stop.wait(0.2):
                return
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    results: dict[str, tuple[float, bytes]] = {}

    def watch(name: str, sock: socket.socket) -> None:
        results[name] = _closed_after(sock, started)

    watchers = [threading.Thread(target=watch, args=item, daemon=True)
                for item in (("silent", silent), ("headers", headers), ("body", body), ("trickle", trickle))]
    for watcher in watchers:
        watcher.start()
    answered = 0
    try:
        while any(w.is_alive() for w in watchers) and time.monotonic() - started < 40:
            asked = time.monotonic()
            health = server.get("/healthz")  # another client, while the slow ones hang on
            assert health.status_code == 200 and time.monotonic() - asked < 5
            answered += 1
            time.sleep(0.2)
    finally:
        stop.set()
        for watcher in watchers:
            watcher.join(5)
        for sock in (silent, headers, body, trickle):
            sock.close()
    assert set(results) == {"silent", "headers", "body", "trickle"}, f"still connected: {results}"
    for name, (seconds, received) in results.items():
        assert LIMIT - 1 <= seconds < LIMIT + 15, f"{name} was cut off after {seconds:.1f} s"
        assert received == b"" or received.startswith(b"HTTP/1.1 408"), (name, received[:80])
    assert answered >= 10
    events = [json.loads(line) for line in server.log.read_text("utf-8").splitlines() if line.startswith("{")]
    assert sum(1 for e in events if e.get("event") == "http.slow_client") == 4
    assert "Traceback" not in server.log.read_text("utf-8")


def test_a_prompt_client_on_a_kept_alive_connection_is_not_cut_off(make_repo: Callable[..., Path],
                                                                   serve: Callable[..., ServeProcess]) -> None:
    """Two requests on one connection, each sent whole at once: both answered."""
    server = serve(make_repo(jobs={"first": JOB}))
    sock = _connect(server)
    try:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(4096)
            assert data.startswith(b"HTTP/1.1 200")
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += sock.recv(4096)
    finally:
        sock.close()


def test_responses_are_not_held_back_for_the_clients_delayed_ack() -> None:
    """The server's sockets send at once (TCP_NODELAY): without it a response's body, written after its headers,
    waited for the client's delayed ACK, 40 ms a request on a kept-alive connection (GET /api/jobs?page=1 at
    10,000 jobs: 56 ms instead of 12). asyncio sets it only on sockets made with proto IPPROTO_TCP."""
    import asyncio

    import uvicorn
    from uvicorn.server import ServerState

    from reconciler.web.slow_clients import GuardedH11Protocol

    async def app(scope: object, receive: object, send: object) -> None:  # never called: no request is sent
        raise AssertionError

    config = uvicorn.Config(app, http=GuardedH11Protocol, lifespan="off")
    config.load()
    seen: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as `reconciler serve` binds it
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def protocol() -> GuardedH11Protocol:
            made = GuardedH11Protocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
            original = made.connection_made

            def connection_made(transport: asyncio.Transport) -> None:
                original(transport)
                seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            made.connection_made = connection_made  # type: ignore[method-assign]
            return made

        server = await loop.create_server(protocol, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
