"""Rollout control in real passes: waves halting at the failure budget (a command driver that fails one
chosen user), `max_parallel` proven by a target that records overlapping calls, and notifications
delivered to a real receiver on 127.0.0.1 (signed), a refused URL not failing the pass."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.core.timeutil import iso, utcnow
from tests.support.cli import run_main
from tests.support.receiver import Receiver, refused_url
from tests.support.repos import commit_all, git, write

TARGET = textwrap.dedent("""\
    # A deployment target for the tests: records each call, fails the users listed in FAIL, and counts
    # how many calls run at once (each call waits, up to 5 s, until another one runs beside it).
    import os, sys, time
    root, user, job = sys.argv[1], os.environ["RECONCILER_USER"], os.environ["RECONCILER_BUILD_ID"]
    with open(os.path.join(root, "calls.log"), "a") as log:
        log.write(user + "\\n")
    running = os.path.join(root, "running")
    os.makedirs(running, exist_ok=True)
    mine = os.path.join(running, job + "." + user)
    open(mine, "w").close()
    deadline = time.monotonic() + float(os.environ.get("RECONCILER_TOKEN_MEET", "0"))
    while True:
        now = len(os.listdir(running))
        with open(os.path.join(root, "overlap.log"), "a") as log:
            log.write(f"{now}\\n")
        if now >= 2 or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    time.sleep(float(os.environ.get("RECONCILER_TOKEN_MEET", "0")) / 10)
    os.remove(mine)
    fail = open(os.path.join(root, "FAIL")).read().split() if os.path.exists(os.path.join(root, "FAIL")) else []
    sys.exit(1 if user in fail else 0)
""")
DEFINITION = "module_type: test/content\ncontent: {name}\ncontent_tokens: [{{name: meet, default: '0'}}]\n"


@pytest.fixture
def command_repo(tmp_path: Path) -> Callable[..., Path]:
    """A repo whose servers use a command driver running TARGET (users u0..u9 on `srv`, v0..v2 on `other`)."""

    def factory(jobs: dict[str, str], max_parallel: int | None = None, settings: str = "") -> Path:
        repo = tmp_path / "repo"
        repo.mkdir()
        root = tmp_path / "target"
        root.mkdir()
        (root / "target.py").write_text(TARGET, "utf-8")
        git(repo, "init", "-q", "-b", "main")
        driver = {"type": "command", "commands": {"APPLY-AUTO": [sys.executable, str(root / "target.py"), str(root)]},
                  "timeout": 60}
        for name, users, env in (("srv", [f"u{i}" for i in range(10)], "test"), ("other", ["v0", "v1", "v2"], "lab")):
            server: dict[str, Any] = {"environment": env, "organization": "o", "driver": driver,
                                      "users": [{"id": u} for u in users]}
            if max_parallel and name == "srv":
                server["max_parallel"] = max_parallel
            write(repo, f"servers/{name}.yaml", yaml.safe_dump(server, sort_keys=False))
        for definition in ("app", "web"):
            write(repo, f"definitions/{definition}.yaml", DEFINITION.format(name=definition))
            write(repo, f"definitions/{definition}/readme.txt", "meet {{ meet }}\n")
        if settings:
            write(repo, "reconciler.yaml", settings)
        for job, text in jobs.items():
            write(repo, f"jobs/{job}.yaml", text)
        commit_all(repo, "initial")
        return repo

    return factory


def record(repo: Path, job: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repo / "status" / f"{job}.json").read_text("utf-8"))
    return data


def calls(repo: Path) -> list[str]:
    return (repo.parent / "target" / "calls.log").read_text("utf-8").split()


ROLLOUT_JOB = """\
blocks:
  - definition: app
    server: srv
    users: all
    rollout: {{waves: [1, "30%", "100%"], max_failures: {budget}}}
  - definition: web
    server: other
    users: all
"""


def test_waves_halt_at_the_failure_budget(command_repo: Callable[..., Path]) -> None:
    repo = command_repo({"rollout": ROLLOUT_JOB.format(budget=0)})
    (repo.parent / "target" / "FAIL").write_text("u1\n")
    result = run_main("reconcile", "--repo", str(repo))
    assert result.returncode == 1, result.stdout + result.stderr
    found = record(repo, "rollout")
    assert found["status"] == "FAILURE"
    first, second = found["blocks"]
    assert {u: r["status"] for u, r in first["users"].items()} == {
        "u0": "DEPLOYED", "u1": "FAILED", "u2": "DEPLOYED", **{f"u{i}": "NOT_RUN" for i in range(3, 10)}}
    assert {r["reason"] for u, r in first["users"].items() if r["status"] == "NOT_RUN"} == {"halted by rollout"}
    assert {u: (r["status"], r["reason"]) for u, r in second["users"].items()} == {
        v: ("NOT_RUN", "halted by rollout") for v in ("v0", "v1", "v2")}
    assert sorted(calls(repo)) == ["u0", "u1", "u2"]  # nobody past the wave that spent the budget
    log = run_main("logs", found["build_id"], "--repo", str(repo)).stdout
    assert "block 0 wave 1/3: 1 user(s): 1 DEPLOYED; 0 failure(s) so far, max_failures 0" in log
    assert ("block 0 wave 2/3: 2 user(s): 1 DEPLOYED, 1 FAILED; 1 failure(s) so far, max_failures 0 exceeded: "
            "halted by rollout") in log
    assert "wave 3/3" not in log


def test_a_budget_that_holds_lets_every_wave_run(command_repo: Callable[..., Path]) -> None:
    repo = command_repo({"rollout": ROLLOUT_JOB.format(budget='"10%"')})  # 1 of 10 users may fail
    (repo.parent / "target" / "FAIL").write_text("u1\n")
    assert run_main("reconcile", "--repo", str(repo)).returncode == 1  # u1 FAILED: the job is FAILURE
    first, second = record(repo, "rollout")["blocks"]
    assert [r["status"] for r in first["users"].values()].count("DEPLOYED") == 9
    assert {r["status"] for r in second["users"].values()} == {"DEPLOYED"}
    assert len(calls(repo)) == 13


def test_max_parallel_bounds_a_server_across_jobs(command_repo: Callable[..., Path]) -> None:
    jobs = {name: f"blocks:\n  - definition: {definition}\n    server: srv\n    users: all\n"
                  "    content_tokens: {meet: '3'}\n" for name, definition in (("one", "app"), ("two", "web"))}
    repo = command_repo(jobs, max_parallel=2, settings="concurrency: 8\njob_concurrency: 2\n")
    result = run_main("reconcile", "--repo", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert record(repo, "one")["status"] == record(repo, "two")["status"] == "SUCCESS"
    overlap = [int(n) for n in (repo.parent / "target" / "overlap.log").read_text().split()]
    assert max(overlap) == 2  # calls did run two at once, never more (8 users x 2 jobs could have run 16)
    assert len(calls(repo)) == 20


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_notifications_of_a_pass(command_repo: Callable[..., Path], receiver: Receiver) -> None:
    settings = (f"notify:\n  - url: {receiver.url}/hook\n    events: [job.claimed, job.finished, job.blocked]\n"
                "    secret: {secret: DEPLOY_SECRET_HMAC}\n"
                f"  - url: {refused_url()}\n    events: [job.claimed, job.finished]\n")
    jobs = {"first": "blocks:\n  - {definition: app, server: other, users: all}\n",
            "second": "after: [first]\nblocks:\n  - {definition: web, server: other, users: all}\n"}
    repo = command_repo(jobs, settings=settings)
    (repo.parent / "target" / "FAIL").write_text("v0\n")
    key = "hmac-key-of-the-e2e-test"
    result = run_main("reconcile", "--repo", str(repo), env={"DEPLOY_SECRET_HMAC": key})
    assert result.returncode == 1 and record(repo, "first")["status"] == "FAILURE"  # v0 failed, not the pass
    events = [(r["headers"]["X-Reconciler-Event"], json.loads(r["body"])) for r in receiver.requests]
    assert [(event, body["job"], body["status"]) for event, body in events] == [
        ("job.claimed", "first", "IN-PROGRESS"), ("job.finished", "first", "FAILURE"),
        ("job.blocked", "second", "BLOCKED")]
    for request in receiver.requests:
        expected = "sha256=" + hmac.new(key.encode(), request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["X-Reconciler-Signature-256"] == expected
        assert key not in request["body"].decode()
    finished = events[1][1]
    assert finished["build_id"] == record(repo, "first")["build_id"]
    assert finished["commit"] == git(repo, "log", "--format=%H", "-1", "--", "jobs/first.yaml").strip()
    assert events[2][1]["reason"] == "blocked: job first ended FAILURE"
    assert '"event": "notify.failed"' in result.stderr  # the refused URL: counted and logged, nothing else
    again = run_main("reconcile", "--repo", str(repo), env={"DEPLOY_SECRET_HMAC": key})
    assert again.returncode == 1  # second is still BLOCKED (a problem), but announced once only
    assert len(receiver.requests) == 3
    assert iso(utcnow()) is not None
