"""Repo settings (`reconciler.yaml`), validated against the shipped settings schema."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from reconciler.core.files import SETTINGS_FILE, TOP_DIRS
from reconciler.core.problems import Problem
from reconciler.core.resources import parse_resource


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
            secret_prefixes=tuple(data.get("secret_prefixes", ["DEPLOY_SECRET_"])),
        ),
        [],
    )
