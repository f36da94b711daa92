"""Webhooks of `reconciler serve` with GitHub's real payloads: signatures, replays, caps, what triggers."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reconciler.ledger import git as gitlib
from reconciler.ledger.lock import RepoLock
from tests.support.repos import commit_all, flow_job, git, write
from tests.support.serve import WEBHOOK_SECRET, ServeProcess, github_signature

FIXTURES = Path(__file__).parent / "fixtures" / "github-webhooks"
JOB = flow_job("[u1, u2]")
MiB = 1024 * 1024


def payload(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    data.update(changes)
    return data


def github(server: ServeProcess, event: str, body: bytes | dict[str, Any], delivery: str | None = None,
           signature: str | None = "sign", **headers: str) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", "X-GitHub-Event": event, **headers}
    if delivery:
        sent["X-GitHub-Delivery"] = delivery
    if signature is not None:
        sent["X-Hub-Signature-256"] = github_signature(raw) if signature == "sign" else signature
    return server.post("/webhooks/github", content=raw, headers=sent)


def gitlab(server: ServeProcess, body: dict[str, Any], token: str | None = WEBHOOK_SECRET,
           event: str = "Push Hook", key: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": event}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    if key:
        headers["Idempotency-Key"] = key
    return server.post("/webhooks/gitlab", content=json.dumps(body).encode(), headers=headers)


def main_push(**changes: Any) -> dict[str, Any]:
    return payload("push-with-new-branch.payload", **{"ref": "refs/heads/main", **changes})


def metric(server: ServeProcess, name: str, **labels: str) -> float:
    text = server.get("/metrics").text
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{selector}}}" if selector else "")) + r" ([0-9.e+]+)$"
    found = re.search(pattern, text, re.M)
    assert found, f"{name} {labels} missing from /metrics"
    return float(found.group(1))


def passes(server: ServeProcess) -> float:
    return sum(metric(server, "reconciler_passes_total", outcome=o) for o in ("ok", "failure", "interrupted",
                                                                              "error"))


def wait_idle(server: ServeProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = server.get("/healthz").json()["passes"]
        if not state["running"] and not state["queued"]:
            return
        time.sleep(0.1)
    raise AssertionError("the pass runner did not become idle")


def statuses(server: ServeProcess) -> dict[str, str]:
    return {row["job"]: row["status"] for row in server.get("/api/jobs").json()}


def test_push_to_the_branch_runs_a_pass_once(make_repo: Callable[..., Path],
                                             serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo(jobs={"first": JOB})
    server = serve(repo)
    assert statuses(server) == {"first": "PENDING"}
    answer = github(server, "push", main_push(), delivery="delivery-1")
    assert answer.status_code == 202, answer.text
    assert answer.json()["result"] == "triggered"
    wait_idle(server)
    assert statuses(server) == {"first": "SUCCESS"}
    assert passes(server) == metric(server, "reconciler_passes_total", outcome="ok") == 1

    replay = github(server, "push", main_push(), delivery="delivery-1")
    assert replay.status_code == 200 and replay.json()["result"] == "duplicate"
    wait_idle(server)
    assert passes(server) == 1
    assert metric(server, "reconciler_user_deployments_total", result="DEPLOYED") == 2
    assert metric(server, "reconciler_webhook_deliveries_total", source="github", outcome="triggered") == 1
    assert metric(server, "reconciler_webhook_deliveries_total", source="github", outcome="duplicate") == 1
    assert metric(server, "reconciler_jobs", status="SUCCESS") == 1
    assert metric(server, "reconciler_pass_duration_seconds_count") == 1
    assert metric(server, "reconciler_last_successful_pass_timestamp_seconds") > time.time() - 300
    events = [e["event"] for e in server.events()]
    assert events.count("pass.finished") == 1 and "job.finished" in events

    # a status-only push (the reconciler's own commits coming back from the host) starts nothing
    status_commit = {"id": "a" * 40, "message": "status: first SUCCESS\n\nReconciler-Build: x\n"}
    echo = github(server, "push", main_push(commits=[status_commit]), delivery="delivery-2")
    assert echo.status_code == 200 and echo.json()["result"] == "ignored"
    assert passes(server) == 1


def test_refused_and_ignored_deliveries_start_nothing(make_repo: Callable[..., Path],
                                                      serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo(jobs={"first": JOB})
    server = serve(repo)
    body = json.dumps(main_push()).encode()
    unauthorized = [
        github(server, "push", body, signature=None),  # missing
        github(server, "push", body, signature=github_signature(body, "another-secret")),
        github(server, "push", body, signature=github_signature(body + b" ")),  # another body
        github(server, "push", body, signature="sha256=not-hex"),
        github(server, "push", body, signature=github_signature(body).replace("sha256=", "sha1=")),
        gitlab(server, main_push(), token=None),
        gitlab(server, main_push(), token="wrong"),
    ]
    assert [a.status_code for a in unauthorized] == [401] * 7

    padded = main_push(padding="x" * MiB)
    too_big = github(server, "push", padded)  # Content-Length says so
    assert too_big.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield from (b"x" * 65536 for _ in range(20))

    streamed = server.post("/webhooks/github", content=chunks(),  # no Content-Length: counted as it streams
                           headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=00"})
    assert streamed.status_code == 413 and "content-length" not in streamed.request.headers

    ignored = {
        "tag deletion": github(server, "push", payload("push-payload"), delivery="t1"),
        "org tag deletion": github(server, "push", payload("push-with-organization.payload"), delivery="t2"),
        "another branch": github(server, "push", payload("push-with-new-branch.payload"), delivery="b1"),
        "branch deleted": github(server, "push", main_push(deleted=True), delivery="b2"),
        "tag named main": github(server, "push", main_push(ref="refs/tags/main"), delivery="b3"),
        "pr opened": github(server, "pull_request", payload("pull_request-opened.payload"), delivery="p1"),
        "pr synchronize": github(server, "pull_request", payload("pull_request-synchronize.payload"),
                                 delivery="p2"),
        "gitlab tag": gitlab(server, {"object_kind": "tag_push", "ref": "refs/tags/v1"}, event="Tag Push Hook"),
        "gitlab mr": gitlab(server, {"object_kind": "merge_request"}, event="Merge Request Hook"),
        "gitlab branch": gitlab(server, {"object_kind": "push", "ref": "refs/heads/feature"}),
        "gitlab deleted": gitlab(server, {"object_kind": "push", "ref": "refs/heads/main", "after": "0" * 40}),
    }
    for what, answer in ignored.items():
        assert answer.status_code in (200, 204), (what, answer.text)
        assert answer.json()["result"] == "ignored", what
    ping = github(server, "ping", payload("ping-payload"), delivery="ping-1")
    assert ping.status_code == 200 and ping.json()["result"] == "pong"
    form = urllib.parse.urlencode({"payload": json.dumps(payload("push-payload"))}).encode()
    as_form = github(server, "push", form, delivery="f1", **{"Content-Type": "application/x-www-form-urlencoded"})
    assert as_form.status_code == 200 and "tag simple-tag" in as_form.json()["reason"]
    assert github(server, "push", b"[1, 2]").status_code == 400  # authenticated, but not an object
    assert github(server, "push", b"{not json").status_code == 400

    time.sleep(1.0)  # anything wrongly started would have run by now
    assert statuses(server) == {"first": "PENDING"}
    assert passes(server) == 0
    assert server.get("/healthz").json()["passes"]["last_outcome"] is None
    assert not [e for e in server.events() if e["event"].startswith("pass.")]
    assert metric(server, "reconciler_webhook_deliveries_total", source="github", outcome="unauthorized") == 5
    assert metric(server, "reconciler_webhook_deliveries_total", source="gitlab", outcome="unauthorized") == 2
    assert metric(server, "reconciler_webhook_deliveries_total", source="github", outcome="too_large") == 2


def test_githubs_documented_signature_vector(make_repo: Callable[..., Path],
                                            serve: Callable[..., ServeProcess]) -> None:
    server = serve(make_repo(), secret="It's a Secret to Everybody")
    good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    accepted = github(server, "push", b"Hello, World!", signature=good)
    assert accepted.status_code == 400 and "not JSON" in accepted.text  # authenticated; then refused as data
    assert github(server, "push", b"Hello, World?", signature=good).status_code == 401


def test_without_a_secret_every_delivery_is_401(make_repo: Callable[..., Path],
                                                serve: Callable[..., ServeProcess]) -> None:
    server = serve(make_repo(jobs={"first": JOB}), secret=None)
    assert server.get("/healthz").json()["webhooks_enabled"] is False
    assert github(server, "push", main_push()).status_code == 401
    assert github(server, "ping", payload("ping-payload")).status_code == 401
    assert gitlab(server, {"object_kind": "push", "ref": "refs/heads/main"}, token="").status_code == 401
    assert passes(server) == 0
    assert "test-webhook-secret" not in server.log.read_text("utf-8")


def test_gitlab_push_triggers_and_redelivery_does_not(make_repo: Callable[..., Path],
                                                      serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo(jobs={"first": JOB})
    server = serve(repo)
    push = {"object_kind": "push", "event_name": "push", "ref": "refs/heads/main", "before": "1" * 40,
            "after": "2" * 40, "total_commits_count": 1, "commits": [{"id": "2" * 40, "message": "add a job"}]}
    first = gitlab(server, push, key="5a1b7f43-0d4f-4a7e-9a43-9c8f5f1e9a01")
    assert first.status_code == 202 and first.json()["result"] == "triggered"
    wait_idle(server)
    again = gitlab(server, push, key="5a1b7f43-0d4f-4a7e-9a43-9c8f5f1e9a01")
    assert again.status_code == 200 and again.json()["result"] == "duplicate"
    wait_idle(server)
    assert statuses(server) == {"first": "SUCCESS"}
    assert passes(server) == 1
    assert metric(server, "reconciler_webhook_deliveries_total", source="gitlab", outcome="triggered") == 1


def test_triggers_coalesce_and_share_the_repo_lock(make_repo: Callable[..., Path],
                                                   serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo(jobs={"first": JOB})
    server = serve(repo)
    lock_dir = gitlib.open_repo(repo).state_dir
    with RepoLock(lock_dir, wait=5):  # another pass (say `reconciler watch`) holds the lock
        answers = [github(server, "push", main_push(), delivery=f"burst-{i}") for i in range(10)]
        assert [a.status_code for a in answers] == [202] * 10
        time.sleep(0.5)
        health = server.get("/healthz").json()["passes"]
        assert health["running"] is True and health["queued"] is True
        assert statuses(server) == {"first": "PENDING"}  # nothing runs while the lock is held
    wait_idle(server)
    assert statuses(server) == {"first": "SUCCESS"}
    assert 1 <= passes(server) <= 2  # ten triggers, at most one running and one queued
    coalesced = [e for e in server.events() if e["event"] == "pass.triggered" and e["coalesced"]]
    assert len(coalesced) >= 8
    builds = {row["build_id"] for row in server.get("/api/jobs").json()}
    assert len(builds) == 1  # the job ran once


SLOW_SERVER = """\
environment: test
organization: test-org
driver:
  type: command
  commands:
    APPLY-AUTO: [sleep, "1"]
users: [{id: u1}, {id: u2}, {id: u3}, {id: u4}]
"""


def test_sigterm_checkpoints_the_running_pass_and_exits_0(make_repo: Callable[..., Path],
                                                          serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo()
    write(repo, "servers/slow.yaml", SLOW_SERVER)
    write(repo, "reconciler.yaml", "concurrency: 1\n")
    write(repo, "jobs/slow.yaml", "blocks:\n  - {definition: app, server: slow, users: all, "
                                  "content_tokens: {greeting: hi}}\n")
    commit_all(repo, "a slow job")
    server = serve(repo)
    assert github(server, "push", main_push(), delivery="slow-1").status_code == 202
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        detail = server.get("/api/jobs/slow").json()
        users = detail["blocks"][0]["users"] if detail["blocks"] else {}
        if detail["status"] == "WORKING" and "DEPLOYED" in users.values():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the job never got going")
    assert server.stop(timeout=30) == 0
    events = server.events()
    finished = next(e for e in events if e["event"] == "pass.finished")
    assert finished["outcome"] == "interrupted"
    assert [e["event"] for e in events][-1] == "serve.stopped"
    record = json.loads(gitlib.read_file(gitlib.open_repo(repo), "main", "status/slow.json") or b"{}")
    results = record["blocks"][0]["users"]
    assert record["status"] == "WORKING" and 1 <= len(results) < 4  # checkpointed, not finished
    assert all(r["status"] == "DEPLOYED" for r in results.values())


def test_push_to_the_remote_is_fetched_and_the_result_pushed_back(make_repo: Callable[..., Path],
                                                                  serve: Callable[..., ServeProcess],
                                                                  tmp_path: Path) -> None:
    """The usual layout: the git host has the branch, serve runs in a clone that only learns of pushes
    from the webhook. The pass fetches, runs the new job, and pushes its status commits back."""
    origin = tmp_path / "origin.git"
    seed = make_repo("seed")
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    server = serve(clone)
    assert statuses(server) == {}

    write(seed, "jobs/from-remote.yaml", JOB)
    commit_all(seed, "a job pushed to the host")
    git(seed, "push", "-q", str(origin), "main")
    assert statuses(server) == {}  # the clone has not seen it yet
    answer = github(server, "push", main_push(), delivery="remote-1")
    assert answer.status_code == 202
    wait_idle(server)
    assert statuses(server) == {"from-remote": "SUCCESS"}
    pushed = json.loads(git(origin, "show", "main:status/from-remote.json"))
    assert pushed["status"] == "SUCCESS"


def test_rejected_deliveries_are_logged_and_pass_finished_names_the_problems(
        make_repo: Callable[..., Path], serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo(jobs={"first": JOB, "typo": JOB.replace("srv", "srvv")})
    server = serve(repo)
    assert github(server, "push", main_push(), signature="sha256=" + "0" * 64).status_code == 401
    assert github(server, "push", main_push(), signature=None).status_code == 401
    assert gitlab(server, {"object_kind": "push"}, token="wrong").status_code == 401
    rejected = [e for e in server.events() if e["event"] == "webhook.rejected"]
    assert [(e["source"], e["status"], e["reason"]) for e in rejected] == [
        ("github", 401, "missing or bad X-Hub-Signature-256"), ("github", 401, "missing or bad X-Hub-Signature-256"),
        ("gitlab", 401, "missing or bad X-Gitlab-Token")]
    assert all(e["client"] == "127.0.0.1" for e in rejected)
    ignored = github(server, "push", main_push(ref="refs/heads/other"))
    assert ignored.status_code == 200
    assert any(e["event"] == "webhook.ignored" and "not the deployment branch" in e["reason"]
               for e in server.events())
    assert github(server, "push", main_push(), delivery="problems-1").status_code == 202
    wait_idle(server)
    (finished,) = [e for e in server.events() if e["event"] == "pass.finished"]
    assert finished["ran"] == {"first": "SUCCESS"}
    assert any("server 'srvv' does not exist" in p and "[REF_SERVER]" in p for p in finished["problems"])
    assert WEBHOOK_SECRET not in server.log.read_text("utf-8")
