"""`max_parallel` per server (SPEC 9.2, 9.4): users deployed at once on one server, across all jobs of a pass.

One `ServerLimits` per pass, built from the desired state; the engine holds a server's slot around each
user's driver call, whatever job or block the user belongs to:

    limits = ServerLimits.of(desired.servers.values())
    with limits.slot(server.name):
        outcome = driver.run(request)

A server without `max_parallel` is bounded only by the pass's own `concurrency` and `job_concurrency`.
The limit holds within one reconciler process (the in-process executor); it is not shared between
reconcilers on several hosts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from reconciler.core.model import Server


class ServerLimits:
    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = dict(limits)
        self._slots = {name: threading.BoundedSemaphore(n) for name, n in limits.items()}

    @classmethod
    def of(cls, servers: Iterable[Server]) -> ServerLimits:
        return cls({s.name: s.max_parallel for s in servers if s.max_parallel is not None})

    @contextmanager
    def slot(self, server: str, stop: threading.Event | None = None) -> Iterator[bool]:
        """Hold one of `server`'s slots for the duration of the block; yields True once held.

        With `stop`, waiting for a slot gives up when the event is set (yields False: start nothing)."""
        semaphore = self._slots.get(server)
        if semaphore is None:
            yield True
            return
        while not semaphore.acquire(timeout=0.2):
            if stop is not None and stop.is_set():
                yield False
                return
        try:
            yield True
        finally:
            semaphore.release()

    def limit(self, server: str) -> int | None:
        return self.limits.get(server)
