"""GitHub and GitLab webhook receivers: authenticate, then at most ask the runner for a pass.

A delivery is only a hint to look: what runs is decided by the pass from the branch and the
ledger, never from the payload. Pull requests never run anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from reconciler.eventlog import emit
from reconciler.web.app import ServeContext, context

router = APIRouter(tags=["webhooks"])
ZERO_SHA = "0" * 40
MAX_DEPTH = 64  # SPEC 9.1 rule 13: deeper JSON is refused before it is parsed (no RecursionError, no 500)
_JSON_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)  # an escape pair, a quote, or a bracket
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "authenticated; nothing started (ping, another branch, a tag, a pull request, "
                         "a redelivery)"},
    202: {"description": "a push to the deployment branch: a reconcile pass is queued"},
    400: {"description": "the body is not a JSON object, is nested deeper than 64 levels, or a required header "
                         "is missing"},
    401: {"description": "missing or bad signature/token, or no secret configured: nothing starts"},
    413: {"description": "body over the size cap"},
}


class Refused(Exception):
    def __init__(self, status: int, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.outcome, self.reason = status, outcome, reason


def answer(ctx: ServeContext, source: str, status: int, result: str, reason: str) -> JSONResponse:
    ctx.metrics.webhooks.labels(source, result if result in ("triggered", "duplicate") else "ignored").inc()
    if result != "triggered":  # a triggered delivery is logged as pass.triggered
        emit("webhook.ignored", {"source": source, "result": result, "reason": reason})
    return JSONResponse({"result": result, "reason": reason}, status_code=status)


def refused(ctx: ServeContext, source: str, exc: Refused, request: Request) -> JSONResponse:
    """A delivery refused (401, 413, 400): counted and logged with the reason (never a secret or signature)."""
    ctx.metrics.webhooks.labels(source, exc.outcome).inc()
    client = request.client.host if request.client else None
    emit("webhook.rejected", {"source": source, "status": exc.status, "reason": exc.reason, "client": client})
    return JSONResponse({"detail": exc.reason}, status_code=exc.status)


async def read_body(request: Request, cap: int) -> bytes:
    """The raw body, refusing more than `cap` bytes whether or not Content-Length tells the truth."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "bad_request", "Content-Length is not a number")
        if int(declared) > cap:
            raise Refused(413, "too_large", f"body over {cap} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise Refused(413, "too_large", f"body over {cap} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # gone before the body was whole (e.g. cut off as too slow): nobody to answer
        raise Refused(400, "bad_request", "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def nesting_depth(body: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep arrays and objects nest in a JSON text, counting no further than `limit` + 1. Brackets
    inside strings do not count. Linear in the number of quotes, escapes and brackets."""
    depth = deepest = 0
    in_string = False
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if token == b'"':
            in_string = not in_string
        elif in_string or len(token) == 2:
            continue
        elif token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        else:
            depth -= 1
    return deepest


def payload_of(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """The JSON payload; GitHub's form encoding (`payload=<json>`) is accepted too."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        body = form.get("payload", [""])[0].encode("utf-8")
    if nesting_depth(body) > MAX_DEPTH:
        raise Refused(400, "bad_request", f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Refused(400, "bad_request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "bad_request", "the body is not a JSON object")
    return data


def status_only(commits: Any) -> bool:
    """Every pushed commit is a reconciler status commit (no loops); a capped list proves nothing."""
    if not isinstance(commits, list) or not commits or len(commits) >= 20:
        return False
    messages = [c.get("message") if isinstance(c, dict) else None for c in commits]
    return all(isinstance(m, str) and m.startswith("status:") and "Reconciler-Build:" in m for m in messages)


def push_decision(ctx: ServeContext, ref: Any, deleted: bool, commits: Any) -> tuple[bool, str]:
    wanted = f"refs/heads/{ctx.cache.branch}"
    if not isinstance(ref, str):
        return False, "push without a ref"
    if ref.startswith("refs/tags/"):
        return False, f"tag {ref.removeprefix('refs/tags/')}: tags start nothing"
    if ref != wanted:
        return False, f"push to {ref}, not the deployment branch {wanted}"
    if deleted:
        return False, "the deployment branch was deleted"
    if status_only(commits):
        return False, "status commits only"
    return True, f"push to {wanted}"


def trigger(ctx: ServeContext, source: str, reason: str) -> JSONResponse:
    queued = ctx.runner.trigger(f"{source}: {reason}")
    note = "a reconcile pass is queued" if queued else "joins the pass already queued"
    return answer(ctx, source, 202, "triggered", f"{reason}: {note}")


@router.post("/webhooks/github", status_code=202, responses=_RESPONSES, openapi_extra=_BODY,
             summary="GitHub webhook (X-Hub-Signature-256)")
async def github(request: Request) -> JSONResponse:
    ctx = context(request)
    try:
        if not ctx.secret:
            raise Refused(401, "unauthorized", "webhooks are disabled: RECONCILER_WEBHOOK_SECRET is not set")
        body = await read_body(request, ctx.max_body)
        given = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(ctx.secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("ascii")):
            raise Refused(401, "unauthorized", "missing or bad X-Hub-Signature-256")
        event = request.headers.get("x-github-event")
        if not event:
            raise Refused(400, "bad_request", "missing X-GitHub-Event")
        payload = payload_of(body, request.headers.get("content-type", "application/json"))
    except Refused as exc:
        return refused(ctx, "github", exc, request)
    delivery = request.headers.get("x-github-delivery")
    if delivery and ctx.deliveries.seen(f"github:{delivery}"):
        return answer(ctx, "github", 200, "duplicate", f"delivery {delivery} was already handled")
    if event == "ping":
        return answer(ctx, "github", 200, "pong", "webhook is set up")
    if event != "push":
        return answer(ctx, "github", 200, "ignored", f"{event} events start nothing")
    deleted = payload.get("deleted") is True
    run, reason = push_decision(ctx, payload.get("ref"), deleted, payload.get("commits"))
    return trigger(ctx, "github", reason) if run else answer(ctx, "github", 200, "ignored", reason)


@router.post("/webhooks/gitlab", status_code=202, responses=_RESPONSES, openapi_extra=_BODY,
             summary="GitLab webhook (X-Gitlab-Token)")
async def gitlab(request: Request) -> JSONResponse:
    ctx = context(request)
    try:
        if not ctx.secret:
            raise Refused(401, "unauthorized", "webhooks are disabled: RECONCILER_WEBHOOK_SECRET is not set")
        body = await read_body(request, ctx.max_body)
        given = request.headers.get("x-gitlab-token", "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), ctx.secret.encode("utf-8")):
            raise Refused(401, "unauthorized", "missing or bad X-Gitlab-Token")
        payload = payload_of(body)
    except Refused as exc:
        return refused(ctx, "gitlab", exc, request)
    # Idempotency-Key is the same on a retry (GitLab 17.4+); older versions send the event's UUID
    delivery = request.headers.get("idempotency-key") or request.headers.get("x-gitlab-event-uuid")
    if delivery and ctx.deliveries.seen(f"gitlab:{delivery}"):
        return answer(ctx, "gitlab", 200, "duplicate", f"delivery {delivery} was already handled")
    kind = payload.get("object_kind")
    if kind != "push":
        return answer(ctx, "gitlab", 200, "ignored", f"{kind or 'unknown'} events start nothing")
    deleted = payload.get("after") == ZERO_SHA
    run, reason = push_decision(ctx, payload.get("ref"), deleted, payload.get("commits"))
    return trigger(ctx, "gitlab", reason) if run else answer(ctx, "gitlab", 200, "ignored", reason)
