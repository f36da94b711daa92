"""Helpers of tests/test_two_hosts.py and tests/test_two_recoverers.py: one remote, clones on different host
names, passes you can stop, cut off and kill, and the effect log of a `command` driver to count what really ran."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.chaos_checks import judge_history, read_history
from tests.support.chaos_world import (
    HUMAN_ENV,
    World,
    add_clone,
    can_fake_host,
    effect_commands_running,
    git,
    is_git,
    job_name,
    job_yaml,
    kill_group,
    make_world,
    process_tree,
    read_jsonl,
    remote_record,
    start_pass,
    write,
)


@dataclass
class Pass:
    """One running `reconcile --remote origin`, leader of its own process group."""

    clone: Path
    host: str | None
    log: Path
    proc: subprocess.Popen[bytes]
    started: float  # wall clock

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid)
            self.proc.wait(10)
            message = f"pass in {self.clone.name} still running after {timeout} s:\n{self.output()}"
            raise AssertionError(message) from None

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")[-6000:] if self.log.exists() else ""

    def git_children(self) -> list[str]:
        return [" ".join(p.argv[:3]) for p in process_tree([self.proc.pid]) if is_git(p)]


class Site:
    """A world plus a human clone to push jobs, and a numbered log per pass."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.human = add_clone(world, "human", human=True)
        self.passes = 0
        self.started: list[Pass] = []

    def close(self) -> None:
        """No pass, stopped process or held command outlives the test."""
        for gate in self.world.gates.glob("hold-*"):
            gate.unlink()
        for running in self.started:
            if running.proc.poll() is None:
                kill_group(running.proc.pid, signal.SIGCONT)
                kill_group(running.proc.pid)
                running.proc.wait(30)
        for proc in effect_commands_running(self.world):
            kill_group(proc.pgid, signal.SIGCONT)
            kill_group(proc.pgid)

    def push_job(self, n: int, kind: str = "cmd") -> str:
        self.push({f"jobs/{job_name(n)}.yaml": job_yaml(n, kind)}, f"human: add {job_name(n)}")
        return job_name(n)

    def push(self, files: dict[str, str], message: str) -> None:
        """Commit `files` in the human clone and `git pull --rebase && git push` until it lands."""
        for rel, text in files.items():
            write(self.human, rel, text)
        git(self.human, "add", "-A", env=HUMAN_ENV)
        git(self.human, "commit", "-q", "-m", message, env=HUMAN_ENV)
        for _ in range(20):
            pulled = subprocess.run(["git", "pull", "-q", "--rebase", "origin", "main"], cwd=self.human,
                                    capture_output=True, check=False, env={**os.environ, **HUMAN_ENV})
            if pulled.returncode == 0 and subprocess.run(["git", "push", "-q", "origin", "HEAD:main"],
                                                         cwd=self.human, capture_output=True, check=False,
                                                         env={**os.environ, **HUMAN_ENV}).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"the human could not push {message!r} in 20 attempts")

    def start(self, clone: Path, host: str | None = None) -> Pass:
        self.passes += 1
        log = self.world.work / f"pass-{self.passes:03d}-{clone.name}.log"
        running = Pass(clone, host, log, start_pass(self.world, clone, host, log=log), time.time())
        self.started.append(running)
        return running

    def run(self, clone: Path, host: str | None = None, timeout: float = 120) -> Pass:
        done = self.start(clone, host)
        done.wait(timeout)
        return done

    def record(self, job: str) -> dict[str, Any]:
        return remote_record(self.world, job) or {}

    def begins(self, job: str, user: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        return [b for b in read_jsonl(self.world.begins) if b.get("job") == job
                and user in (None, b.get("user")) and host in (None, b.get("host"))]

    def effects(self, job: str) -> Counter[str]:
        return Counter(e["user"] for e in read_jsonl(self.world.effects) if e.get("job") == job)

    def hold(self, job: str, user: str) -> Path:
        gate = self.world.gates / f"hold-{job}--{user}"
        gate.write_text("held\n")
        return gate


def lease_end(record: dict[str, Any]) -> float:
    value = record.get("lease_expires_at")
    assert value, f"record has no lease: {record.get('status')}"
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def owner_host(record: dict[str, Any]) -> str | None:
    owner = record.get("owner") or {}
    return owner.get("host")


def freeze(running: Pass, also: tuple[int, ...] = (), tries: int = 400) -> None:
    """SIGSTOP the pass's process group (and `also`), at an instant when it runs no git: a frozen host is
    not the remote, and must not hold the remote's ref locks."""
    for _ in range(tries):
        kill_group(running.proc.pid, signal.SIGSTOP)
        if not running.git_children():
            for pgid in also:
                kill_group(pgid, signal.SIGSTOP)
            return
        kill_group(running.proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("the pass never stopped running git for 2 s")


def thaw(running: Pass, also: tuple[int, ...] = ()) -> None:
    for pgid in also:
        kill_group(pgid, signal.SIGCONT)
    kill_group(running.proc.pid, signal.SIGCONT)


# -- shared by tests/test_two_hosts.py and tests/test_two_recoverers.py -----------------------------------
LEASE = 10
HOST_A, HOST_B = "chaos-host-a", "chaos-host-b"
MakeSite = Callable[..., Site]
needs_hosts = pytest.mark.skipif(not can_fake_host(), reason="a second host name needs root and unshare -u")


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[MakeSite]:
    """make_site(users, user_seconds) -> Site: one remote, 1-at-a-time users, a 10 s lease."""
    made: list[Site] = []

    def make(users: int, user_seconds: tuple[float, float]) -> Site:
        world = make_world(tmp_path / "w", users=users, http_url="http://127.0.0.1:9", lease_seconds=LEASE,
                           concurrency=1, user_seconds=user_seconds)
        made.append(Site(world))
        return made[-1]

    yield make
    for s in made:
        s.close()


def history_problems(s: Site) -> dict[str, object]:
    judged = judge_history(read_history(s.world))
    keys = ("unreadable_record_versions", "final_records_changed", "final_records_reset", "records_deleted",
            "epoch_decreased", "owner_changed_without_epoch_increase", "user_results_changed",
            "jobs_with_several_builds")
    return {k: judged[k] for k in keys if judged[k]}


def converged(s: Site, clone: Path) -> list[str]:
    problems = []
    if git(clone, "status", "--porcelain").strip():
        problems.append(f"{clone.name}: git status not clean: {git(clone, 'status', '--porcelain')[:300]}")
    if git(clone, "rev-parse", "main").strip() != git(s.world.remote, "rev-parse", "main").strip():
        problems.append(f"{clone.name}: main differs from the remote's")
    return problems


def settle(s: Site, clones: list[tuple[Path, str | None]], rounds: int = 6) -> None:
    """Passes in every clone, round after round, until a whole round leaves the remote's tip unchanged."""
    for _ in range(rounds):
        tip = git(s.world.remote, "rev-parse", "main")
        for clone, host in clones:
            s.run(clone, host)
        if git(s.world.remote, "rev-parse", "main") == tip:
            return


def passes_until(s: Site, clone: Path, host: str, job: str, done: object, deadline: float,
                 lease_until: float) -> list[str]:
    """Passes in `clone` until `done(record)`; a pass that ended before `lease_until` must not have taken
    the build over. Returns the violations."""
    early = []
    while time.time() < deadline:
        ran = s.run(clone, host)
        record = s.record(job)
        ended = time.time()
        if owner_host(record) == host and ended < lease_until:
            early.append(f"taken over {lease_until - ended:.1f} s before the lease expired:\n{ran.output()[-1500:]}")
        if done(record):  # type: ignore[operator]
            return early
        time.sleep(0.2)
    raise AssertionError(f"{job} not done by host {host} in time: {json.dumps(s.record(job))[:800]}")


def keep_pushing(s: Site, racers: list[Pass], round_: int) -> None:
    """The human commits and pushes notes while any racer runs, a push every second or so (back to back, with
    the suite's four workers on 2 cores, a pass could lose every compare-and-swap for minutes: a machine
    pushing without pause, not a human)."""
    i = 0
    while any(r.proc.poll() is None for r in racers):
        i += 1
        s.push({f"notes/round-{round_}-{i}.txt": f"{time.time()}\n"}, f"human: note {round_}.{i}")
        time.sleep(random.uniform(0.3, 1.0))
