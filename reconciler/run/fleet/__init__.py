"""Fleet mode (SPEC 9.3): users of a block run as Celery tasks on `reconciler worker` processes over a Redis
broker, each guarded by a per-user fence in Redis; git stays the ledger and the reconciler its only writer.

Celery and the Redis client come with the extra `fleet`. Nothing here imports them at module level:
`require()` says how to install them, and the modules that need them import them when fleet mode is used.

- `keys`: the Redis key names (fences, heartbeats, outcome lists, counters, queues);
- `fence`: the per-user fence and its Lua scripts;
- `app`: the Celery application and its settings, shared by the reconciler and the workers;
- `mirror`: a worker's cached bare mirror of the deployment repo's remote;
- `runtime`: what a worker does with one task;
- `executor`: `CeleryExecutor`, the reconciler's side;
- `metrics`: counters in Redis and a Prometheus collector that reads them.
"""

from __future__ import annotations

import importlib.util

from reconciler.errors import EXIT_USAGE, UserError

INSTALL_HINT = "pip install 'gitops-reconciler[fleet]'"


def require(what: str = "fleet mode") -> None:
    """Exit 2 with the install command when Celery or the Redis client is missing."""
    missing = []
    # kombu.transport.redis: the broker transport itself, whose own imports (e.g. `packaging`) can be missing
    for module in ("celery", "redis", "kombu.transport.redis"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            try:
                __import__(module)
            except ImportError:
                found = False
        if not found:
            missing.append(module)
    if missing:
        raise UserError(f"{what} needs Celery and the Redis client ({', '.join(missing)} not installed): "
                        f"{INSTALL_HINT}", EXIT_USAGE)
