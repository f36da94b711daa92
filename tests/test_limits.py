"""`max_parallel` per server (reconciler.run.limits): proven with real threads that record overlapping calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from reconciler.core.model import Server
from reconciler.run.limits import ServerLimits


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
