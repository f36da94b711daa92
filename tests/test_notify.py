"""Notifications (reconciler.run.notify) against a real HTTP receiver on 127.0.0.1.

The receiver records every request (path, headers, body) and answers from a script of status codes.
Verified: the HMAC signature of json deliveries, the Slack message and GitHub commit-status shapes,
retries on 500, no retry on 404, a refused connection counted and never raised, a slow receiver never
blocking `emit`, secrets never in a body, and the counters in /metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.core.redact import MASK, Redactor
from reconciler.core.settings import NotifyTarget, parse_settings
from reconciler.run.notify import DeliveryCounts, Notifier
from reconciler.web.metrics import Metrics
from tests.support.receiver import Receiver, refused_url

SHA = "a" * 40
HMAC_KEY = "hmac-key-for-tests-0123456789"
TOKEN = "ghp_token_for_tests_0123456789"
DETAIL: dict[str, Any] = {
    "job": "release-1", "status": "FAILURE", "build_id": "20261121T120000Z-release-1-abcdef",
    "created_at": None, "last_run_at": None, "finished_at": None, "description": "", "path": "jobs/release-1.yaml",
    "blocks": [{"definition": "app", "module_type": "t/x", "server": "srv", "environment": "prod",
                "organization": "o", "action": "APPLY-AUTO", "users": {"u1": "DEPLOYED", "u2": "FAILED"}}],
    "reason": None, "record": {"summary": {"DEPLOYED": 1, "FAILED": 1}}, "problems": [],
}




@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    if server.release is not None:
        server.release.set()
    server.server.shutdown()
    server.server.server_close()


def notifier(*targets: NotifyTarget, env: dict[str, str] | None = None, redactor: Redactor | None = None,
             counts: DeliveryCounts | None = None, **options: Any) -> tuple[Notifier, DeliveryCounts, list[Any]]:
    seen: list[Any] = []
    counts = counts or DeliveryCounts()
    return (Notifier(targets, env or {}, redactor or Redactor(), counts=counts, backoff=0.01,
                     events=lambda event, data: seen.append((event, data)), **options), counts, seen)


def test_json_delivery_is_signed_and_carries_the_status_json(receiver: Receiver) -> None:
    target = NotifyTarget(url=receiver.url + "/hook", events=("job.finished",), secret="DEPLOY_SECRET_HMAC")
    sender, counts, _ = notifier(target, env={"DEPLOY_SECRET_HMAC": HMAC_KEY})
    sender.emit("job.finished", DETAIL, SHA)
    sender.emit("job.claimed", DETAIL, SHA)  # not subscribed: nothing sent
    sender.close(30)
    [request] = receiver.requests
    assert request["path"] == "/hook"
    expected = "sha256=" + hmac.new(HMAC_KEY.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Reconciler-Signature-256"] == expected
    assert request["headers"]["X-Reconciler-Event"] == "job.finished"
    body = json.loads(request["body"])
    assert body == {"event": "job.finished", **DETAIL, "commit": SHA}
    assert HMAC_KEY not in request["body"].decode()
    assert counts.snapshot() == {("json", "job.finished", "delivered"): 1}


def test_no_secret_value_is_ever_in_a_body(receiver: Receiver) -> None:
    redactor = Redactor()
    redactor.add("s3cr3t-value-of-a-token")  # learned by the pass while it ran
    target = NotifyTarget(url=receiver.url, events=("job.failed",))
    sender, _, _ = notifier(target, redactor=redactor)
    leaky = {**DETAIL, "blocks": [{**DETAIL["blocks"][0], "users": {"u2": "FAILED"}}],
             "record": {"summary": {}, "error": "driver said: s3cr3t-value-of-a-token"}}
    sender.emit("job.finished", leaky, SHA)  # a FAILURE: delivered as job.failed to this target
    sender.close(30)
    [body] = receiver.bodies()
    assert body["event"] == "job.failed"
    assert body["record"]["error"] == f"driver said: {MASK}"
    assert "s3cr3t" not in receiver.requests[0]["body"].decode()


def test_slack_incoming_webhook_message(receiver: Receiver) -> None:
    target = NotifyTarget(url="", url_secret="DEPLOY_SECRET_SLACK_URL", events=("job.finished", "job.failed"),
                          format="slack", page_url="https://reconciler.example.com/")
    sender, counts, _ = notifier(target, env={"DEPLOY_SECRET_SLACK_URL": receiver.url + "/services/T/B/X"})
    sender.emit("job.finished", {**DETAIL, "job": "a<b>&c"}, SHA)
    sender.emit("job.finished", {**DETAIL, "status": "SUCCESS", "record": {"summary": {"DEPLOYED": 2}}}, SHA)
    sender.close(30)
    failed, ok = receiver.bodies()
    assert receiver.requests[0]["path"] == "/services/T/B/X"
    assert set(failed) == {"text", "blocks"}
    assert failed["text"].startswith(":x: job a&lt;b&gt;&amp;c failed: FAILURE (build ")
    assert "1 DEPLOYED, 1 FAILED" in failed["text"]
    assert failed["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": failed["text"]}}]
    assert ok["text"].startswith(":white_check_mark: job release-1 finished: SUCCESS")
    assert ok["text"].endswith("<https://reconciler.example.com/jobs/release-1|details>")
    assert counts.snapshot() == {("slack", "job.failed", "delivered"): 1, ("slack", "job.finished", "delivered"): 1}


def test_github_commit_status(receiver: Receiver) -> None:
    target = NotifyTarget(url=receiver.url + "/api/v3/", events=("job.claimed", "job.finished", "job.blocked"),
                          format="github-status", secret="DEPLOY_SECRET_GITHUB", repository="acme/deploy",
                          page_url="https://reconciler.example.com")
    sender, _, _ = notifier(target, env={"DEPLOY_SECRET_GITHUB": TOKEN})
    sender.emit("job.claimed", {**DETAIL, "status": "IN-PROGRESS", "record": None}, SHA)
    sender.emit("job.finished", {**DETAIL, "status": "SUCCESS"}, SHA)
    sender.emit("job.finished", DETAIL, SHA)
    sender.emit("job.blocked", {**DETAIL, "status": "BLOCKED", "build_id": None, "record": None,
                                "reason": "blocked: job a ended FAILURE"}, SHA)
    sender.emit("job.claimed", DETAIL, None)  # no commit to mark: skipped
    sender.close(30)
    assert [r["path"] for r in receiver.requests] == [f"/api/v3/repos/acme/deploy/statuses/{SHA}"] * 4
    headers = receiver.requests[0]["headers"]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/vnd.github+json"
    bodies = receiver.bodies()
    assert [b["state"] for b in bodies] == ["pending", "success", "failure", "error"]
    for body in bodies:  # GitHub's documented request body: nothing else
        assert set(body) == {"state", "target_url", "description", "context"}
        assert body["context"] == "reconciler/release-1"
        assert body["target_url"] == "https://reconciler.example.com/jobs/release-1"
        assert 0 < len(body["description"]) <= 140
    assert bodies[2]["description"] == ("job release-1 finished: FAILURE (build 20261121T120000Z-release-1-abcdef): "
                                        "1 DEPLOYED, 1 FAILED")
    assert TOKEN not in json.dumps(bodies)


def test_retries_on_500_then_delivers(receiver: Receiver) -> None:
    receiver.script = [500, 503, 200]
    sender, counts, _ = notifier(NotifyTarget(url=receiver.url, events=("job.claimed",)))
    sender.emit("job.claimed", DETAIL, SHA)
    sender.close(30)
    assert len(receiver.requests) == 3
    assert len({r["body"] for r in receiver.requests}) == 1  # the same delivery each time
    assert counts.snapshot() == {("json", "job.claimed", "retried"): 2, ("json", "job.claimed", "delivered"): 1}


def test_gives_up_after_the_attempts_and_never_retries_a_404(receiver: Receiver) -> None:
    receiver.script = [500, 500, 500, 404]
    sender, counts, seen = notifier(NotifyTarget(url=receiver.url, events=("job.claimed",)), attempts=3)
    sender.emit("job.claimed", DETAIL, SHA)
    sender.emit("job.claimed", DETAIL, SHA)
    sender.close(30)
    assert len(receiver.requests) == 4  # 3 tries of the first, 1 of the second (404 is final)
    assert counts.snapshot() == {("json", "job.claimed", "retried"): 2, ("json", "job.claimed", "failed"): 2}
    assert [data["error"] for event, data in seen if event == "notify.failed"] == ["HTTP 500", "HTTP 404"]




def test_a_refused_connection_is_counted_and_never_raised() -> None:
    sender, counts, seen = notifier(NotifyTarget(url=refused_url(), events=("job.finished",)), attempts=2)
    sender.emit("job.finished", {**DETAIL, "status": "SUCCESS"}, SHA)
    sender.close(30)
    assert counts.snapshot() == {("json", "job.finished", "retried"): 1, ("json", "job.finished", "failed"): 1}
    assert [event for event, _ in seen] == ["notify.failed"]
    assert "ConnectError" in seen[0][1]["error"]


def test_emit_never_waits_for_a_slow_receiver(receiver: Receiver) -> None:
    receiver.release = threading.Event()
    sender, counts, _ = notifier(NotifyTarget(url=receiver.url, events=("job.claimed",)), queue_size=2)
    sender.emit("job.claimed", DETAIL, SHA)
    assert receiver.arrived.wait(30)  # the delivery is being answered, slowly, while the caller goes on
    for _ in range(5):  # two fit in the queue; the rest are dropped rather than waited for
        sender.emit("job.claimed", DETAIL, SHA)
    assert counts.snapshot()[("json", "job.claimed", "dropped")] == 3
    receiver.release.set()
    sender.close(30)
    assert counts.snapshot()[("json", "job.claimed", "delivered")] == 3


def test_close_drops_what_it_cannot_deliver_in_time(receiver: Receiver) -> None:
    receiver.release = threading.Event()
    sender, counts, _ = notifier(NotifyTarget(url=receiver.url, events=("job.claimed",)), timeout=60)
    for _ in range(3):
        sender.emit("job.claimed", DETAIL, SHA)
    assert receiver.arrived.wait(30)
    sender.close(0.2)  # returns although the receiver has not answered
    assert counts.snapshot()[("json", "job.claimed", "dropped")] == 2
    receiver.release.set()
    sender.emit("job.claimed", DETAIL, SHA)  # after close: counted, never sent
    assert counts.snapshot()[("json", "job.claimed", "dropped")] == 3


def test_an_unset_secret_skips_the_target() -> None:
    target = NotifyTarget(url="http://127.0.0.1:9/x", events=("job.claimed",), secret="DEPLOY_SECRET_UNSET")
    sender, counts, seen = notifier(target)
    sender.emit("job.claimed", DETAIL, SHA)
    sender.close(5)
    assert counts.snapshot() == {("json", "job.claimed", "skipped"): 1}
    assert seen == [("notify.skipped", {"notification": "job.claimed", "url": "http://127.0.0.1:9/x",
                                        "why": "secret DEPLOY_SECRET_UNSET is not set"})]


def test_settings_parse_into_targets() -> None:
    settings, problems = parse_settings(
        b"notify:\n  - url: https://hooks.slack.com/services/T/B/X\n    events: [job.failed]\n    format: slack\n"
        b"  - url: https://api.github.com\n    format: github-status\n    repository: acme/deploy\n"
        b"    secret: {secret: DEPLOY_SECRET_GITHUB}\n    events: [job.claimed, job.finished]\n")
    assert problems == []
    slack, github = settings.notify
    assert (slack.format, slack.events, slack.secret) == ("slack", ("job.failed",), None)
    assert (github.repository, github.secret, github.format) == ("acme/deploy", "DEPLOY_SECRET_GITHUB", "github-status")


def test_metrics_show_every_outcome() -> None:
    counts = DeliveryCounts()
    counts.add("json", "job.failed", "delivered")
    text = Metrics(counts).render([]).decode()
    assert 'reconciler_notifications_total{event="job.failed",format="json",outcome="delivered"} 1.0' in text
    assert 'reconciler_notifications_total{event="job.claimed",format="slack",outcome="dropped"} 0.0' in text
    assert 'reconciler_jobs{status="BLOCKED"} 0.0' in text


def test_detail_of_record_is_the_shape_status_prints(make_repo: Any) -> None:
    from reconciler.core.listing import detail_of_record
    from reconciler.core.records import parse_record
    from tests.support.cli import run_main

    repo = make_repo(jobs={"j": "blocks:\n  - {definition: app, server: srv, users: all, "
                                "content_tokens: {greeting: hi}}\n"})
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0
    printed = json.loads(run_main("status", "j", "--format", "json", "--repo", str(repo)).stdout)
    record = parse_record("j", (repo / "status" / "j.json").read_bytes())
    assert detail_of_record(record, path="jobs/j.yaml").as_json() == printed


def test_a_dead_target_never_holds_up_another(receiver: Receiver) -> None:
    dead = NotifyTarget(url=refused_url(), events=("job.claimed",))
    live = NotifyTarget(url=receiver.url, events=("job.claimed",))
    sender = Notifier((dead, live), {}, Redactor(), counts=(counts := DeliveryCounts()), backoff=5.0)
    for _ in range(3):
        sender.emit("job.claimed", DETAIL, SHA)
    sender.close(3)  # the dead target is still backing off when the pass ends: its deliveries are dropped
    assert len(receiver.requests) == 3
    assert counts.snapshot()[("json", "job.claimed", "delivered")] == 3
    assert counts.snapshot()[("json", "job.claimed", "dropped")] == 2  # the 2nd and 3rd for the dead target
