"""Run a fleet worker: a Celery worker that executes per-user deployments (needs the extra `fleet`).

The worker reads the claimed desired state by commit id from the deployment repo's remote (a cached bare
mirror under --state-dir), renders each user, takes the user's fence in Redis and runs the driver. Secrets
come from the worker's own environment. SIGTERM or SIGINT finishes the users in flight and exits 0.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from reconciler.errors import UserError
from reconciler.eventlog import emit

TAKES_REPO = False
BROKER_ENV = "RECONCILER_BROKER_URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help=f"Redis broker URL, redis://HOST:PORT/DB (default: ${BROKER_ENV})")
    parser.add_argument("--concurrency", type=int, default=4, help="users deployed at once (default: 4)")
    parser.add_argument("--repo-url", help="where to fetch the deployment repo from (default: the URL each task "
                                           "carries, the reconciler's remote)")
    parser.add_argument("--state-dir", type=Path, default=Path.home() / ".cache" / "reconciler-worker",
                        help="the worker's mirrors and scratch space (default: ~/.cache/reconciler-worker)")
    parser.add_argument("--target-root", type=Path,
                        help="folder that relative local-driver paths are resolved against (default: current)")
    parser.add_argument("--queues", help="comma-separated driver types to run (default: every installed driver)")
    parser.add_argument("--name", help="worker name (default: the host name); a pid and a random part are added")
    parser.add_argument("--visibility-timeout", type=int, default=3600,
                        help="seconds before an unacknowledged task is delivered again; keep it above the "
                             "longest driver call (default: 3600)")
    parser.add_argument("--metrics-port", type=int, help="serve the fleet's Prometheus metrics on 127.0.0.1:PORT")
    parser.add_argument("--heartbeat-ttl", type=float, default=15.0, help=argparse.SUPPRESS)
    parser.add_argument("--allow-unsafe-broker", action="store_true",
                        help="run even when the broker lacks appendonly/appendfsync always (fences may be lost)")


def run(args: argparse.Namespace) -> int:
    from reconciler.run.fleet import require

    require("reconciler worker")
    broker = args.broker or os.environ.get(BROKER_ENV)
    if not broker:
        raise UserError(f"reconciler worker needs --broker URL (or ${BROKER_ENV}), e.g. redis://127.0.0.1:6379/0")
    if args.concurrency < 1 or args.concurrency > 256:
        raise UserError("--concurrency must be between 1 and 256")
    if args.visibility_timeout < 2:
        raise UserError("--visibility-timeout must be at least 2 seconds")
    from reconciler.run.fleet.worker import WorkerOptions, run_worker

    queues = tuple(q.strip() for q in (args.queues or "").split(",") if q.strip())
    options = WorkerOptions(broker=broker, concurrency=args.concurrency, repo_url=args.repo_url,
                            state_dir=args.state_dir, target_root=args.target_root, queues=queues, name=args.name,
                            visibility_timeout=args.visibility_timeout, heartbeat_ttl=args.heartbeat_ttl,
                            allow_unsafe_broker=args.allow_unsafe_broker, metrics_port=args.metrics_port)
    return run_worker(options, emit)
