"""`max_parallel` per server (reconciler.run.limits): proven with real threads that record overlapping calls.
(End to end, through a pass with two jobs on one server: tests/test_rollout_run.py.)"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.core.model import Server
from reconciler.run.limits import ServerLimits


def server(name: str, max_parallel: int | None) -> Server:
    return Server(name=name, path=f"servers/{name}.yaml", environment="e", organization="o",
                  driver={"type": "local", "path": "x"}, users=(), max_parallel=max_parallel)


class Overlap:
    """How many calls run at once per server (the most seen); calls that must overlap meet at a barrier."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def call(self, limits: ServerLimits, name: str, gate: threading.Barrier) -> None:
        while not limits.take(name, 1, wait=0.5):  # what the dispatcher does while nothing of its own runs
            pass
        try:
            with self.lock:
                self.now[name] = self.now.get(name, 0) + 1
                self.most[name] = max(self.most.get(name, 0), self.now[name])
            gate.wait(timeout=30)  # a broken barrier (a call that could not overlap) fails the test
            with self.lock:
                self.now[name] -= 1
        finally:
            limits.give_back(name)


def test_a_server_never_has_more_than_max_parallel_users_at_once() -> None:
    limits = ServerLimits.of([server("two", 2), server("free", None)])
    assert limits.limits == {"two": 2} and limits.limit("free") is None
    seen = Overlap()
    pairs, free_gate = threading.Barrier(2), threading.Barrier(8)
    with ThreadPoolExecutor(max_workers=24) as pool:  # the users of several jobs of one pass
        futures = [pool.submit(seen.call, limits, "two", pairs) for _ in range(12)]
        futures += [pool.submit(seen.call, limits, "free", free_gate) for _ in range(8)]
        for future in futures:
            future.result()
    assert seen.most == {"two": 2, "free": 8}  # two at once on the limited server, never three


def test_take_gives_what_is_free_and_give_back_returns_it() -> None:
    limits = ServerLimits.of([server("three", 3)])
    assert limits.take("three", 5) == 3
    assert limits.take("three", 1) == 0 and limits.take("three", 1, wait=0.05) == 0
    limits.give_back("three", 2)
    assert limits.take("three", 5) == 2
    assert limits.take("unlimited", 7) == 7 and limits.take("three", 0) == 0
    limits.give_back("unlimited", 7)  # a server without a limit: nothing to give back, no error
    limits.give_back("three", 3)
    with pytest.raises(ValueError):  # more back than taken is a bug in the caller, never silently more slots
        limits.give_back("three")


def test_a_waiting_take_gets_the_slot_as_soon_as_it_is_given_back() -> None:
    limits = ServerLimits.of([server("one", 1)])
    assert limits.take("one", 1) == 1
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(limits.take("one", 1, wait=30)))
    waiter.start()
    limits.give_back("one")
    waiter.join(timeout=30)
    assert got == [1]
