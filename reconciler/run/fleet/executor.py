"""`CeleryExecutor`: the reconciler's side of fleet mode (SPEC 9.3).

`submit` publishes one Celery task per user (never a chord) on the queue of the user's driver type. Outcomes
do not come back through Celery's result backend but through the fences: the script that turns a fence DONE
also pushes the user onto its build's outcome list, which a collector thread blocks on; a sweep every few
seconds reads the fences of every user still pending, so nothing depends on a wake-up arriving:
- DONE: delivered to `on_done` (from a delivery thread of its own, never the engine's thread);
- STARTED by a dead worker: non-idempotent users become FAILED "worker lost while running" (the observer
  script decides, once); idempotent ones are dispatched again and the next delivery takes the fence over;
- no fence long after dispatch while the queue is empty (a message lost with a worker between Redis' BRPOP
  and its unacked bookkeeping): dispatched again; a duplicate finds the fence and runs nothing.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from reconciler.drivers.base import Outcome
from reconciler.run.executors import ExecutorUnavailable, Known, OnDone, UserTask
from reconciler.run.fleet import keys
from reconciler.run.fleet.app import broker_safety, connection_errors, make_app, masked, redis_client, unreachable
from reconciler.run.fleet.fence import Decision, Fences, FenceState, parse
from reconciler.run.fleet.runtime import task_message

SWEEP_CHUNK = 500
ALLOW_UNSAFE_ENV = "RECONCILER_ALLOW_UNSAFE_BROKER"
UNKNOWN_FENCE = ("interrupted while its deployment may have been running, and the fleet broker has no record "
                 "of it (no fence for this build: dispatched by another executor, or expired); not run again "
                 "(see `reconciler retry`)")


@dataclass
class _Pending:
    task: UserTask
    on_done: OnDone
    sent_at: float


class CeleryExecutor:
    """User deployments as Celery tasks on `reconciler worker` processes, fenced per user in Redis."""

    fenced = True

    def __init__(self, broker_url: str, repo_url: str, *, poll_seconds: float = 1.0, sweep_seconds: float = 5.0,
                 redispatch_after: float = 30.0, unavailable_after: float = 30.0, publishers: int = 8,
                 on_log: Callable[[UserTask, str], None] | None = None, allow_unsafe_broker: bool = False) -> None:
        self.broker_url = broker_url
        self.repo_url = repo_url
        self.poll_seconds = poll_seconds
        self.sweep_seconds = sweep_seconds
        self.redispatch_after = redispatch_after
        self.unavailable_after = unavailable_after
        self.on_log = on_log
        self.client = redis_client(broker_url)
        self._errors = connection_errors()
        import redis

        # also refused before any claim: a wrong DB index or password
        refused: tuple[type[BaseException], ...] = (*self._errors, redis.exceptions.RedisError)
        try:  # before anything is claimed: a pass whose broker is gone stops here (exit 2, one line)
            self.client.ping()
        except refused as exc:
            self.client.close()
            raise unreachable(broker_url, exc) from None
        unsafe = None if allow_unsafe_broker else broker_safety(self.client)
        if unsafe:  # workers refuse it too: without this the pass would claim, dispatch and wait for nobody
            self.client.close()
            raise ExecutorUnavailable(f"the fleet broker {masked(broker_url)} is not safe for fences: {unsafe}; "
                                      f"nothing was claimed (workers refuse it too; {ALLOW_UNSAFE_ENV}=1 uses it "
                                      "anyway, like `reconciler worker --allow-unsafe-broker`)")
        self.fences = Fences(self.client)
        self.app = make_app(broker_url, publisher=True)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._failure: ExecutorUnavailable | None = None
        self._outbox: queue.Queue[tuple[_Pending, Outcome, tuple[str, ...]] | None] = queue.Queue()
        # with appendfsync always every publish waits for a disk flush; several publishers share each flush
        self._to_publish: queue.Queue[UserTask | None] = queue.Queue()
        self._publish_error: ExecutorUnavailable | None = None
        self._dispatched = 0  # counted in memory, added to the Redis counter by the collector
        self._marked: set[str] = set()  # builds whose marker this executor has set
        self._collector = threading.Thread(target=self._collect, name="fleet-collector", daemon=True)
        self._delivery = threading.Thread(target=self._deliver_loop, name="fleet-delivery", daemon=True)
        self._publishers = [threading.Thread(target=self._publish_loop, name=f"fleet-publish-{i}", daemon=True)
                            for i in range(max(1, publishers))]
        for thread in (self._collector, self._delivery, *self._publishers):
            thread.start()

    # -- the Executor protocol --------------------------------------------------------------------
    def submit(self, task: UserTask, on_done: OnDone) -> None:
        """Registers the user, reads its fence (an unreachable broker raises ExecutorUnavailable here) and
        queues the publish; a publish that then fails is raised by the next submit and by `failure()`, and the
        user, still pending, is dispatched again by the sweep once the broker is back."""
        if self._closed:
            raise RuntimeError("the executor is closed")
        if self._publish_error is not None:
            raise self._publish_error
        entry = _Pending(task, on_done, time.monotonic())
        with self._lock:
            self._pending[task.key] = entry
        self._wake.set()
        try:
            if task.build_id not in self._marked:
                self.client.set(keys.build_marker(task.build_id), "1", ex=keys.BUILD_TTL)
                self._marked.add(task.build_id)
            decision = self.fences.observe(task.key, task.idempotent)
            if decision.verdict == "done":
                self._finished(task.key, decision.fence)
            elif decision.verdict != "running":  # absent, or an idempotent user whose worker died
                self._to_publish.put(task)
        except self._errors as exc:
            with self._lock:
                self._pending.pop(task.key, None)
            raise unreachable(self.broker_url, exc) from None

    def resume(self, tasks: list[UserTask], on_done: OnDone) -> dict[str, Known]:
        try:
            decisions: list[Decision] = []
            for start in range(0, len(tasks), SWEEP_CHUNK):
                chunk = tasks[start:start + SWEEP_CHUNK]
                decisions += self.fences.observe_many([(t.key, t.idempotent) for t in chunk])
            builds = sorted({t.build_id for t in tasks})
            marked = dict(zip(builds, self._exists([keys.build_marker(b) for b in builds]), strict=True))
        except self._errors as exc:
            raise unreachable(self.broker_url, exc) from None
        known: dict[str, Known] = {}
        for task, decision in zip(tasks, decisions, strict=True):
            if decision.verdict == "done" and decision.fence is not None:
                known[task.key] = decision.fence.outcome()
            elif decision.verdict == "running":
                with self._lock:
                    self._pending[task.key] = _Pending(task, on_done, time.monotonic())
                known[task.key] = "running"
            elif decision.verdict == "absent" and not marked[task.build_id] and not task.idempotent:
                # no marker: this Redis never saw the build dispatched (another executor ran it) or forgot
                # it (expired, flushed); a missing fence proves nothing then, so it is not run again
                known[task.key] = Outcome("FAILED", UNKNOWN_FENCE)
            else:  # never handed out, still queued, or idempotent and abandoned: the engine submits it
                known[task.key] = None
        self._wake.set()
        return known

    def close(self, wait: bool = True) -> None:
        """Stop accepting work; with `wait`, until every pending user was delivered (or the broker is gone).
        Users left pending stay recoverable: their fences and queued tasks outlive this process."""
        self._closed = True
        while wait and self.in_flight() and self.failure() is None:
            time.sleep(0.05)
        for _ in self._publishers:
            self._to_publish.put(None)
        for thread in self._publishers:
            thread.join(timeout=30)
        self._stopping.set()
        self._wake.set()
        self._collector.join(timeout=self.poll_seconds + 10)
        self._count_dispatched()
        self._outbox.put(None)
        self._delivery.join(timeout=60)
        self.app.close()
        self.client.close()

    def failure(self) -> ExecutorUnavailable | None:
        return self._failure or self._publish_error

    def abandon_unstarted(self, build_id: str, block: int, users: list[str]) -> set[str]:
        """Users whose fence no worker has taken: the pass stops waiting for them (SIGTERM with no worker
        running must not hang). A worker may still run such a task later, once (the fence); the next pass
        finds its outcome in the fence (`resume`), or submits it again if it never ran."""
        keys_ = [f"{build_id}/{block}/{u}" for u in users]  # UserTask.key
        with self._lock:
            pending = {k: self._pending[k] for k in keys_ if k in self._pending}
        if not pending:
            return set()
        try:
            decisions = self.fences.observe_many([(k, p.task.idempotent) for k, p in pending.items()])
        except self._errors:
            return set()  # the broker is gone: failure() ends the wait anyway
        left: set[str] = set()
        with self._lock:
            for (key, entry), decision in zip(pending.items(), decisions, strict=True):
                if decision.verdict == "absent" and self._pending.get(key) is entry:
                    del self._pending[key]
                    left.add(entry.task.user)
        return left

    def inline(self, driver_type: str) -> bool:
        return False  # every user is a task on a worker

    def turn(self, driver_type: str) -> AbstractContextManager[object]:
        return contextlib.nullcontext()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- dispatch ---------------------------------------------------------------------------------
    def _publish(self, task: UserTask) -> None:
        self.app.send_task(keys.TASK_NAME, kwargs=task_message(task, self.repo_url),
                           queue=keys.queue(task.driver_type))
        with self._lock:
            self._dispatched += 1

    def _publish_loop(self) -> None:
        while (task := self._to_publish.get()) is not None:
            try:
                self._publish(task)
                self._publish_error = None
            except Exception as exc:  # the user stays pending: the sweep dispatches it once the broker is back
                self._publish_error = unreachable(self.broker_url, exc)

    def _count_dispatched(self) -> None:
        with self._lock:
            count, self._dispatched = self._dispatched, 0
        if count:
            try:
                self.client.hincrby(keys.METRICS, "dispatched", count)
            except self._errors:
                with self._lock:
                    self._dispatched += count

    def _finished(self, key: str, fence: FenceState | None) -> None:
        if fence is None or not fence.done:
            return
        with self._lock:
            entry = self._pending.pop(key, None)
        if entry is not None:
            self._outbox.put((entry, fence.outcome(), fence.log))

    def _deliver_loop(self) -> None:
        while (item := self._outbox.get()) is not None:
            entry, outcome, log = item
            try:
                if self.on_log is not None:
                    for line in log:
                        self.on_log(entry.task, line)
                entry.on_done(entry.task, outcome)
            except Exception as exc:  # the engine's callback failed: say so, keep delivering the others
                print(f"reconciler: fleet: on_done for {entry.task.key} failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr)

    # -- collection -------------------------------------------------------------------------------
    def _collect(self) -> None:
        last_sweep = time.monotonic()
        failing_since: float | None = None
        while not self._stopping.is_set():
            with self._lock:
                builds = sorted({entry.task.build_id for entry in self._pending.values()})
            if not builds:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            try:
                self._count_dispatched()
                self._drain(builds)
                if time.monotonic() - last_sweep >= self.sweep_seconds:
                    self._sweep()
                    last_sweep = time.monotonic()
                failing_since = None
                self._failure = None
            except Exception as exc:  # the collector never dies: an unreachable broker is reported, not fatal
                if not isinstance(exc, self._errors):
                    print(f"reconciler: fleet: collecting outcomes failed: {type(exc).__name__}: {exc}",
                          file=sys.stderr)
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self.unavailable_after:
                    self._failure = unreachable(self.broker_url, exc)
                self._stopping.wait(min(1.0, self.poll_seconds))

    def _drain(self, builds: list[str]) -> None:
        """Block on the builds' outcome lists, then read the fences of what turned DONE."""
        reply = self.client.blpop([keys.done_list(b) for b in builds], timeout=self.poll_seconds)
        if reply is None:
            return
        source, first = reply
        found = [first]
        while batch := self.client.lpop(source, SWEEP_CHUNK):
            found += batch
        names = list(dict.fromkeys(k.decode() if isinstance(k, bytes) else str(k) for k in found))
        with self._lock:
            names = [k for k in names if k in self._pending]
        for start in range(0, len(names), SWEEP_CHUNK):
            chunk = names[start:start + SWEEP_CHUNK]
            for key, raw in zip(chunk, self.client.mget([keys.fence(k) for k in chunk]), strict=True):
                self._finished(key, parse(raw))

    def _exists(self, names: list[str]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(name)
        return [bool(r) for r in pipe.execute()]

    def _sweep(self) -> None:
        """Read every pending user's fence: deliver what is DONE, re-dispatch what was abandoned or lost."""
        with self._lock:
            entries = list(self._pending.values())
        pipe = self.client.pipeline(transaction=False)
        for build in sorted({e.task.build_id for e in entries}):  # watched builds keep their marker
            pipe.expire(keys.build_marker(build), keys.BUILD_TTL)
        pipe.execute()
        depth: dict[str, int] = {}
        now = time.monotonic()
        for start in range(0, len(entries), SWEEP_CHUNK):
            chunk = entries[start:start + SWEEP_CHUNK]
            decisions = self.fences.observe_many([(e.task.key, e.task.idempotent) for e in chunk])
            for entry, decision in zip(chunk, decisions, strict=True):
                stale = now - entry.sent_at >= self.redispatch_after
                if decision.verdict == "done":
                    self._finished(entry.task.key, decision.fence)
                elif (decision.verdict == "dead" and (stale or self._queue_empty(entry.task.driver_type, depth))) or (
                        decision.verdict == "absent" and stale and self._queue_empty(entry.task.driver_type, depth)):
                    self._publish(entry.task)
                    entry.sent_at = now
                    self.client.hincrby(keys.METRICS, "redispatched", 1)

    def _queue_empty(self, driver_type: str, depth: dict[str, int]) -> bool:
        if driver_type not in depth:
            depth[driver_type] = int(self.client.llen(keys.queue(driver_type)))
        return depth[driver_type] == 0

    def __enter__(self) -> CeleryExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(wait=exc[0] is None)
