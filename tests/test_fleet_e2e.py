"""Fleet mode end to end: `reconciler reconcile --executor celery` with real `reconciler worker` processes,
a real redis-server and a real bare remote; every effect of the command driver counted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("celery", reason="fleet mode needs the extra `fleet`")

from tests.support.cli import run_cli
from tests.support.fleet import (
    Fleet,
    RedisServer,
    Worker,
    block,
    effect_counts,
    effect_driver,
    effects,
    fleet_repo,
    job_yaml,
    wait_for,
)
from tests.support.repos import GIT_ENV, git


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:
    (tmp_path / "fleet").mkdir()
    running = Fleet(tmp_path / "fleet", redis_server.url)
    yield running
    running.stop_all()


def status(repo: Path, job: str) -> dict[str, object]:
    result = run_cli("status", job, "--repo", str(repo), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return data[0] if isinstance(data, list) else data  # type: ignore[no-any-return]


def test_two_block_job_over_three_workers(tmp_path: Path, fleet: Fleet, redis_server: RedisServer) -> None:
    log = tmp_path / "effects.jsonl"
    users_a = [f"a{i}" for i in range(9)]
    users_b = [f"b{i}" for i in range(6)]
    repo, _ = fleet_repo(tmp_path, {"east": (effect_driver(log, 0.3), users_a),
                                         "west": (effect_driver(log, 0.3), users_b)},
                              {"rollout": job_yaml([block("east"), block("west")])})
    workers = [fleet.start(concurrency=2) for _ in range(3)]
    result = run_cli("reconcile", "--repo", str(repo), "--executor", "celery", "--broker", redis_server.url,
                     "--concurrency", "6", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    record = status(repo, "rollout")
    assert record["status"] == "SUCCESS", record
    blocks = record["blocks"]
    assert isinstance(blocks, list)
    assert [set(b["users"].values()) for b in blocks] == [{"DEPLOYED"}, {"DEPLOYED"}]
    counts = effect_counts(log)
    assert len(counts) == len(users_a) + len(users_b) and set(counts.values()) == {1}, counts
    by_user = {e["user"]: e for e in effects(log) if e["kind"] == "effect"}
    assert max(by_user[u]["time"] for u in users_a) <= min(by_user[u]["time"] for u in users_b) + 0.5, \
        "block 1 starts after block 0"
    assert {e["worker_pid"] for e in by_user.values()} == {w.proc.pid for w in workers}
    git(repo, "fetch", "-q", "origin")
    assert git(repo, "rev-parse", "HEAD") == git(repo, "rev-parse", "origin/main"), "status commits pushed"


def reconcile_proc(repo: Path, broker: str, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "reconciler", "reconcile", "--repo", str(repo),
                                 "--executor", "celery", "--broker", broker, *flags],
                                stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, env={**os.environ, **GIT_ENV})


def test_reconciler_killed_while_tasks_are_out_is_recovered_and_completes(tmp_path: Path, fleet: Fleet,
                                                                         redis_server: RedisServer) -> None:
    log = tmp_path / "effects.jsonl"
    users = [f"u{i:02d}" for i in range(12)]
    repo, _ = fleet_repo(tmp_path, {"srv": (effect_driver(log, 1.5), users)}, {"big": job_yaml([block("srv")])})
    for _ in range(2):
        fleet.start(concurrency=3)
    first = reconcile_proc(repo, redis_server.url, tmp_path / "reconcile-1.log", "--concurrency", "6")
    wait_for(lambda: len([e for e in effects(log) if e["kind"] == "started"]) >= 4, 120, "calls to start")
    first.kill()  # SIGKILL: no checkpoint, no goodbye; its tasks run on in the workers
    first.wait(30)
    again = run_cli("reconcile", "--repo", str(repo), "--executor", "celery", "--broker", redis_server.url,
                    "--concurrency", "6", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    record = status(repo, "big")
    assert record["status"] == "SUCCESS", record
    counts = effect_counts(log)
    assert len(counts) == len(users) and set(counts.values()) == {1}, counts
    started = Counter(e["user"] for e in effects(log) if e["kind"] == "started")
    assert set(started.values()) == {1}, "no user was started twice"
    assert "recovering" in again.stderr or "job.recovering" in again.stderr


def test_chaos_four_workers_random_kills_and_a_broker_restart(tmp_path: Path, fleet: Fleet,
                                                             redis_server: RedisServer) -> None:
    """Every effect counted: none twice, every user with a final result, DEPLOYED exactly when it ran."""
    rng = random.Random(int(os.environ.get("FLEET_CHAOS_SEED", "14")))
    log = tmp_path / "effects.jsonl"
    east = [f"e{i:02d}" for i in range(20)]
    west = [f"w{i:02d}" for i in range(20)]
    repo, _ = fleet_repo(tmp_path, {"east": (effect_driver(log, 0.4), east), "west": (effect_driver(log, 0.4), west)},
                         {"chaos1": job_yaml([block("east"), block("west")]),
                          "chaos2": job_yaml([block("west", greeting="again")])})
    for _ in range(4):
        fleet.start(concurrency=2)
    passes = kills = 0
    killed: list[Worker] = []
    restarted_broker = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        passes += 1
        proc = reconcile_proc(repo, redis_server.url, tmp_path / f"reconcile-{passes}.log", "--concurrency", "8")
        while proc.poll() is None:
            time.sleep(rng.uniform(0.3, 1.5))
            live = [w for w in fleet.workers if w.proc.poll() is None]
            # a worker that was ready never exits by itself (one started while the broker is down exits 2 at
            # once, by design, and is replaced)
            died = [w for w in fleet.workers if w not in live and w not in killed
                    and any(e.get("event") == "worker.ready" for e in w.events())]
            if died:
                proc.kill()
                proc.wait(30)
                raise AssertionError(f"a worker exited by itself: {died[0].log.read_text()[-2000:]}")
            action = rng.random()
            if not live:
                fleet.start(concurrency=2, wait=False)
            elif action < 0.35:
                victim = rng.choice(live)
                killed.append(victim)
                victim.kill()
                kills += 1
                fleet.start(concurrency=2, wait=False)
            elif not restarted_broker and len(effects(log)) > 40:  # mid-run, while tasks are out
                redis_server.stop()  # from its AOF, on the same port
                time.sleep(rng.uniform(0.5, 2))
                redis_server.start()
                restarted_broker = True
        states = {job: status(repo, job)["status"] for job in ("chaos1", "chaos2")}
        if all(s in ("SUCCESS", "FAILURE") for s in states.values()):
            break
    else:
        raise AssertionError(f"the jobs did not finish in {passes} passes: {states}")
    if not restarted_broker:  # the passes were quicker than the dice: restart once at the end anyway
        redis_server.stop()
        redis_server.start()
    counts = effect_counts(log)
    assert all(n == 1 for n in counts.values()), f"an effect happened twice: {counts.most_common(3)}"
    started = Counter((e["build"], e["user"]) for e in effects(log) if e["kind"] == "started")
    assert all(n == 1 for n in started.values()), f"a user was started twice: {started.most_common(3)}"
    results: Counter[str] = Counter()
    for job, expected in (("chaos1", [east, west]), ("chaos2", [west])):
        record = status(repo, job)
        blocks = record["blocks"]
        assert isinstance(blocks, list)
        build = record["build_id"]
        for block_record, users in zip(blocks, expected, strict=True):
            assert sorted(block_record["users"]) == sorted(users), "no user lost"
            for user, result in block_record["users"].items():
                results[result] += 1
                ran = counts[(build, user)] + started[(build, user)] > 0
                if result == "DEPLOYED":
                    assert counts[(build, user)] == 1, (job, user)
                else:
                    assert result in ("FAILED", "NOT_RUN"), (job, user, result)
                    if result == "NOT_RUN":
                        assert not ran, (job, user)
    print(f"chaos: {passes} passes, {kills} worker kills, broker restarted once, {sum(counts.values())} effects, "
          f"0 duplicates, 0 lost; results {dict(results)}")


def test_broker_down_before_the_pass_claims_nothing(tmp_path: Path) -> None:
    from tests.support.fleet import free_port

    log = tmp_path / "effects.jsonl"
    repo, _ = fleet_repo(tmp_path, {"srv": (effect_driver(log), ["u1"])}, {"job1": job_yaml([block("srv")])})
    head = git(repo, "rev-parse", "HEAD")
    result = run_cli("reconcile", "--repo", str(repo), "--broker", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot be reached" in errors[0] and "Traceback" not in result.stderr
    assert git(repo, "rev-parse", "HEAD") == head, "nothing claimed"
    assert status(repo, "job1")["status"] == "PENDING"


def test_broker_down_during_the_pass_keeps_the_build_working_then_completes(
        tmp_path: Path, fleet: Fleet, redis_server: RedisServer) -> None:
    log = tmp_path / "effects.jsonl"
    users = [f"u{i}" for i in range(8)]
    repo, _ = fleet_repo(tmp_path, {"srv": (effect_driver(log, 1.0), users)}, {"job1": job_yaml([block("srv")])})
    fleet.start(concurrency=2)
    proc = reconcile_proc(repo, redis_server.url, tmp_path / "reconcile-1.log", "--concurrency", "2")
    wait_for(lambda: any(e["kind"] == "started" for e in effects(log)), 120, "a call to start")
    redis_server.stop()
    code = proc.wait(180)
    output = (tmp_path / "reconcile-1.log").read_text()
    assert code != 0, output
    assert "Traceback" not in output and "cannot be reached" in output, output
    assert status(repo, "job1")["status"] == "WORKING"
    redis_server.start()  # from its AOF
    again = run_cli("reconcile", "--repo", str(repo), "--broker", redis_server.url, "--concurrency", "4",
                    timeout=300)
    assert again.returncode in (0, 1), again.stdout + again.stderr
    record = status(repo, "job1")
    assert record["status"] in ("SUCCESS", "FAILURE")
    counts = effect_counts(log)
    assert all(n == 1 for n in counts.values()), counts
    blocks = record["blocks"]
    assert isinstance(blocks, list) and sorted(blocks[0]["users"]) == users, "no user lost"


def test_sigterm_with_no_worker_running_ends_the_pass_and_the_next_pass_completes(
        tmp_path: Path, fleet: Fleet, redis_server: RedisServer) -> None:
    """No worker is running: the pass claims and dispatches, then waits. SIGTERM must end it (exit 130,
    checkpointed, build WORKING), not wait for users nobody started; once a worker is up, the queued tasks
    and the next pass together deploy every user exactly once (the fences)."""
    import signal

    log = tmp_path / "effects.jsonl"
    users = [f"u{i}" for i in range(4)]
    repo, _ = fleet_repo(tmp_path, {"srv": (effect_driver(log, 0.2), users)}, {"job1": job_yaml([block("srv")])})
    proc = reconcile_proc(repo, redis_server.url, tmp_path / "reconcile-1.log", "--concurrency", "4")
    wait_for(lambda: status(repo, "job1")["status"] == "WORKING", 60, "the build to be claimed")
    time.sleep(2)  # dispatched, nobody to take the tasks
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    output = (tmp_path / "reconcile-1.log").read_text()
    assert code == 130, output
    assert "Traceback" not in output, output
    assert status(repo, "job1")["status"] == "WORKING"
    assert effects(log) == [], "nothing ran without a worker"
    fleet.start(concurrency=2)
    again = run_cli("reconcile", "--repo", str(repo), "--executor", "celery", "--broker", redis_server.url,
                    "--concurrency", "4", timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    record = status(repo, "job1")
    assert record["status"] == "SUCCESS", record
    counts = effect_counts(log)
    assert sorted(user for _, user in counts) == users and set(counts.values()) == {1}, counts
    build_log = run_cli("logs", "job1", "--repo", str(repo))
    assert "u0" in build_log.stdout and "Traceback" not in build_log.stdout
