"""Serve the jobs page, JSON API, webhooks, /metrics and /healthz (read-only; webhooks trigger passes)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from reconciler.errors import UserError
from reconciler.eventlog import emit

SECRET_ENV = "RECONCILER_WEBHOOK_SECRET"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    parser.add_argument("--branch", help="deployment branch (default: reconciler.yaml, else HEAD's branch)")
    parser.add_argument("--reconcile-on-start", action="store_true",
                        help="run one pass at start-up (catches pushes missed while the server was down)")


def bind(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a port number (0 to 65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port or --host") \
            from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from reconciler.run.reconcile_pass import PassOptions
    from reconciler.web.app import ServeContext, create_app
    from reconciler.web.metrics import Metrics
    from reconciler.web.runner import PassReport, PassRunner
    from reconciler.web.slow_clients import GuardedH11Protocol
    from reconciler.web.tip_cache import StateCache

    cache = StateCache(args.repo, args.branch)
    metrics = Metrics()
    secret = os.environ.get(SECRET_ENV) or None
    pass_env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}  # drivers never see it

    def make_options(stop: threading.Event) -> PassOptions:
        state = cache.get()
        remote = state.settings.remote if state else None
        return PassOptions(repo=args.repo, branch=cache.branch, remote=remote, env=pass_env, stop=stop,
                           lock_wait=30.0, events=emit,
                           on_user=lambda job, user, status: metrics.user_deployments.labels(status).inc())

    def on_report(report: PassReport) -> None:
        metrics.passes.labels(report.outcome).inc()
        metrics.pass_seconds.observe(report.seconds)
        if report.outcome in ("ok", "failure"):
            metrics.last_success.set_to_current_time()

    runner = PassRunner(make_options, emit, on_report, lock_dir=cache.repo.state_dir)
    ctx = ServeContext(cache=cache, runner=runner, metrics=metrics, secret=secret)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(create_app(ctx), log_level="warning", access_log=False, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=5, http=GuardedH11Protocol)
    server = _Server(config, on_signal=runner.stop.set)
    runner.start()
    if args.reconcile_on_start:
        runner.trigger("start-up")
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    emit("serve.started", {"url": url, "branch": cache.branch, "webhooks": "enabled" if secret else
                           f"disabled ({SECRET_ENV} is not set)"})
    try:
        server.run(sockets=[sock])
    finally:
        emit("serve.stopping", {"pass_running": runner.busy["running"]})
        runner.shutdown()  # the stop event is set: the running pass checkpoints and returns
        sock.close()
    emit("serve.stopped", {})
    return 0


class _Server:
    """uvicorn's server, but a signal also stops the running pass, and it is not re-raised at exit
    (uvicorn re-raises it, which would end the process with the signal instead of exit code 0)."""

    def __init__(self, config: Any, on_signal: Any) -> None:
        import uvicorn

        on_stop = on_signal

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                on_stop()
                super().handle_exit(sig, frame)

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                signals = (signal.SIGINT, signal.SIGTERM)
                original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
                try:
                    yield
                finally:
                    for sig, handler in original.items():
                        signal.signal(sig, handler)

        self.server = Server(config)

    def run(self, sockets: list[socket.socket]) -> None:
        self.server.run(sockets=sockets)
