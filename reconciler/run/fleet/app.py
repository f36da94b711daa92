"""The Celery application both sides share, its settings, and plain Redis clients for the fences.

Settings that make redelivery safe and honest (celery/celery#5935, kombu#337):
- `task_acks_late` + `task_reject_on_worker_lost`: a task is acknowledged only after it ran, so a worker
  killed mid-call leaves it to be delivered again (the fence decides what that delivery may do);
- `worker_prefetch_multiplier=1`: a worker holds no more messages than it has threads, so a dead worker
  strands as few as possible;
- `visibility_timeout` above the longest expected driver call: a message not acknowledged within it is
  handed out again even while its first delivery still runs (the fence then makes the second one wait);
- no result backend and no chords (celery/celery#2725, #9674): outcomes come back through the fences.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from reconciler.run.executors import ExecutorUnavailable
from reconciler.run.fleet import keys, require

DEFAULT_VISIBILITY_TIMEOUT = 3600


def masked(url: str) -> str:
    """The broker URL without its password, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def check_url(url: str) -> None:
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise ExecutorUnavailable(f"broker URL {masked(url)!r} is not a Redis URL (redis://HOST:PORT/DB)")


def redis_client(url: str, *, timeout: float = 5.0) -> Any:
    """A thread-safe client for fences and counters (not the Celery connection)."""
    require()
    import redis

    check_url(url)
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                health_check_interval=30)


def connection_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            ConnectionError, OSError)


def unreachable(url: str, exc: BaseException) -> ExecutorUnavailable:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ExecutorUnavailable(f"the fleet broker {masked(url)} cannot be reached ({detail[:200]}); dispatch "
                               "stopped, the build stays WORKING and the next pass resumes it once the broker "
                               "is back")


def make_app(broker_url: str, *, visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
             publisher: bool = False) -> Any:
    """The Celery app. `publisher`: the reconciler's side, which must fail fast when the broker is gone."""
    require()
    from celery import Celery

    check_url(broker_url)
    app = Celery("reconciler", broker=broker_url, set_as_current=False)
    transport: dict[str, Any] = {
        "visibility_timeout": visibility_timeout,
        # sweep for messages of dead workers often enough for the visibility timeout in use
        "unacked_restore_interval": max(1, min(10, visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 3,
    }
    if publisher:
        transport["socket_timeout"] = 10
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a broker restart
        task_create_missing_queues=True,
        task_default_queue=keys.queue("default"),
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 1},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_channel_error_retry=True,
    )
    return app


def broker_safety(client: Any) -> str | None:
    """Why this Redis is not safe for fences (None when it is, or when CONFIG cannot be read)."""
    try:
        config = client.config_get("append*")
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "noeviction")
    except Exception:  # managed Redis often disables CONFIG: the operator's word stands (docs/fleet.md)
        return None
    problems = []
    if config.get("appendonly") != "yes":
        problems.append("appendonly is not yes")
    if config.get("appendfsync") != "always":
        problems.append(f"appendfsync is {config.get('appendfsync')!r}, not 'always'")
    if policy != "noeviction":  # fences carry a TTL, so volatile-* policies evict them too
        problems.append(f"maxmemory-policy is {policy!r}, which may evict fences")
    if not problems:
        return None
    return ("; ".join(problems) + ": a fence lost in a crash or evicted would let a redelivered task run twice; "
            "run redis-server with --appendonly yes --appendfsync always --maxmemory-policy noeviction")
