"""`max_parallel` per server (reconciler.run.limits): proven with real threads that record overlapping calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from reconciler.core.model import Server
from reconciler.drivers.base import Outcome
from reconciler.run.executors import ThreadExecutor, UserTask
from reconciler.run.limits import LimitedExecutor, ServerLimits


class Overlap:
    """Records how many calls run at once, per server (the most seen)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def call(self, limits: ServerLimits, server: str, gate: threading.Barrier | None = None) -> None:
        with limits.slot(server) as held:
            assert held
            with self.lock:
                self.now[server] = self.now.get(server, 0) + 1
                self.most[server] = max(self.most.get(server, 0), self.now[server])
            if gate is not None:
                gate.wait(timeout=30)  # the calls that must overlap meet here (a timeout fails the test)
            with self.lock:
                self.now[server] -= 1


def server(name: str, max_parallel: int | None) -> Server:
    return Server(name=name, path=f"servers/{name}.yaml", environment="e", organization="o",
                  driver={"type": "local", "path": "x"}, users=(), max_parallel=max_parallel)


def test_a_server_never_has_more_than_max_parallel_users_at_once() -> None:
    limits = ServerLimits.of([server("two", 2), server("free", None)])
    assert limits.limits == {"two": 2} and limits.limit("free") is None
    seen = Overlap()
    free_gate = threading.Barrier(8)  # the unlimited server really runs 8 at once
    with ThreadPoolExecutor(max_workers=24) as pool:  # "jobs" of one pass sharing both servers
        pairs = threading.Barrier(2)  # the limited server does run 2 at once (they meet here)
        futures = [pool.submit(seen.call, limits, "two", pairs) for _ in range(12)]
        futures += [pool.submit(seen.call, limits, "free", free_gate) for _ in range(8)]
        for future in futures:
            future.result()
    assert seen.most["two"] == 2
    assert seen.most["free"] == 8


def test_waiting_for_a_slot_gives_up_when_the_pass_is_stopped() -> None:
    limits = ServerLimits.of([server("one", 1)])
    stop = threading.Event()
    results: list[bool] = []
    with limits.slot("one"):
        waiter = threading.Thread(target=lambda: results.append(_try(limits, stop)))
        waiter.start()
        stop.set()
        waiter.join(timeout=5)
    assert results == [False]
    with limits.slot("one") as held:  # the slot was released and can be taken again
        assert held


def _try(limits: ServerLimits, stop: threading.Event) -> bool:
    with limits.slot("one", stop) as held:
        return held


def task(server_name: str, user: str) -> UserTask:
    return UserTask(job="j", build_id="20261121T120000Z-j-abcdef", epoch=1, block=0, user=user, desired_commit="0" * 40,
                    server=server_name, driver_type="local", action="APPLY-AUTO", idempotent=True)


def test_the_limited_executor_queues_users_of_a_full_server_without_blocking() -> None:
    seen = Overlap()
    pairs = threading.Barrier(2)
    free_gate = threading.Barrier(4)
    limits = ServerLimits.of([server("two", 2)])

    def run(t: UserTask) -> Outcome:
        seen.call(limits_for_recording, t.server, pairs if t.server == "two" else free_gate)
        return Outcome("DEPLOYED", "")

    limits_for_recording = ServerLimits({})  # recording only: the executor under test does the limiting
    executor = LimitedExecutor(ThreadExecutor(run, workers=16), limits)
    done: list[str] = []
    lock = threading.Lock()

    def on_done(t: UserTask, outcome: Outcome) -> None:
        with lock:
            done.append(t.user)

    for i in range(10):  # submit returns at once even though "two" is full after 2
        executor.submit(task("two", f"t{i}"), on_done)
    for i in range(4):
        executor.submit(task("free", f"f{i}"), on_done)
    executor.close()
    assert sorted(done) == sorted([f"t{i}" for i in range(10)] + [f"f{i}" for i in range(4)])
    assert seen.most == {"two": 2, "free": 4}
    assert limits.try_acquire("two") and limits.try_acquire("two") and not limits.try_acquire("two")


def test_users_still_queued_can_be_taken_back() -> None:
    release = threading.Event()
    limits = ServerLimits.of([server("one", 1)])

    def run(t: UserTask) -> Outcome:
        release.wait(30)
        return Outcome("DEPLOYED", "")

    executor = LimitedExecutor(ThreadExecutor(run, workers=4), limits)
    finished: list[str] = []
    for user in ("a", "b", "c"):
        executor.submit(task("one", user), lambda t, o: finished.append(t.user))
    assert [t.user for t in executor.pending] == ["b", "c"]
    assert [t.user for t in executor.cancel_waiting()] == ["b", "c"]  # never handed on: never started
    release.set()
    executor.close()
    assert finished == ["a"]
