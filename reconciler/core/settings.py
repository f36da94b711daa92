"""Repo settings (`reconciler.yaml`), validated against the shipped settings schema."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from reconciler.core.files import SETTINGS_FILE, TOP_DIRS
from reconciler.core.freeze import FreezeWindow, window_from_data
from reconciler.core.problems import Problem
from reconciler.core.resources import Parsed, parse_resource

NOTIFY_EVENTS = ("job.claimed", "job.finished", "job.failed", "job.blocked")
NOTIFY_FORMATS = ("json", "slack", "github-status")
# keys whose change in a pull request changes how every later job runs (SPEC 9.1 rule 14; 9.4 adds the last two)
HOW_JOBS_RUN = ("branch", "remote", "secret_prefixes", "commit_author", "freeze", "notify")


@dataclass(frozen=True)
class NotifyTarget:
    """One `notify:` entry. Secrets are environment variable names, read only when delivering."""

    url: str  # the literal URL, or "" when `url_secret` names the variable holding it
    events: tuple[str, ...]
    format: str = "json"
    secret: str | None = None  # json: the HMAC key; github-status: the API token
    url_secret: str | None = None
    repository: str | None = None  # github-status: OWNER/REPO
    page_url: str | None = None  # base URL of `reconciler serve`, for links

    def secret_names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.url_secret, self.secret) if n)

    def where(self) -> str:
        """The URL as it may be shown (a URL kept in a secret is shown by its variable's name)."""
        return self.url or f"{{secret: {self.url_secret}}}"


@dataclass(frozen=True)
class ExecutorConfig:
    """Where user deployments run (`executor:` in reconciler.yaml, `--executor`/`--broker` flags): `thread`,
    the in-process pool (default), or `celery`, fleet workers over a Redis broker (SPEC 9.3)."""

    type: str = "thread"
    broker: str | None = None  # redis://host:port/db; a URL with a password comes from a flag or the environment


@dataclass(frozen=True)
class Settings:
    branch: str | None = None
    remote: str | None = None
    ledger_dir: str = "status"
    commit_name: str = "reconciler[bot]"
    commit_email: str = "reconciler@localhost"
    concurrency: int = 4
    job_concurrency: int = 4
    checkpoint_seconds: float = 2.0
    on_interrupt: str = "resume"
    lease_seconds: int = 600
    secret_prefixes: tuple[str, ...] = ("DEPLOY_SECRET_",)
    freeze: tuple[FreezeWindow, ...] = ()
    notify: tuple[NotifyTarget, ...] = ()
    executor: ExecutorConfig = ExecutorConfig()

    def override(self, **flags: Any) -> Settings:
        """Command-line flags win over the file; None means 'not given'."""
        return replace(self, **{k: v for k, v in flags.items() if v is not None})

    def secret_allowed(self, env_name: str) -> bool:
        return any(env_name.startswith(prefix) for prefix in self.secret_prefixes)


def parse_settings(raw: bytes | None) -> tuple[Settings, list[Problem]]:
    if raw is None:
        return Settings(), []
    parsed = parse_resource("settings", raw)
    if parsed.data is None and parsed.doc is not None and not parsed.findings[0].message.startswith("a settings"):
        return Settings(), []  # an empty settings file means all defaults
    problems = [Problem(SETTINGS_FILE, f.line, f.message, f.code) for f in parsed.findings]
    data = parsed.data
    if not problems and data.get("ledger_dir") in TOP_DIRS:
        line = parsed.doc.line_of(("ledger_dir",)) if parsed.doc else 1
        problems.append(Problem(SETTINGS_FILE, line, f"ledger_dir cannot be {data['ledger_dir']!r}: that folder holds "
                                "desired state; the ledger needs a folder of its own (default: status)", "SCHEMA"))
    schema_ok = not problems
    prefixes = tuple(data.get("secret_prefixes", ["DEPLOY_SECRET_"])) if schema_ok else ()
    freeze = _freeze(data, parsed, problems) if schema_ok else ()
    notify = _notify(data, parsed, prefixes, problems) if schema_ok else ()
    if schema_ok and (executor_problem := _executor_problem(parsed, data.get("executor"))):
        problems.append(executor_problem)
    if problems:
        return Settings(), problems
    author = data.get("commit_author") or {}
    return (
        Settings(
            branch=data.get("branch"),
            remote=data.get("remote"),
            ledger_dir=data.get("ledger_dir", "status"),
            commit_name=author.get("name", Settings.commit_name),
            commit_email=author.get("email", Settings.commit_email),
            concurrency=data.get("concurrency", 4),
            job_concurrency=data.get("job_concurrency", 4),
            checkpoint_seconds=float(data.get("checkpoint_seconds", 2.0)),
            on_interrupt=data.get("on_interrupt", "resume"),
            lease_seconds=data.get("lease_seconds", 600),
            secret_prefixes=prefixes,
            freeze=freeze,
            notify=notify,
            executor=_executor(data.get("executor")),
        ),
        [],
    )


def _line(parsed: Parsed, path: tuple[Any, ...]) -> int | None:
    return parsed.doc.line_of(path) if parsed.doc else 1


def _freeze(data: dict[str, Any], parsed: Parsed, problems: list[Problem]) -> tuple[FreezeWindow, ...]:
    windows = []
    for index, raw in enumerate(data.get("freeze", [])):
        window, error, key = window_from_data(raw)
        if window is None:
            problems.append(Problem(SETTINGS_FILE, _line(parsed, ("freeze", index, *key)), str(error), "SCHEMA"))
        else:
            windows.append(window)
    return tuple(windows)


def _notify(data: dict[str, Any], parsed: Parsed, prefixes: tuple[str, ...],
            problems: list[Problem]) -> tuple[NotifyTarget, ...]:
    targets = []
    for index, raw in enumerate(data.get("notify", [])):
        url, secret = raw["url"], raw.get("secret")
        for key, value in (("url", url), ("secret", secret)):
            if isinstance(value, dict) and not any(value["secret"].startswith(p) for p in prefixes):
                problems.append(Problem(
                    SETTINGS_FILE, _line(parsed, ("notify", index, key, "secret")),
                    f"secret {value['secret']!r} is not allowed: secret variables must start with "
                    f"{' or '.join(prefixes)}", "SECRET_PREFIX"))
        targets.append(NotifyTarget(
            url=url if isinstance(url, str) else "", events=tuple(raw["events"]), format=raw.get("format", "json"),
            secret=secret["secret"] if secret else None,
            url_secret=url["secret"] if isinstance(url, dict) else None,
            repository=raw.get("repository"), page_url=raw.get("page_url")))
    return tuple(targets)


# -- executor (fleet mode, SPEC 9.3) ----------------------------------------------------------------------

def _executor(raw: dict[str, Any] | None) -> ExecutorConfig:
    if not raw:
        return ExecutorConfig()
    return ExecutorConfig(type=raw.get("type", "thread"), broker=raw.get("broker"))


def _executor_problem(parsed: Any, raw: dict[str, Any] | None) -> Problem | None:
    """A broker URL is committed with the settings: it must not carry a password."""
    broker = (raw or {}).get("broker")
    if not isinstance(broker, str) or not urlsplit(broker).password:
        return None
    line = parsed.doc.line_of(("executor", "broker")) if parsed.doc else 1
    return Problem(SETTINGS_FILE, line, "executor.broker must not contain a password (reconciler.yaml is committed); "
                   "give the URL with its password in RECONCILER_BROKER_URL or --broker instead", "SECRET_IN_SETTINGS")
