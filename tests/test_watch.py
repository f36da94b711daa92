"""`reconciler watch`: the daemon as a real subprocess, a bare repository as its remote, real pushes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.repos import GIT_ENV, GREETING_JOB, commit_all, committed_record, git, wait_for, write


class Daemon:
    def __init__(self, clone: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = clone.parent / f"watch-{clone.name}.log"
        self.handle = self.log.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", "--repo", str(clone), "--debounce", "200", *args],
            stdout=subprocess.DEVNULL, stderr=self.handle, env={**os.environ, **GIT_ENV, **(env or {})})

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text("utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                raise AssertionError(f"not a structured line: {line!r}") from None
            if name is None or event["event"] == name:
                found.append(event)
        return found

    def wait_for(self, condition: Callable[[], object], timeout: float = 60) -> None:
        def alive() -> None:
            assert self.proc.poll() is None, f"the daemon died: {self.log.read_text('utf-8')}"

        wait_for(condition, timeout, what=lambda: f"it; events: {self.log.read_text('utf-8')}", alive=alive)

    def idle(self) -> bool:
        return len(self.events("pass.started")) == len(self.events("pass.finished")) + len(self.events("pass.failed"))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.handle.close()
        return code


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:  # never leave a daemon behind, whatever the test did
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        daemon.handle.close()


def remote_setup(make_repo: Callable[..., Path], settings: str = "") -> tuple[Path, Path, Path]:
    source = make_repo("source")
    if settings:
        write(source, "reconciler.yaml", settings)
        commit_all(source, "settings")
    bare = source.parent / "deploy.git"
    git(source.parent, "clone", "-q", "--bare", str(source), str(bare))
    watched, laptop = source.parent / "watched", source.parent / "laptop"
    git(source.parent, "clone", "-q", str(bare), str(watched))
    git(source.parent, "clone", "-q", str(bare), str(laptop))
    return bare, watched, laptop


def push_job(laptop: Path, name: str) -> None:
    git(laptop, "pull", "-q", "--rebase")
    write(laptop, f"jobs/{name}.yaml", GREETING_JOB % name)
    commit_all(laptop, f"add {name}")
    git(laptop, "push", "-q", "origin", "main")


def test_reconciles_on_start_on_remote_moves_and_on_file_changes(make_repo: Callable[..., Path],
                                                                daemons: list[Daemon]) -> None:
    bare, watched, laptop = remote_setup(make_repo)
    push_job(laptop, "early")
    daemon = Daemon(watched, "--interval", "0.5")
    daemons.append(daemon)
    daemon.wait_for(lambda: (committed_record(bare, "early") or {}).get("status") == "SUCCESS")  # the pass on start
    assert daemon.events("watch.started")[0]["remote"] == "origin"
    push_job(laptop, "pushed")
    daemon.wait_for(lambda: (committed_record(bare, "pushed") or {}).get("status") == "SUCCESS")
    assert any("remote" in e["reasons"] for e in daemon.events("pass.started"))
    daemon.wait_for(daemon.idle)
    write(watched, "jobs/draft.yaml", GREETING_JOB % "draft")  # on disk only: a hint, never run uncommitted
    daemon.wait_for(lambda: any(e["reasons"] == ["files"] for e in daemon.events("pass.finished")))
    files = next(e for e in daemon.events("files.changed") if "ignored" not in e)
    assert files["paths"] == ["jobs/draft.yaml"]
    assert next(e for e in daemon.events("pass.finished") if e["reasons"] == ["files"])["ran"] == {}
    assert committed_record(bare, "draft") is None
    passes = len(daemon.events("pass.started"))
    time.sleep(2.5)  # five polls of the remote: our own status commits must not start anything
    assert len(daemon.events("pass.started")) == passes
    assert daemon.stop() == 0
    assert daemon.events()[-1]["event"] == "watch.stopped"


def test_commits_in_the_clone_without_a_remote(make_repo: Callable[..., Path], daemons: list[Daemon]) -> None:
    repo = make_repo("solo")
    daemon = Daemon(repo)
    daemons.append(daemon)
    daemon.wait_for(lambda: daemon.events("pass.finished"))
    assert daemon.events("watch.started")[0]["remote"] is None
    write(repo, "jobs/local.yaml", GREETING_JOB % "local")
    commit_all(repo, "add local")
    daemon.wait_for(lambda: (committed_record(repo, "local") or {}).get("status") == "SUCCESS")
    daemon.wait_for(daemon.idle)
    passes = len(daemon.events("pass.started"))
    time.sleep(1.5)
    assert len(daemon.events("pass.started")) == passes  # status commits did not trigger a pass
    assert daemon.events("branch.status_only")
    assert git(repo, "status", "--porcelain") == ""
    assert daemon.stop(signal.SIGINT) == 0


def test_sigterm_finishes_the_user_in_flight_and_checkpoints(make_repo: Callable[..., Path],
                                                            daemons: list[Daemon]) -> None:
    _, watched, laptop = remote_setup(make_repo, settings="concurrency: 1\n")
    push_job(laptop, "slow")
    hits = watched.parent / "failpoints.log"
    daemon = Daemon(watched, env={"RECONCILER_FAILPOINTS": "user.before-apply=sleep:1.5",
                                  "RECONCILER_FAILPOINT_LOG": str(hits)})
    daemons.append(daemon)
    # u1 is in flight once it reaches its failpoint (then sleeps 1.5 s): a fixed wait may be too short under load
    daemon.wait_for(lambda: hits.exists() and "user.before-apply" in hits.read_text("utf-8"))
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 10
    data = committed_record(watched, "slow")
    assert data is not None and data["status"] == "WORKING", data  # resumable, not lost
    users = data["blocks"][0]["users"]
    assert users == {"u1": {"status": "DEPLOYED", "reason": users["u1"]["reason"]}}  # only the one in flight
    assert [e["event"] for e in daemon.events()][-2:] == ["pass.finished", "watch.stopped"]
    assert daemon.events("pass.finished")[-1]["interrupted"] is True


def test_survives_a_remote_that_is_briefly_unreachable(make_repo: Callable[..., Path],
                                                       daemons: list[Daemon]) -> None:
    bare, watched, laptop = remote_setup(make_repo)
    daemon = Daemon(watched, "--interval", "0.3")
    daemons.append(daemon)
    daemon.wait_for(lambda: daemon.events("pass.finished"))
    away = bare.with_name("deploy-away.git")
    bare.rename(away)
    daemon.wait_for(lambda: daemon.events("remote.unreachable"))
    assert daemon.events("remote.unreachable")[0]["retry_in"] > 0.3  # backing off
    away.rename(bare)
    daemon.wait_for(lambda: daemon.events("remote.reachable"), timeout=30)
    push_job(laptop, "after-outage")
    daemon.wait_for(lambda: (committed_record(bare, "after-outage") or {}).get("status") == "SUCCESS", timeout=60)
    assert daemon.stop() == 0
