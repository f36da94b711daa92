"""`reconciler worker`: a Celery worker (thread pool) that runs per-user deployments, with its heartbeat.

One process is one worker identity (host, pid, a random part): its heartbeat key lives while the process
does, so a fence STARTED by it is known to be abandoned once the key has expired. The thread pool keeps
the heartbeat, the consumer and the calls in that one process: SIGKILL ends them together.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler import drivers
from reconciler.run.fleet import keys
from reconciler.run.fleet.app import broker_safety, make_app, masked, redis_client
from reconciler.run.fleet.runtime import NotReady, WorkerRuntime, describe

MAX_PREPARE_RETRIES = 6


@dataclass(frozen=True)
class WorkerOptions:
    broker: str
    concurrency: int = 4
    repo_url: str | None = None
    state_dir: Path = Path.home() / ".cache" / "reconciler-worker"
    target_root: Path | None = None
    queues: tuple[str, ...] = ()  # driver types; empty: every installed driver
    name: str | None = None
    visibility_timeout: int = 3600
    heartbeat_ttl: float = 15.0
    allow_unsafe_broker: bool = False
    metrics_port: int | None = None


class Heartbeat:
    """Keeps `alive:<worker>` set with a TTL from a thread of its own, and the worker's description."""

    def __init__(self, client: Any, worker_id: str, description: str, ttl: float) -> None:
        self.client = client
        self.worker_id = worker_id
        self.description = description
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.interval = ttl / 5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fleet-heartbeat", daemon=True)

    def beat(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.heartbeat(self.worker_id), self.description, px=self.ttl_ms)
        pipe.hset(keys.WORKERS, self.worker_id, self.description)
        pipe.execute()

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # the broker restarts: keep trying; fences of ours may be judged meanwhile
                print(f"reconciler worker: heartbeat failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def stop(self) -> None:
        """A clean exit: the heartbeat goes at once (nothing of ours runs any more)."""
        self._stop.set()
        try:
            self.client.delete(keys.heartbeat(self.worker_id))
            self.client.hdel(keys.WORKERS, self.worker_id)
        except Exception:
            pass


def worker_id(name: str | None) -> str:
    base = name or socket.gethostname()
    return f"{base}-{os.getpid()}-{secrets.token_hex(3)}"


def register_task(app: Any, runtime: WorkerRuntime) -> None:
    def deploy_user(self: Any, **message: Any) -> str:
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        try:
            return runtime.handle(message, redelivered=redelivered)
        except NotReady as exc:
            if self.request.retries >= MAX_PREPARE_RETRIES:
                runtime.fail_unprepared(message, f"cannot read the claimed commit: {exc}")
                return "failed"
            raise self.retry(countdown=min(30, 2 ** self.request.retries)) from None

    app.task(name=keys.TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=MAX_PREPARE_RETRIES, ignore_result=True)(deploy_user)


def run_worker(options: WorkerOptions, echo: Callable[[str, dict[str, Any]], None]) -> int:
    from reconciler.errors import UserError

    client = redis_client(options.broker)
    try:
        client.ping()
    except Exception as exc:
        raise UserError(f"the fleet broker {masked(options.broker)} cannot be reached: {exc}") from None
    unsafe = broker_safety(client)
    if unsafe and not options.allow_unsafe_broker:
        raise UserError(f"the fleet broker {masked(options.broker)} is not safe for fences: {unsafe} "
                        "(or start the worker with --allow-unsafe-broker)")
    installed = sorted(drivers.known_types())
    unknown = [t for t in options.queues if t not in installed]
    if unknown:
        raise UserError(f"--queues: no driver {', '.join(map(repr, unknown))} is installed here "
                        f"(installed: {', '.join(installed)})")
    types = list(options.queues) or installed
    queues = [keys.queue(t) for t in types]
    ident = worker_id(options.name)
    state_dir = options.state_dir.resolve()
    shutil.rmtree(state_dir / "work", ignore_errors=True)  # rendered content of a previous life (SPEC 9.1.11)
    (state_dir / "work").mkdir(parents=True, exist_ok=True)
    runtime = WorkerRuntime(client=client, worker_id=ident, state_dir=state_dir, env=dict(os.environ),
                            repo_url=options.repo_url, target_root=options.target_root, echo=echo)
    app = make_app(options.broker, visibility_timeout=options.visibility_timeout)
    register_task(app, runtime)
    heartbeat = Heartbeat(client, ident, describe(ident, types, options.concurrency, time.time()),
                          options.heartbeat_ttl)
    heartbeat.start()
    if options.metrics_port is not None:
        from reconciler.run.fleet.metrics import serve_metrics

        serve_metrics(options.broker, options.metrics_port)
    echo("worker.started", {"worker": ident, "broker": masked(options.broker), "queues": queues,
                            "concurrency": options.concurrency, "pid": os.getpid()})
    from celery.signals import worker_ready

    def ready(**_: Any) -> None:
        echo("worker.ready", {"worker": ident})

    worker_ready.connect(ready, weak=False)
    code = 0
    try:
        app.worker_main(["worker", "--pool=threads", f"--concurrency={options.concurrency}", "-Q", ",".join(queues),
                         "-n", f"{ident}@%h", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
                         "--without-heartbeat"])
    except SystemExit as stop:  # Celery ends its command with sys.exit
        code = stop.code if isinstance(stop.code, int) else 0
    finally:
        heartbeat.stop()
        echo("worker.stopped", {"worker": ident})
    return code
