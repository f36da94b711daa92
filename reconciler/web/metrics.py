"""Prometheus metrics for `serve`, in their own registry (never the process-global one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from reconciler.core.records import USER_STATUSES
from reconciler.core.settings import NOTIFY_EVENTS, NOTIFY_FORMATS
from reconciler.run.notify import COUNTS, OUTCOMES, DeliveryCounts

LISTING_STATES = ("IN-PROGRESS", "WORKING", "SUCCESS", "FAILURE", "MODIFIED", "DELETED", "INVALID",
                  "SUSPENDED", "SCHEDULED", "PENDING", "WAITING", "BLOCKED", "FROZEN")
PASS_OUTCOMES = ("ok", "failure", "interrupted", "error")
WEBHOOK_OUTCOMES = ("triggered", "ignored", "duplicate", "unauthorized", "too_large", "bad_request")


class NotificationCollector(Collector):
    """reconciler_notifications_total{format, event, outcome}, read from the notifiers' counters at scrape time
    (every series present from the start, at 0)."""

    def __init__(self, counts: DeliveryCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("reconciler_notifications", "Notification deliveries by format, event and "
                                     "outcome (delivered, failed, retried, dropped, skipped)",
                                     labels=["format", "event", "outcome"])
        seen = self.counts.snapshot()
        keys = {(f, e, o) for f in NOTIFY_FORMATS for e in NOTIFY_EVENTS for o in OUTCOMES} | set(seen)
        for key in sorted(keys):
            family.add_metric(list(key), seen.get(key, 0))
        yield family


class Metrics:
    def __init__(self, notifications: DeliveryCounts = COUNTS) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the `_created` series only add noise for counters that start at 0
        self.registry = CollectorRegistry()
        self.jobs = Gauge("reconciler_jobs", "Jobs on the deployment branch by listing status",
                          ["status"], registry=self.registry)
        self.passes = Counter("reconciler_passes", "Reconcile passes run by serve, by outcome",
                              ["outcome"], registry=self.registry)
        self.pass_seconds = Histogram("reconciler_pass_duration_seconds", "Duration of reconcile passes",
                                      buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
                                      registry=self.registry)
        self.user_deployments = Counter("reconciler_user_deployments", "Per-user deployment results",
                                        ["result"], registry=self.registry)
        self.webhooks = Counter("reconciler_webhook_deliveries", "Webhook deliveries by source and outcome",
                                ["source", "outcome"], registry=self.registry)
        self.last_success = Gauge("reconciler_last_successful_pass_timestamp_seconds",
                                  "Unix time a pass last completed (jobs in it may have failed)",
                                  registry=self.registry)
        self.registry.register(NotificationCollector(notifications))
        for status in LISTING_STATES:
            self.jobs.labels(status).set(0)
        for outcome in PASS_OUTCOMES:
            self.passes.labels(outcome)
        for result in USER_STATUSES:
            self.user_deployments.labels(result)
        for source in ("github", "gitlab"):
            for outcome in WEBHOOK_OUTCOMES:
                self.webhooks.labels(source, outcome)

    def render(self, states: dict[str, str] | list[dict[str, Any]]) -> bytes:
        """`states`: job -> listing state (or the job list's rows, each with its `status`)."""
        counts = dict.fromkeys(LISTING_STATES, 0)
        values = states.values() if isinstance(states, dict) else (row["status"] for row in states)
        for status in values:
            counts[status] = counts.get(status, 0) + 1
        for status, count in counts.items():
            self.jobs.labels(status).set(count)
        return generate_latest(self.registry)
