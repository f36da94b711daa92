"""Every Redis key and queue name fleet mode uses, in one place (no Redis import: pure names)."""

from __future__ import annotations

PREFIX = "reconciler:fleet:"
QUEUE_PREFIX = "reconciler."
TASK_NAME = "reconciler.deploy_user"

#: how long a build's marker lives after the reconciler last dispatched or watched its users
BUILD_TTL = 30 * 86400
#: how long a fence outlives its last change: twice a marker's life, so while a build's marker exists every
#: fence taken for it still does (a missing marker means "nothing here can be trusted": see the executor)
FENCE_TTL = 2 * BUILD_TTL
METRICS = PREFIX + "metrics"  # hash: dispatched, completed, completed:<STATUS>, redelivered, fenced, ...
WORKER_COMPLETED = PREFIX + "worker-completed"  # hash: worker id -> users completed
WORKERS = PREFIX + "workers"  # hash: worker id -> JSON description (host, pid, queues, started)


def fence(task_key: str) -> str:
    """Per (build id, block, user): epoch-independent, so a takeover of the build finds the same fence."""
    return PREFIX + "fence:" + task_key


def build_marker(build_id: str) -> str:
    """Set by the reconciler before it dispatches a build's first user; refreshed while it watches them."""
    return PREFIX + "build:" + build_id


def done_list(build_id: str) -> str:
    """Task keys whose fence turned DONE, pushed by the same script: the collector's wake-up call."""
    return PREFIX + "done:" + build_id


def heartbeat(worker: str) -> str:
    return PREFIX + "alive:" + worker


HEARTBEAT_PREFIX = PREFIX + "alive:"


def queue(driver_type: str) -> str:
    """One queue per driver type: workers choose which drivers they run (and have installed)."""
    return QUEUE_PREFIX + driver_type
