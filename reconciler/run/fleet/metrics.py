"""Fleet metrics: counters kept in Redis by the reconciler and the workers (so they are fleet-wide and survive
restarts with the broker's AOF), read at scrape time by a Prometheus collector.

Exposed by `reconciler worker --metrics-port P` (any one worker shows the whole fleet) and by anything that
registers `FleetCollector` (e.g. `reconciler serve` when a broker is configured).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from reconciler import drivers
from reconciler.run.fleet import keys
from reconciler.run.fleet.app import redis_client

COUNTERS = {
    "dispatched": "Tasks published by reconcilers (one per user, plus re-dispatches)",
    "redispatched": "Tasks published again by a reconciler for a user whose message or worker was lost",
    "redelivered": "Deliveries Celery marked as redelivered (visibility timeout passed, or a worker died)",
    "fenced": "Deliveries that found the user's fence taken (DONE or running) and did not call the driver",
    "takeovers": "Fences of dead workers taken over by an idempotent driver's next delivery",
    "lost": "Users of non-idempotent drivers recorded FAILED: worker lost while running",
}


def read(client: Any) -> dict[str, Any]:
    """Every fleet figure as plain data (also what the tests and benchmarks read)."""
    raw = {k.decode(): int(v) for k, v in client.hgetall(keys.METRICS).items()}
    per_worker = {k.decode(): int(v) for k, v in client.hgetall(keys.WORKER_COMPLETED).items()}
    workers = {k.decode(): json.loads(v) for k, v in client.hgetall(keys.WORKERS).items()}
    queues = {keys.queue(t) for t in drivers.known_types()}
    for info in workers.values():
        queues |= {keys.queue(t) for t in info.get("queues", [])}
    names = sorted(queues)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    pipe.hlen("unacked")
    for worker in workers:
        pipe.exists(keys.heartbeat(worker))
    replies = pipe.execute()
    depth = dict(zip(names, (int(r) for r in replies[:len(names)]), strict=True))
    unacked = int(replies[len(names)])
    alive = [w for w, ok in zip(workers, replies[len(names) + 1:], strict=True) if ok]
    completed = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("completed:")}
    return {"counters": {name: raw.get(name, 0) for name in COUNTERS}, "completed": raw.get("completed", 0),
            "completed_by_status": completed, "per_worker": per_worker, "queue_depth": depth, "unacked": unacked,
            "workers_alive": alive}


class FleetCollector:
    """A prometheus_client custom collector; a broker that cannot be read yields no fleet series."""

    def __init__(self, broker_url: str) -> None:
        self.client = redis_client(broker_url, timeout=2.0)

    def describe(self) -> list[Any]:
        return []  # read at scrape time only

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            figures = read(self.client)
        except Exception:
            up = GaugeMetricFamily("reconciler_fleet_broker_up", "Whether the fleet broker could be read")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("reconciler_fleet_broker_up", "Whether the fleet broker could be read")
        up.add_metric([], 1)
        yield up
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(f"reconciler_fleet_tasks_{name}", help_text)
            family.add_metric([], figures["counters"][name])
            yield family
        done = CounterMetricFamily("reconciler_fleet_tasks_completed", "Users completed by workers, by result",
                                   labels=["status"])
        for status, value in sorted(figures["completed_by_status"].items()):
            done.add_metric([status], value)
        yield done
        per = CounterMetricFamily("reconciler_fleet_worker_completed",
                                  "Users completed per worker (rate() of it is the worker's throughput)",
                                  labels=["worker"])
        for worker, value in sorted(figures["per_worker"].items()):
            per.add_metric([worker], value)
        yield per
        depth = GaugeMetricFamily("reconciler_fleet_queue_depth", "Tasks waiting in each driver type's queue",
                                  labels=["queue"])
        for name, value in figures["queue_depth"].items():
            depth.add_metric([name], value)
        yield depth
        unacked = GaugeMetricFamily("reconciler_fleet_tasks_unacked", "Tasks delivered and not yet acknowledged")
        unacked.add_metric([], figures["unacked"])
        yield unacked
        alive = GaugeMetricFamily("reconciler_fleet_workers_alive", "Workers whose heartbeat is present")
        alive.add_metric([], len(figures["workers_alive"]))
        yield alive


def registry_for(broker_url: str) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(FleetCollector(broker_url))
    return registry


def serve_metrics(broker_url: str, port: int, host: str = "127.0.0.1") -> None:
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=registry_for(broker_url))
