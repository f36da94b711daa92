"""`max_parallel` per server (SPEC 9.2, 9.4): users deployed at once on one server, across all jobs of a pass.

One `ServerLimits` per pass, built from the desired state; the engine holds a server's slot around each
user's driver call, whatever job or block the user belongs to:

    limits = ServerLimits.of(desired.servers.values())
    with limits.slot(server.name):
        outcome = driver.run(request)

or, without blocking a dispatching thread, `try_acquire(server)` / `release(server)`, or wrap the
executor: `LimitedExecutor(executor, limits)` queues a user whose server is full and hands it to the
executor when a slot frees up (acquire a slot *before* committing a non-idempotent user's `started`
marker, so a crash never finds a marker for a call that was only queued: `LimitedExecutor.pending`
says which users are queued, `cancel_waiting()` takes them back on stop or halt).

A server without `max_parallel` is bounded only by the pass's own `concurrency` and `job_concurrency`.
The limit holds within one reconciler process; it is not shared between reconcilers on several hosts.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from reconciler.core.model import Server
from reconciler.drivers.base import Outcome
from reconciler.run.executors import Executor, Known, OnDone, UserTask


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

    def try_acquire(self, server: str) -> bool:
        """Take a slot if one is free now (always True for a server without a limit)."""
        semaphore = self._slots.get(server)
        return semaphore is None or semaphore.acquire(blocking=False)

    def release(self, server: str) -> None:
        semaphore = self._slots.get(server)
        if semaphore is not None:
            semaphore.release()

    def take(self, server: str, wanted: int, wait: float = 0.0) -> int:
        """Take up to `wanted` slots without waiting, or up to `wait` seconds for the first; how many were
        taken (`wanted` for a server without a limit). The engine's dispatcher calls this, never blocking long."""
        semaphore = self._slots.get(server)
        if semaphore is None or wanted <= 0:
            return max(0, wanted)
        if not semaphore.acquire(timeout=wait) if wait > 0 else not semaphore.acquire(blocking=False):
            return 0
        taken = 1
        while taken < wanted and semaphore.acquire(blocking=False):
            taken += 1
        return taken

    def give_back(self, server: str, count: int) -> None:
        for _ in range(count):
            self.release(server)


class LimitedExecutor:
    """An Executor that never has more than `max_parallel` users of one server in the executor it wraps.

    `submit` never blocks: a user whose server is full waits in a queue (in submission order) and is
    handed on when a user of that server finishes. Users of other servers are not held up."""

    def __init__(self, inner: Executor, limits: ServerLimits) -> None:
        self.inner = inner
        self.limits = limits
        self._lock = threading.Condition()
        self._waiting: dict[str, deque[tuple[UserTask, OnDone]]] = {}

    @property
    def pending(self) -> list[UserTask]:
        with self._lock:
            return [task for queue in self._waiting.values() for task, _ in queue]

    def submit(self, task: UserTask, on_done: OnDone) -> None:
        with self._lock:
            if self._waiting.get(task.server) or not self.limits.try_acquire(task.server):
                self._waiting.setdefault(task.server, deque()).append((task, on_done))
                return
        self._start(task, on_done)

    def _start(self, task: UserTask, on_done: OnDone) -> None:
        def done(finished: UserTask, outcome: Outcome) -> None:
            try:
                on_done(finished, outcome)
            finally:
                self._release(finished.server)

        try:
            self.inner.submit(task, done)
        except BaseException:
            self._release(task.server)
            raise

    def _release(self, server: str) -> None:
        with self._lock:
            queue = self._waiting.get(server)
            following = queue.popleft() if queue else None
            if following is None:  # nobody waits: the slot is free again
                self.limits.release(server)
            self._lock.notify_all()
        if following is not None:  # the slot passes straight to the next user of this server
            self._start(*following)

    def cancel_waiting(self) -> list[UserTask]:
        """Take back every user still queued (never handed to the executor, never started)."""
        with self._lock:
            taken = [task for queue in self._waiting.values() for task, _ in queue]
            self._waiting.clear()
            self._lock.notify_all()
        return taken

    def resume(self, tasks: list[UserTask], on_done: OnDone) -> dict[str, Known]:
        return self.inner.resume(tasks, on_done)

    def close(self) -> None:
        """Wait until every queued user was handed on, then close the wrapped executor."""
        with self._lock:
            while any(self._waiting.values()):
                self._lock.wait(0.2)
        self.inner.close()
