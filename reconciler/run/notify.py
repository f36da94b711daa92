"""Notifications (`notify:` in reconciler.yaml, SPEC 9.4): delivered from a background queue, never in the way.

The engine calls, at most once per event and job:

    notifier = Notifier(settings.notify, env, redactor, events=options.events)
    notifier.emit("job.claimed", detail, commit)      # returns at once; never raises
    ...
    notifier.emit("job.finished", detail, commit)     # also delivered as job.failed when it ended FAILURE
    notifier.close(timeout=5)                         # at the end of the pass: what is left is dropped

`detail` is the job's status JSON, the shape `status JOB --format json` prints (`JobDetail.as_json()`,
or `listing.detail_of_record(record)` from a record alone); `commit` is the job's commit (the commit
that added its file; else the record's `desired_commit`), which github-status marks.

Events: `job.claimed` (a build was claimed), `job.finished` (a build ended, SUCCESS or FAILURE),
`job.failed` (a build ended FAILURE: a target that subscribes to it and to job.finished gets one
delivery, named job.failed), `job.blocked` (a job turned BLOCKED).

Formats:
- `json` (default): `POST url` with the status JSON plus `"event"` and `"commit"`; with `secret`, the
  header `X-Reconciler-Signature-256: sha256=<hex HMAC-SHA256 of the body bytes, keyed by the secret>`
  (verify it like GitHub's `X-Hub-Signature-256`). Also `X-Reconciler-Event` and `X-Reconciler-Delivery`.
- `slack`: `POST url` with an incoming-webhook message `{"text": ..., "blocks": [...]}`.
- `github-status`: `POST {url}/repos/{repository}/statuses/{commit}` with GitHub's commit-status body
  `{"state": pending|success|failure|error, "target_url"?, "description", "context": "reconciler/<job>"}`,
  `url` being the API base (`https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise)
  and `secret` the token (`Authorization: Bearer`). claimed -> pending, finished -> success or failure,
  failed -> failure, blocked -> error. `target_url` is `{page_url}/jobs/<job>` when `page_url` is set.

Delivery: one background thread and bounded queue per target (a full queue drops, it never waits; a
dead target never holds up another);
up to `attempts` tries per delivery with exponential backoff and jitter on connection errors,
timeouts, 429 (honouring Retry-After) and 5xx; other answers are final. Every body passes through the
pass's redactor (which also learns the notify secrets), so no secret value is ever sent. Each outcome
is counted in `COUNTS` (`/metrics`: reconciler_notifications_total{format, event, outcome}):
`delivered`, `failed` (gave up or refused), `retried` (one per extra try), `dropped` (queue full, or
still queued at close), `skipped` (a secret not set, or github-status without a commit).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from reconciler import __version__
from reconciler.core.redact import Redactor
from reconciler.core.settings import NotifyTarget

Events = Callable[[str, dict[str, object]], None]
OUTCOMES = ("delivered", "failed", "retried", "dropped", "skipped")
GITHUB_STATE = {"job.claimed": "pending", "job.failed": "failure", "job.blocked": "error"}
SIGNATURE_HEADER = "X-Reconciler-Signature-256"


class DeliveryCounts:
    """Outcome counters by (format, event, outcome); thread-safe, process-wide by default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}

    def add(self, fmt: str, event: str, outcome: str) -> None:
        with self._lock:
            key = (fmt, event, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)


COUNTS = DeliveryCounts()


@dataclass(frozen=True)
class Delivery:
    target: NotifyTarget
    event: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class _Lane:
    """One target's queue and delivery thread: a slow or dead target never holds up the others."""

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[Delivery] = queue.Queue(maxsize=size)
        self.thread: threading.Thread | None = None

    def drained(self, timeout: float) -> bool:
        done = threading.Event()

        def wait() -> None:
            self.queue.join()
            done.set()

        threading.Thread(target=wait, name="notify-close", daemon=True).start()
        return done.wait(max(0.0, timeout))


class Notifier:
    def __init__(self, targets: tuple[NotifyTarget, ...] | list[NotifyTarget], env: Mapping[str, str],
                 redactor: Redactor, *, events: Events | None = None, counts: DeliveryCounts = COUNTS,
                 attempts: int = 4, backoff: float = 0.5, max_backoff: float = 8.0, timeout: float = 10.0,
                 queue_size: int = 1000, transport: httpx.BaseTransport | None = None) -> None:
        self.targets = tuple(targets)
        self.env = env
        self.redactor = redactor
        self.events = events or (lambda event, data: None)
        self.counts = counts
        self.attempts, self.backoff, self.max_backoff = max(1, attempts), backoff, max_backoff
        self._lanes = [_Lane(queue_size) for _ in self.targets]
        self._stop = threading.Event()
        self._closed = False
        self._client: httpx.Client | None = None
        self._timeout, self._transport = timeout, transport
        self._lock = threading.Lock()
        for target in self.targets:  # the redactor masks them wherever they might surface (an error text)
            for name in target.secret_names():
                if env.get(name):
                    redactor.add(env[name])

    # -- what the engine calls ------------------------------------------------------------------------
    def emit(self, event: str, detail: Mapping[str, Any], commit: str | None) -> None:
        """Queue deliveries of `event` to every target that wants it. Never blocks, never raises."""
        try:
            self._emit(event, detail, commit)
        except Exception as exc:  # a notification must never fail a deployment
            self.events("notify.error", {"notification": event,
                                         "error": self.redactor(f"{type(exc).__name__}: {exc}")})

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` seconds for queued deliveries, then stop; what is left is counted dropped."""
        with self._lock:
            self._closed = True
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            if lane.thread is not None:
                lane.drained(deadline - time.monotonic())
        self._stop.set()
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(timeout=max(0.5, min(timeout, self._timeout)))
            while True:
                try:
                    left = lane.queue.get_nowait()
                except queue.Empty:
                    break
                self._count(left, "dropped")
                lane.queue.task_done()
        if self._client is not None and not any(lane.thread and lane.thread.is_alive() for lane in self._lanes):
            self._client.close()

    # -- building deliveries --------------------------------------------------------------------------
    def _emit(self, event: str, detail: Mapping[str, Any], commit: str | None) -> None:
        for target, lane in zip(self.targets, self._lanes, strict=True):
            name = _event_for(target, event, detail)
            if name is None:
                continue
            delivery = self._build(target, name, detail, commit)
            if delivery is None:
                continue
            with self._lock:
                if self._closed:
                    self._count(delivery, "dropped")
                    continue
                self._start(lane)
            try:
                lane.queue.put_nowait(delivery)
            except queue.Full:
                self._count(delivery, "dropped")
                self.events("notify.dropped", {"notification": name, "url": target.where(), "why": "queue full"})

    def _build(self, target: NotifyTarget, event: str, detail: Mapping[str, Any],
               commit: str | None) -> Delivery | None:
        missing = [n for n in target.secret_names() if not self.env.get(n)]
        if missing:
            self.counts.add(target.format, event, "skipped")
            self.events("notify.skipped", {"notification": event, "url": target.where(),
                                           "why": f"secret {', '.join(missing)} is not set"})
            return None
        url = target.url or self.env[str(target.url_secret)]
        headers = {"User-Agent": f"gitops-reconciler/{__version__}", "Content-Type": "application/json"}
        if target.format == "slack":
            payload: dict[str, Any] = slack_message(event, detail, target.page_url)
        elif target.format == "github-status":
            if not commit:
                self.counts.add(target.format, event, "skipped")
                self.events("notify.skipped", {"notification": event, "url": target.where(), "why": "no commit"})
                return None
            payload = github_status(event, detail, target.page_url)
            url = f"{url.rstrip('/')}/repos/{target.repository}/statuses/{commit}"
            headers |= {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                        "Authorization": f"Bearer {self.env[str(target.secret)]}"}
        else:
            payload = {"event": event, **detail, "commit": commit}
            headers |= {"X-Reconciler-Event": event, "X-Reconciler-Delivery": str(uuid.uuid4())}
        body = self.redactor(json.dumps(payload, ensure_ascii=False, default=str)).encode("utf-8")
        if target.format == "json" and target.secret:
            headers[SIGNATURE_HEADER] = signature(self.env[target.secret], body)
        return Delivery(target, event, "POST", url, headers, body)

    # -- the delivery threads -------------------------------------------------------------------------
    def _start(self, lane: _Lane) -> None:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, transport=self._transport, follow_redirects=False)
        if lane.thread is None:
            lane.thread = threading.Thread(target=self._loop, args=(lane,), name="notify", daemon=True)
            lane.thread.start()

    def _loop(self, lane: _Lane) -> None:
        while not self._stop.is_set():
            try:
                delivery = lane.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(delivery)
            except Exception as exc:  # never let one delivery end the thread
                self._count(delivery, "failed")
                self.events("notify.failed", {"notification": delivery.event, "url": delivery.target.where(),
                                              "error": self.redactor(f"{type(exc).__name__}: {exc}")})
            finally:
                lane.queue.task_done()

    def _deliver(self, delivery: Delivery) -> None:
        assert self._client is not None
        error = ""
        for attempt in range(1, self.attempts + 1):
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                response = self._client.request(delivery.method, delivery.url, headers=delivery.headers,
                                                content=delivery.body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    self._count(delivery, "delivered")
                    return
                error = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # another 4xx: asking again will not help
                wait = max(wait, _retry_after(response))
            if attempt == self.attempts:
                break
            self._count(delivery, "retried")
            if self._stop.wait(min(self.max_backoff, wait) * random.uniform(0.5, 1.0)):
                break  # closing: give up now
        self._count(delivery, "failed")
        self.events("notify.failed", {"notification": delivery.event, "url": delivery.target.where(),
                                      "error": self.redactor(error)})

    def _count(self, delivery: Delivery, outcome: str) -> None:
        self.counts.add(delivery.target.format, delivery.event, outcome)


def _event_for(target: NotifyTarget, event: str, detail: Mapping[str, Any]) -> str | None:
    """The event name this target gets for `event`, or None when it does not subscribe."""
    if event == "job.finished" and detail.get("status") == "FAILURE" and "job.failed" in target.events:
        return "job.failed"
    return event if event in target.events else None


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


# -- message shapes (pure) -----------------------------------------------------------------------------
def _summary(detail: Mapping[str, Any]) -> str:
    record = detail.get("record") or {}
    counts = record.get("summary") or {}
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _headline(event: str, detail: Mapping[str, Any]) -> str:
    job, status, build = detail.get("job"), detail.get("status"), detail.get("build_id")
    what = {"job.claimed": "claimed", "job.blocked": "blocked", "job.failed": "failed"}.get(event, "finished")
    text = f"job {job} {what}" + (f": {status}" if event in ("job.finished", "job.failed") else "")
    if build:
        text += f" (build {build})"
    return text


def slack_message(event: str, detail: Mapping[str, Any], page_url: str | None) -> dict[str, Any]:
    """An incoming-webhook message: `text` (the fallback, and what most clients show) plus one section."""
    icon = {"job.claimed": ":hourglass_flowing_sand:", "job.blocked": ":no_entry:", "job.failed": ":x:"}.get(
        event, ":white_check_mark:" if detail.get("status") == "SUCCESS" else ":x:")
    parts = [_headline(event, detail)]
    if summary := _summary(detail):
        parts.append(summary)
    if detail.get("reason"):
        parts.append(str(detail["reason"]))
    text = f"{icon} " + " · ".join(_slack_escape(p) for p in parts)
    if page_url:
        text += f" <{page_url.rstrip('/')}/jobs/{detail.get('job')}|details>"
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def github_status(event: str, detail: Mapping[str, Any], page_url: str | None) -> dict[str, Any]:
    """GitHub's commit-status request body (POST /repos/{owner}/{repo}/statuses/{sha})."""
    if event == "job.finished":
        state = "success" if detail.get("status") == "SUCCESS" else "failure"
    else:
        state = GITHUB_STATE.get(event, "error")
    description = _headline(event, detail)
    if summary := _summary(detail):
        description += f": {summary}"
    body: dict[str, Any] = {"state": state, "description": description[:140],
                            "context": f"reconciler/{detail.get('job')}"}
    if page_url:
        body["target_url"] = f"{page_url.rstrip('/')}/jobs/{detail.get('job')}"
    return body
