"""The per-user fence (SPEC 9.3) against a real redis-server: its Lua scripts decide who may run a user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="fleet mode needs the extra `fleet`")

from reconciler.drivers.base import Outcome
from reconciler.run.fleet import keys
from reconciler.run.fleet.app import broker_safety
from reconciler.run.fleet.fence import LOST_REASON, Fences
from tests.support.fleet import RedisServer

KEY = "20260101T000000Z-job-abcdef/0/u1"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def client(redis_server: RedisServer) -> Any:
    return redis_server.client()


def alive(client: Any, worker: str) -> None:
    client.set(keys.heartbeat(worker), "1", ex=60)


def test_first_delivery_runs_and_a_later_one_gets_the_stored_outcome(client: Any) -> None:
    fences = Fences(client)
    alive(client, "A")
    assert fences.take(KEY, "A", 1, idempotent=False).verdict == "run"
    assert fences.finish(KEY, "A", 1, Outcome("DEPLOYED", "ok"), ["A: line"])
    again = fences.take(KEY, "B", 2, idempotent=False)  # a redelivery, even of a later epoch
    assert again.verdict == "done"
    assert again.fence is not None and again.fence.outcome() == Outcome("DEPLOYED", "ok")
    assert again.fence.log == ("A: line",)
    assert client.lrange(keys.done_list(KEY.split("/")[0]), 0, -1) == [KEY.encode()]  # the collector's wake-up
    assert not fences.finish(KEY, "B", 2, Outcome("FAILED", "late")), "a DONE fence is never replaced"
    assert fences.peek(KEY).outcome() == Outcome("DEPLOYED", "ok")  # type: ignore[union-attr]
    assert int(client.hget(keys.METRICS, "completed")) == 1
    assert int(client.hget(keys.WORKER_COMPLETED, "A")) == 1


def test_started_by_a_live_worker_makes_others_wait(client: Any) -> None:
    fences = Fences(client)
    alive(client, "A")
    assert fences.take(KEY, "A", 1, idempotent=True).verdict == "run"
    for idempotent in (True, False):
        assert fences.take(KEY, "B", 1, idempotent=idempotent).verdict == "running"
        assert fences.observe(KEY, idempotent).verdict == "running"
    assert fences.take(KEY, "A", 1, idempotent=False).verdict == "running"  # its own redelivery, too
    assert fences.peek(KEY).worker == "A"  # type: ignore[union-attr]


def test_dead_worker_idempotent_driver_takes_over(client: Any) -> None:
    fences = Fences(client)
    alive(client, "A")
    assert fences.take(KEY, "A", 1, idempotent=True).verdict == "run"
    client.delete(keys.heartbeat("A"))  # A died: its heartbeat expired
    assert fences.observe(KEY, True).verdict == "dead"  # the reconciler re-dispatches it
    alive(client, "B")
    assert fences.take(KEY, "B", 2, idempotent=True).verdict == "run"
    assert fences.peek(KEY).worker == "B"  # type: ignore[union-attr]
    assert not fences.finish(KEY, "A", 1, Outcome("DEPLOYED")), "the dead worker's late word no longer counts"
    assert fences.finish(KEY, "B", 2, Outcome("UNCHANGED"))
    assert fences.peek(KEY).outcome().status == "UNCHANGED"  # type: ignore[union-attr]
    assert int(client.hget(keys.METRICS, "takeovers")) == 1


@pytest.mark.parametrize("who", ["worker", "observer"])
def test_dead_worker_non_idempotent_driver_is_failed_never_run_again(client: Any, who: str) -> None:
    fences = Fences(client)
    alive(client, "A")
    assert fences.take(KEY, "A", 1, idempotent=False).verdict == "run"
    client.delete(keys.heartbeat("A"))
    alive(client, "B")
    decision = fences.take(KEY, "B", 1, idempotent=False) if who == "worker" else fences.observe(KEY, False)
    assert decision.verdict == "done"
    assert decision.fence is not None
    outcome = decision.fence.outcome()
    assert outcome.status == "FAILED" and LOST_REASON in outcome.reason and "worker A" in outcome.reason
    for _ in range(3):  # every later delivery, of any worker, gets the same answer
        assert fences.take(KEY, "C", 2, idempotent=False).fence.outcome() == outcome  # type: ignore[union-attr]
    assert not fences.finish(KEY, "A", 1, Outcome("DEPLOYED"))
    assert client.lrange(keys.done_list(KEY.split("/")[0]), 0, -1) == [KEY.encode()]
    assert int(client.hget(keys.METRICS, "lost")) == 1


def test_absent_fence_is_taken_once_however_many_race(client: Any) -> None:
    import threading

    fences = Fences(client)
    for worker in "ABCDEFGH":
        alive(client, worker)
    verdicts: list[str] = []
    barrier = threading.Barrier(8)

    def race(worker: str) -> None:
        barrier.wait()
        verdicts.append(fences.take(KEY, worker, 1, idempotent=False).verdict)

    threads = [threading.Thread(target=race, args=(w,)) for w in "ABCDEFGH"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(verdicts) == ["run"] + ["running"] * 7
    assert fences.observe("other/0/u9", False).verdict == "absent"


def test_observe_many_answers_each_in_one_round_trip(client: Any) -> None:
    fences = Fences(client)
    alive(client, "A")
    fences.take("b/0/done", "A", 1, False)
    fences.finish("b/0/done", "A", 1, Outcome("DEPLOYED"))
    fences.take("b/0/live", "A", 1, False)
    verdicts = [d.verdict for d in fences.observe_many([("b/0/done", False), ("b/0/live", False),
                                                          ("b/0/none", False)])]
    assert verdicts == ["done", "running", "absent"]


def test_the_test_broker_is_safe_and_an_unsafe_one_is_named(client: Any, tmp_path: Path) -> None:
    assert broker_safety(client) is None
    unsafe = RedisServer(tmp_path / "unsafe", fsync="everysec").start()
    try:
        reason = broker_safety(unsafe.client())
        assert reason is not None and "appendfsync" in reason and "always" in reason
    finally:
        unsafe.stop()


def test_a_retried_take_after_a_lost_reply_still_runs_once(client: Any) -> None:
    fences = Fences(client)
    alive(client, "A")
    assert fences.take(KEY, "A", 1, idempotent=False, token="t1").verdict == "run"
    # the reply was lost: the same delivery asks again and finds the fence its own
    assert fences.take(KEY, "A", 1, idempotent=False, token="t1").verdict == "run"
    # another delivery of the same message to the same worker waits for the first
    assert fences.take(KEY, "A", 1, idempotent=False, token="t2").verdict == "running"
    assert not fences.finish(KEY, "A", 1, Outcome("DEPLOYED"), token="t2"), "only the holding delivery finishes"
    assert fences.finish(KEY, "A", 1, Outcome("DEPLOYED"), token="t1")
    assert fences.take(KEY, "A", 1, idempotent=False, token="t1").verdict == "done"
