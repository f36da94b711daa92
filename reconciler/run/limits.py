"""`max_parallel` per server (SPEC 9.2, 9.4): users deployed at once on one server, across all jobs of a pass.

One `ServerLimits` per pass, built from the desired state (`ServerLimits.of(servers)`), shared by the
pass's builds through `RunContext.limits`. The engine's dispatcher takes a server's slots before it
starts users (before their `started` markers, so a crash never finds a marker for a call that only
waited) and gives each back when that user's outcome is in:

    taken = limits.take(server.name, wanted, wait=0.5)   # 0..wanted slots; waits only for the first
    ... start `taken` users ...
    limits.give_back(server.name, 1)                     # per user, when its outcome arrives

A server without `max_parallel` is bounded only by the pass's own `concurrency` and `job_concurrency`.
Because the dispatcher holds the slots, the limit also holds with fleet workers; it is per reconciler,
not shared between reconcilers on several hosts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from reconciler.core.model import Server


class ServerLimits:
    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = dict(limits)
        self._slots = {name: threading.BoundedSemaphore(n) for name, n in limits.items()}

    @classmethod
    def of(cls, servers: Iterable[Server]) -> ServerLimits:
        return cls({s.name: s.max_parallel for s in servers if s.max_parallel is not None})

    def limit(self, server: str) -> int | None:
        return self.limits.get(server)

    def take(self, server: str, wanted: int, wait: float = 0.0) -> int:
        """Take up to `wanted` slots: the first waiting up to `wait` seconds, the rest only if free now.
        Returns how many were taken (`wanted` for a server without a limit)."""
        semaphore = self._slots.get(server)
        if semaphore is None or wanted <= 0:
            return max(0, wanted)
        first = semaphore.acquire(timeout=wait) if wait > 0 else semaphore.acquire(blocking=False)
        if not first:
            return 0
        taken = 1
        while taken < wanted and semaphore.acquire(blocking=False):
            taken += 1
        return taken

    def give_back(self, server: str, count: int = 1) -> None:
        semaphore = self._slots.get(server)
        if semaphore is not None:
            for _ in range(count):
                semaphore.release()
