"""The `http` driver: one deployment per user and definition on an HTTP target (SPEC section 6).

The contract with the target (the README's "HTTP contract" is the reference):
- `PUT {url}/users/{user}/definitions/{definition}` with a JSON body (see `payload`); any 2xx is
  success: `DEPLOYED`, or `UNCHANGED` when the response body is a JSON object with `"changed": false`.
- `DELETE` the same URL: 2xx is `DESTROYED` (`UNCHANGED` with `"changed": false`), 404 is `UNCHANGED`.
- `GET` the same URL: 200 with the stored deployment (the PUT body's `assets`, `binary_assets`,
  `parameters`), or 404 when nothing is deployed; `PLAN` diffs it against the rendered content.
- Every request carries `Idempotency-Key: <build_id>:<user>:<request hash>` (the same for every retry
  of one request, also after a crash and resume of the build; different for a different request of
  the same build and user, e.g. a second block) and, with `auth`, a bearer token.
- Connection errors, timeouts, 429 and 5xx are retried `retries` times with exponential backoff and
  jitter (429/503 honour `Retry-After`, capped); other 4xx fail at once.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from reconciler import __version__
from reconciler.core.render import as_text
from reconciler.core.settings import Settings
from reconciler.core.timeutil import utcnow
from reconciler.drivers.base import DeployRequest, Driver, DriverContext, Outcome, SettingsProblem

BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0  # a target asking for a longer pause gets this much, then the next attempt
MAX_BODY = 1 << 20  # bytes of a response read; the rest is ignored
LOG_BODY = 2000  # characters of a response body shown in the build log


class TargetError(Exception):
    """The target could not be reached or kept failing after every retry."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8")) if self.body.strip() else None
        except (UnicodeDecodeError, ValueError):
            return None

    def summary(self, clip: Callable[[str, int], str]) -> str:
        """Status and body for the log: the body masked whole, then cut (`DriverContext.clip`)."""
        text = self.body.decode("utf-8", "replace").strip()
        shown = clip(text, LOG_BODY)
        if len(text) > LOG_BODY and shown.endswith("..."):
            shown += f" ({len(self.body)} bytes)"
        return f"{self.status} {self.reason}" + (f": {shown}" if shown else "")


def payload(request: DeployRequest) -> dict[str, Any]:
    """The PUT body: text assets as UTF-8 strings, binary assets base64-encoded, resolved parameters."""
    assets: dict[str, str] = {}
    binary: dict[str, str] = {}
    for rel, data in sorted(request.assets.items()):
        text = as_text(data)
        if text is None:
            binary[rel] = base64.b64encode(data).decode("ascii")
        else:
            assets[rel] = text
    return {
        "job": request.job,
        "build_id": request.build_id,
        "action": request.action,
        "definition": request.definition.name,
        "module_type": request.definition.module_type,
        "server": request.server.name,
        "environment": request.server.environment,
        "organization": request.server.organization,
        "user": request.user.id,
        "content_digest": request.content_digest,
        "assets": assets,
        "binary_assets": binary,
        "parameters": request.parameters,
    }


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retrying clients spread out."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "connection dropped by the target"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


class HttpDriver(Driver):
    #: PUT replaces the whole deployment and carries an Idempotency-Key, so re-applying is harmless
    idempotent_apply = True

    def __init__(self, settings: dict[str, Any], context: DriverContext) -> None:
        super().__init__(settings, context)
        self.base = str(settings["url"]).rstrip("/")
        self.timeout = float(settings.get("timeout", 30))
        self.retries = int(settings.get("retries", 3))
        self.token: str | None = None
        self.auth_problem: str | None = None
        auth = settings.get("auth")
        if isinstance(auth, dict):
            name = str(auth.get("secret"))
            value = context.env.get(name)
            if value is None:
                self.auth_problem = f"auth secret {name} is not set in the reconciler's environment"
            else:
                self.token = value
                context.add_secret(value)
                context.add_secret(json.dumps(value)[1:-1])  # as a target would echo it inside JSON

    @classmethod
    def settings_problems(cls, settings: dict[str, Any], repo: Settings) -> list[SettingsProblem]:
        problems: list[SettingsProblem] = []
        auth = settings.get("auth")
        name = auth.get("secret") if isinstance(auth, dict) else None
        if isinstance(name, str) and not repo.secret_allowed(name):
            problems.append((("auth", "secret"), f"secret {name!r} does not start with an allowed prefix "
                             f"({', '.join(repo.secret_prefixes)}); rename the variable or add its prefix "
                             "to secret_prefixes in reconciler.yaml", "SECRET_PREFIX"))
        url = settings.get("url")
        if isinstance(url, str):
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError as exc:
                problems.append((("url",), f"url {url!r} is not valid: {exc}", "DRIVER_SETTINGS"))
                return problems
            if parts.username is not None or parts.password is not None:
                problems.append((("url",), "the url must not carry credentials; use `auth: {secret: "
                                 "ENV_NAME}`", "SECRET_REQUIRED"))
            if not parts.hostname:
                problems.append((("url",), f"url {url!r} has no host", "DRIVER_SETTINGS"))
            if parts.query or parts.fragment:
                problems.append((("url",), f"url {url!r} must not have a query or fragment: the driver "
                                 "appends /users/<user>/definitions/<definition>", "DRIVER_SETTINGS"))
        return problems

    # -- transport -------------------------------------------------------------------------------
    def _path(self, request: DeployRequest) -> str:
        return (f"{self.base}/users/{quote(request.user.id, safe='')}"
                f"/definitions/{quote(request.definition.name, safe='')}")

    def _headers(self, request: DeployRequest, method: str, url: str, data: bytes | None) -> dict[str, str]:
        what = hashlib.sha256(f"{method} {url}\n".encode() + (data or b"")).hexdigest()[:16]
        headers = {
            "Accept": "application/json",
            "User-Agent": f"reconciler/{__version__}",
            "Idempotency-Key": f"{request.build_id}:{request.user.id}:{what}",
        }
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _once(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Response:
        parts = urlsplit(url)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            conn.request(method, parts.path or "/", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_BODY)
            return Response(resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def _request(self, method: str, request: DeployRequest, body: Any = None) -> Response:
        """Send with retries; returns the first response that is not retryable, else raises TargetError."""
        url = self._path(request)
        data = None if body is None else json.dumps(body, sort_keys=True).encode("utf-8")
        headers = self._headers(request, method, url, data)
        if data is not None:
            headers["Content-Type"] = "application/json"
        uid = request.user.id
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            try:
                resp = self._once(method, url, data, headers)
            except ssl.SSLCertVerificationError as exc:  # retrying cannot fix a certificate
                raise TargetError(f"{method} {url}: TLS certificate not trusted: {exc.verify_message}") \
                    from None
            except (OSError, http.client.HTTPException) as exc:
                problem = _describe(exc, self.timeout)
                delay = backoff(attempt)
                request.log(f"{uid}: {method} {url}: {problem}")
            else:
                request.log(f"{uid}: {method} {url} -> {resp.summary(self.context.clip)}")
                if resp.status != 429 and resp.status < 500:
                    return resp
                problem = f"HTTP {resp.status} {resp.reason}"
                waited = retry_after(resp.headers.get("retry-after"))
                delay = waited if waited is not None else backoff(attempt)
            if attempt + 1 < attempts:
                request.log(f"{uid}: retry {attempt + 1} of {self.retries} in {delay:.1f} s")
                time.sleep(delay)
        plural = "s" if attempts > 1 else ""
        raise TargetError(f"{method} {url}: {problem} (after {attempts} attempt{plural})")

    def _call(self, method: str, request: DeployRequest, body: Any = None) -> Response | Outcome:
        if self.auth_problem is not None:
            return Outcome("FAILED", self.auth_problem)
        try:
            return self._request(method, request, body)
        except TargetError as exc:
            return Outcome("FAILED", str(exc))

    @staticmethod
    def _refused(method: str, resp: Response) -> Outcome:
        hint = " (redirects are not followed: fix the url)" if 300 <= resp.status < 400 else ""
        return Outcome("FAILED", f"{method} refused by the target: HTTP {resp.status} {resp.reason}{hint}")

    # -- actions ---------------------------------------------------------------------------------
    def apply(self, request: DeployRequest) -> Outcome:
        resp = self._call("PUT", request, payload(request))
        if isinstance(resp, Outcome):
            return resp
        if not 200 <= resp.status < 300:
            return self._refused("PUT", resp)
        data = resp.json()
        if isinstance(data, dict) and data.get("changed") is False:
            return Outcome("UNCHANGED", "the target already had this deployment")
        return Outcome("DEPLOYED", f"{len(request.assets)} file(s) deployed (HTTP {resp.status})")

    def destroy(self, request: DeployRequest) -> Outcome:
        resp = self._call("DELETE", request)
        if isinstance(resp, Outcome):
            return resp
        if resp.status == 404:
            return Outcome("UNCHANGED", "nothing was deployed")
        if not 200 <= resp.status < 300:
            return self._refused("DELETE", resp)
        data = resp.json()
        if isinstance(data, dict) and data.get("changed") is False:
            return Outcome("UNCHANGED", "nothing was deployed")
        return Outcome("DESTROYED", f"deployment removed (HTTP {resp.status})")

    def plan(self, request: DeployRequest) -> Outcome:
        resp = self._call("GET", request)
        if isinstance(resp, Outcome):
            return resp
        current: dict[str, Any] = {}
        if resp.status != 404:
            if resp.status != 200:
                return self._refused("GET", resp)
            data = resp.json()
            if not isinstance(data, dict):
                return Outcome("FAILED", "GET answered 200 without a JSON object")
            current = data
        wanted = payload(request)
        existing = _files(current)
        files = _files(wanted)
        added = sorted(set(files) - set(existing))
        removed = sorted(set(existing) - set(files))
        changed = sorted(k for k in set(files) & set(existing) if files[k] != existing[k])
        uid = request.user.id
        for label, names in (("add", added), ("change", changed), ("remove", removed)):
            for name in names:
                request.log(f"plan {uid}: would {label} {name}")
        old_params = current.get("parameters") if isinstance(current.get("parameters"), dict) else {}
        assert isinstance(old_params, dict)
        params = sorted(k for k in set(old_params) | set(request.parameters)
                        if old_params.get(k) != request.parameters.get(k))
        if params and current:
            request.log(f"plan {uid}: parameters would change: {', '.join(params)}")
        extra = f", parameters change ({', '.join(params)})" if params and current else ""
        counts = f"{len(added)} to add, {len(changed)} to change, {len(removed)} to remove"
        return Outcome("PLANNED", counts + extra)


def _files(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path -> (kind, data) for the text and binary assets of a stored or wanted deployment."""
    found: dict[str, tuple[str, str]] = {}
    for key, kind in (("assets", "text"), ("binary_assets", "base64")):
        value = deployment.get(key)
        if isinstance(value, dict):
            found.update({str(k): (kind, str(v)) for k, v in value.items()})
    return found
