"""CeleryExecutor with real redis-server, real `reconciler worker` processes and a real git remote: tasks
for a committed repo go out, outcomes come back through the fences to on_done, every effect counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("celery", reason="fleet mode needs the extra `fleet`")

from reconciler.core.records import new_build_id
from reconciler.core.timeutil import utcnow
from reconciler.drivers.base import Outcome
from reconciler.run.executors import ExecutorUnavailable, UserTask
from reconciler.run.fleet import keys
from reconciler.run.fleet.executor import CeleryExecutor
from reconciler.run.fleet.metrics import read as read_metrics
from tests.support.fleet import (
    Fleet,
    RedisServer,
    block,
    effect_counts,
    effect_driver,
    effects,
    fleet_repo,
    free_port,
    job_yaml,
    wait_for,
)
from tests.support.repos import git

SECRET = "s3cret-value-for-fleet"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:
    running = Fleet(tmp_path / "fleet", redis_server.url)
    (tmp_path / "fleet").mkdir()
    yield running
    running.stop_all()


class Collected:
    """on_done, thread-safe: each user's outcome, and whether any arrived twice."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}
        self.twice: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, task: UserTask, outcome: Outcome) -> None:
        with self.lock:
            if task.key in self.outcomes:
                self.twice.append(task.key)
            self.outcomes[task.key] = outcome

    def wait(self, count: int, timeout: float = 120) -> dict[str, Outcome]:
        wait_for(lambda: len(self.outcomes) >= count, timeout, f"{count} outcomes (have {len(self.outcomes)})")
        return dict(self.outcomes)


def tasks_for(repo: Path, job: str, server: str, users: list[str], *, driver: str = "command",
              idempotent: bool = False, block_index: int = 0, build_id: str | None = None) -> list[UserTask]:
    commit = git(repo, "rev-parse", "HEAD").strip()
    build = build_id or new_build_id(job, utcnow())
    return [UserTask(job=job, build_id=build, epoch=1, block=block_index, user=u, desired_commit=commit,
                     server=server, driver_type=driver, action="APPLY-AUTO", idempotent=idempotent) for u in users]


def test_users_spread_over_three_workers_each_effect_once(tmp_path: Path, fleet: Fleet,
                                                          redis_server: RedisServer) -> None:
    users = [f"u{i:02d}" for i in range(24)]
    log = tmp_path / "effects.jsonl"
    repo, remote = fleet_repo(tmp_path, {"srv": (effect_driver(log, 0.3), users)},
                              {"rollout": job_yaml([block("srv")])})
    port = free_port()
    workers = [fleet.start("--metrics-port", str(port), concurrency=2)] + [fleet.start(concurrency=2)
                                                                            for _ in range(2)]
    collected = Collected()
    executor = CeleryExecutor(redis_server.url, str(remote))
    try:
        for task in tasks_for(repo, "rollout", "srv", users):
            executor.submit(task, collected)
        outcomes = collected.wait(len(users))
    finally:
        executor.close(wait=False)
    assert {o.status for o in outcomes.values()} == {"DEPLOYED"}, outcomes
    assert not collected.twice
    counts = effect_counts(log)
    assert len(counts) == len(users) and set(counts.values()) == {1}, counts
    pids = {e["worker_pid"] for e in effects(log) if e["kind"] == "effect"}
    assert pids == {w.proc.pid for w in workers}, "every worker deployed some users"
    figures = read_metrics(redis_server.client())
    assert figures["counters"]["dispatched"] == len(users)
    assert figures["completed_by_status"] == {"DEPLOYED": len(users)}
    assert sum(figures["per_worker"].values()) == len(users) and len(figures["per_worker"]) == 3
    assert figures["queue_depth"][keys.queue("command")] == 0
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text  # any one worker shows the fleet
    assert f"reconciler_fleet_tasks_dispatched_total {float(len(users))}" in scraped
    assert f'reconciler_fleet_tasks_completed_total{{status="DEPLOYED"}} {float(len(users))}' in scraped
    assert "reconciler_fleet_workers_alive 3.0" in scraped and 'queue="reconciler.command"' in scraped
    assert scraped.count("reconciler_fleet_worker_completed_total{") == 3


def test_a_redelivered_or_resubmitted_user_is_never_run_twice(tmp_path: Path, fleet: Fleet,
                                                              redis_server: RedisServer) -> None:
    users = ["a", "b", "c"]
    log = tmp_path / "effects.jsonl"
    repo, remote = fleet_repo(tmp_path, {"srv": (effect_driver(log, 0.1), users)},
                              {"job1": job_yaml([block("srv")])})
    fleet.start()
    tasks = tasks_for(repo, "job1", "srv", users)
    first = Collected()
    with CeleryExecutor(redis_server.url, str(remote)) as executor:
        for task in tasks:
            executor.submit(task, first)
        first.wait(3)
    # a recovering reconciler re-submits everything (its git markers may lag behind the fences)
    second = Collected()
    with CeleryExecutor(redis_server.url, str(remote)) as executor:
        assert executor.resume(tasks, second) == {t.key: first.outcomes[t.key] for t in tasks}
        for task in tasks:
            executor.submit(task, second)
        assert second.wait(3) == first.outcomes
    assert set(effect_counts(log).values()) == {1} and len(effect_counts(log)) == 3


def test_worker_killed_mid_call_and_restarted_runs_no_effect_twice(tmp_path: Path, fleet: Fleet,
                                                                   redis_server: RedisServer) -> None:
    users = ["slow1", "slow2"]
    log = tmp_path / "effects.jsonl"
    repo, remote = fleet_repo(tmp_path, {"srv": (effect_driver(log, 4.0), users)},
                              {"job1": job_yaml([block("srv")])})
    victim = fleet.start(concurrency=2)
    collected = Collected()
    executor = CeleryExecutor(redis_server.url, str(remote), sweep_seconds=1, redispatch_after=5)
    try:
        for task in tasks_for(repo, "job1", "srv", users):
            executor.submit(task, collected)
        wait_for(lambda: len([e for e in effects(log) if e["kind"] == "started"]) == 2, 60, "both calls to start")
        victim.kill()
        fleet.start(concurrency=2)  # the restarted worker gets the redelivered messages
        outcomes = collected.wait(2, timeout=90)
    finally:
        executor.close(wait=False)
    for outcome in outcomes.values():
        assert outcome.status == "FAILED" and "worker lost while running" in outcome.reason, outcome
    wait_for(lambda: len(effect_counts(log)) == 2, 30, "the orphaned commands to finish")
    assert len([e for e in effects(log) if e["kind"] == "started"]) == 2, "nothing was started a second time"
    assert set(effect_counts(log).values()) == {1}
    assert not collected.twice


def test_idempotent_driver_is_taken_over_after_its_worker_died(tmp_path: Path, fleet: Fleet,
                                                               redis_server: RedisServer) -> None:
    users = ["a", "b", "c", "d"]
    target = tmp_path / "targets"
    repo, remote = fleet_repo(tmp_path, {"web": ({"type": "local", "path": str(target)}, users)},
                              {"job1": job_yaml([block("web")])})
    tasks = tasks_for(repo, "job1", "web", users, driver="local", idempotent=True)
    client = redis_server.client()
    # a worker that died after taking the fences of two users, before finishing them
    client.set(keys.fence(tasks[0].key), '{"state": "STARTED", "worker": "gone-1", "epoch": 1, "at": 0}')
    client.set(keys.fence(tasks[1].key), '{"state": "STARTED", "worker": "gone-1", "epoch": 1, "at": 0}')
    fleet.start()
    collected = Collected()
    with CeleryExecutor(redis_server.url, str(remote)) as executor:
        known = executor.resume(tasks, collected)
        assert set(known.values()) == {None}, "abandoned idempotent users are re-submitted by the engine"
        for task in tasks:
            executor.submit(task, collected)
        outcomes = collected.wait(4)
    assert {o.status for o in outcomes.values()} == {"DEPLOYED"}, outcomes
    assert sorted(p.name for p in target.iterdir()) == users
    assert read_metrics(client)["counters"]["takeovers"] == 2


def test_worker_without_the_secret_fails_that_user_naming_the_variable(tmp_path: Path, fleet: Fleet,
                                                                       redis_server: RedisServer) -> None:
    log = tmp_path / "effects.jsonl"
    secret_block = block("srv", parameter_tokens={"api_key": {"secret": "DEPLOY_SECRET_API"}})
    repo, remote = fleet_repo(tmp_path, {"srv": (effect_driver(log), ["u1", "u2"])},
                              {"job1": job_yaml([secret_block])})
    tasks = tasks_for(repo, "job1", "srv", ["u1", "u2"])
    bare = fleet.start()
    collected = Collected()
    with CeleryExecutor(redis_server.url, str(remote)) as executor:
        executor.submit(tasks[0], collected)
        outcome = collected.wait(1)[tasks[0].key]
        assert outcome.status == "FAILED" and "DEPLOY_SECRET_API" in outcome.reason
        assert "not set in the environment of worker" in outcome.reason
        assert bare.stop() == 0, "SIGTERM: warm shutdown, exit 0"
        fleet.start(env={"DEPLOY_SECRET_API": SECRET})
        executor.submit(tasks[1], collected)
        assert collected.wait(2)[tasks[1].key].status == "DEPLOYED"
    assert [e["user"] for e in effects(log) if e["kind"] == "effect"] == ["u2"]
    assert [e["api_key_length"] for e in effects(log) if e["kind"] == "effect"] == [len(SECRET)]
    dump = b"".join(v or b"" for v in redis_server.client().mget(redis_server.client().keys("reconciler:*")))
    everything = dump + b"".join(w.log.read_bytes() for w in fleet.workers)
    assert SECRET.encode() not in everything


def test_broker_down_before_dispatch_is_one_clear_error(tmp_path: Path) -> None:
    dead = RedisServer(tmp_path / "never")  # a free port nobody listens on
    with pytest.raises(ExecutorUnavailable) as raised:
        CeleryExecutor(dead.url, str(tmp_path))
    message = str(raised.value)
    assert f"127.0.0.1:{dead.port}" in message and "cannot be reached" in message
    assert "\n" not in message and raised.value.exit_code == 2


def test_broker_gone_after_start_fails_submit_and_resume_cleanly(tmp_path: Path, redis_server: RedisServer) -> None:
    executor = CeleryExecutor(redis_server.url, str(tmp_path), unavailable_after=0.5)
    try:
        redis_server.stop()
        task = UserTask(job="j", build_id="b", epoch=1, block=0, user="u", desired_commit="0" * 40, server="s",
                        driver_type="command", action="APPLY-AUTO", idempotent=False)
        with pytest.raises(ExecutorUnavailable, match="cannot be reached"):
            executor.submit(task, lambda t, o: None)
        with pytest.raises(ExecutorUnavailable):
            executor.resume([task], lambda t, o: None)
        assert executor.in_flight() == 0
    finally:
        executor.close(wait=False)


def test_broker_down_during_dispatch_then_back_from_its_aof(tmp_path: Path, fleet: Fleet,
                                                            redis_server: RedisServer) -> None:
    users = [f"u{i}" for i in range(6)]
    log = tmp_path / "effects.jsonl"
    repo, remote = fleet_repo(tmp_path, {"srv": (effect_driver(log, 1.0), users)},
                              {"job1": job_yaml([block("srv")])})
    fleet.start(concurrency=2)
    tasks = tasks_for(repo, "job1", "srv", users)
    collected = Collected()
    executor = CeleryExecutor(redis_server.url, str(remote), sweep_seconds=1, unavailable_after=1)
    try:
        for task in tasks[:4]:
            executor.submit(task, collected)
        wait_for(lambda: any(e["kind"] == "started" for e in effects(log)), 60, "a call to start")
        redis_server.stop()  # SIGTERM: the AOF (fsync always) holds every fence and message
        with pytest.raises(ExecutorUnavailable, match="cannot be reached"):
            executor.submit(tasks[4], collected)
        wait_for(lambda: executor.failure() is not None, 30, "the collector to report the broker gone")
        redis_server.start()  # same port, same folder: restarted from its AOF
        wait_for(lambda: executor.failure() is None, 60, "the collector to recover")
        for task in tasks[4:]:
            executor.submit(task, collected)
        outcomes = collected.wait(len(users), timeout=120)
    finally:
        executor.close(wait=False)
    assert set(outcomes) == {t.key for t in tasks}
    counts = effect_counts(log)
    assert all(n == 1 for n in counts.values()), counts
    for task in tasks:  # a user either ran once, or was reported lost (its worker's call was cut off)
        status = outcomes[task.key].status
        assert (status == "DEPLOYED") == (counts[(task.build_id, task.user)] == 1) or (
            status == "FAILED" and "worker lost" in outcomes[task.key].reason), (task.user, outcomes[task.key])
    assert not collected.twice


def test_resume_reports_running_users_later(tmp_path: Path, fleet: Fleet, redis_server: RedisServer) -> None:
    users = ["a", "b"]
    log = tmp_path / "effects.jsonl"
    repo, remote = fleet_repo(tmp_path, {"srv": (effect_driver(log, 2.0), users)},
                              {"job1": job_yaml([block("srv")])})
    fleet.start(concurrency=2)
    tasks = tasks_for(repo, "job1", "srv", users)
    dead_reconciler = CeleryExecutor(redis_server.url, str(remote))
    for task in tasks:
        dead_reconciler.submit(task, lambda t, o: None)
    wait_for(lambda: len(effects(log)) >= 2, 60, "both calls to start")
    dead_reconciler.close(wait=False)  # the reconciler is gone; its tasks run on
    collected = Collected()
    with CeleryExecutor(redis_server.url, str(remote)) as executor:
        known: dict[str, Any] = executor.resume(tasks, collected)
        assert set(known.values()) == {"running"}
        assert {o.status for o in collected.wait(2).values()} == {"DEPLOYED"}
    assert set(effect_counts(log).values()) == {1}


def test_resume_never_reruns_a_started_user_this_broker_has_no_record_of(tmp_path: Path,
                                                                         redis_server: RedisServer) -> None:
    """A build dispatched elsewhere (the thread pool, another Redis) or forgotten (expired, flushed): a
    missing fence proves nothing, so a non-idempotent started user is FAILED; an idempotent one re-runs."""
    forgotten = UserTask(job="j", build_id="20260101T000000Z-j-aaaaaa", epoch=1, block=0, user="u",
                         desired_commit="0" * 40, server="s", driver_type="command", action="APPLY-AUTO",
                         idempotent=False)
    absorbs = UserTask(**{**forgotten.__dict__, "user": "v", "idempotent": True})
    with CeleryExecutor(redis_server.url, str(tmp_path)) as executor:
        known = executor.resume([forgotten, absorbs], lambda t, o: None)
        first = known[forgotten.key]
        assert isinstance(first, Outcome) and first.status == "FAILED" and "not run again" in first.reason
        assert known[absorbs.key] is None
        redis_server.client().set(keys.build_marker(forgotten.build_id), "1")  # this broker dispatched it
        assert executor.resume([forgotten], lambda t, o: None) == {forgotten.key: None}


def test_busy_workers_outlive_a_short_broker_restart(tmp_path: Path, fleet: Fleet, redis_server: RedisServer) -> None:
    """Workers holding unacknowledged messages when the broker restarts reconnect and keep working (celery 5.7.0's
    consumer crashed the worker on this path: an AttributeError while restoring the unacknowledged messages)."""
    users = [f"u{i}" for i in range(8)]
    log = tmp_path / "effects.jsonl"
    repo, remote = fleet_repo(tmp_path, {"srv": (effect_driver(log, 2.0), users)},
                              {"job1": job_yaml([block("srv")])})
    workers = [fleet.start(concurrency=2) for _ in range(2)]
    tasks = tasks_for(repo, "job1", "srv", users)
    collected = Collected()
    executor = CeleryExecutor(redis_server.url, str(remote), sweep_seconds=1, redispatch_after=5)
    try:
        for task in tasks:
            executor.submit(task, collected)
        wait_for(lambda: sum(e["kind"] == "started" for e in effects(log)) >= 2, 60, "calls to start")
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
        outcomes = collected.wait(len(users), timeout=120)
    finally:
        executor.close(wait=False)
    dead = [w.log.read_text()[-1500:] for w in workers if w.proc.poll() is not None]
    assert not dead, f"a worker died on the broker restart: {dead[0]}"
    assert set(outcomes) == {t.key for t in tasks}
    assert all(n == 1 for n in effect_counts(log).values())
