"""Secrets before claims (SPEC 9.1 rule 10): which variables a job reads, and whether they are usable.

Pure. The plan never sees a secret value: callers hand it `SecretEnv`, the *lengths* of the
variables set in the reconciler's environment, built once at the edge with `SecretEnv.of(env)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.model import Job, SecretRef, Server

#: a shorter value cannot be masked reliably in logs (rule 11): it is refused like an unset one
MIN_SECRET_LENGTH = 8
SECRET_CODES = frozenset({"SECRET_UNSET", "SECRET_TOO_SHORT"})


@dataclass(frozen=True)
class SecretEnv:
    """Name -> length of every variable set in an environment. Never a value."""

    lengths: Mapping[str, int]

    @classmethod
    def of(cls, env: Mapping[str, str]) -> SecretEnv:
        return cls({name: len(value) for name, value in env.items()})

    def problem(self, name: str) -> tuple[str, str] | None:
        """(code, why) when `name` cannot be used as a secret, else None."""
        length = self.lengths.get(name)
        if length is None:
            return "SECRET_UNSET", "is not set"
        if length < MIN_SECRET_LENGTH:
            return "SECRET_TOO_SHORT", (f"is shorter than {MIN_SECRET_LENGTH} characters, too short to be "
                                        "masked reliably in logs")
        return None


@dataclass(frozen=True)
class SecretUse:
    """One place a job reads an environment variable."""

    block: int
    where: str  # e.g. "content token 'password'", "user u1's parameter token 'key'", "server srv driver auth"
    env: str


def driver_secret_refs(settings: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(key path, variable) of every `{secret: NAME}` mapping in a server's driver settings (http `auth`,
    and the same form in any plugin's settings)."""
    if isinstance(settings, dict):
        if set(settings) == {"secret"} and isinstance(settings["secret"], str):
            yield path, settings["secret"]
            return
        for key, value in settings.items():
            yield from driver_secret_refs(value, (*path, str(key)))
    elif isinstance(settings, list):
        for i, value in enumerate(settings):
            yield from driver_secret_refs(value, (*path, str(i)))


def secret_uses(job: Job, servers: Mapping[str, Server]) -> list[SecretUse]:
    """Every variable the job's blocks read: block values, per-user overrides, content and parameter
    tokens, and the driver settings of each block's server."""
    uses: list[SecretUse] = []
    for block in job.blocks:
        for kind, values in (("content", block.content_tokens), ("parameter", block.parameter_tokens)):
            uses += [SecretUse(block.index, f"{kind} token {name!r}", v.env)
                     for name, v in values.items() if isinstance(v, SecretRef)]
        for uid, override in block.user_tokens.items():
            for kind, values in (("content", override.content_tokens), ("parameter", override.parameter_tokens)):
                uses += [SecretUse(block.index, f"user {uid}'s {kind} token {name!r}", v.env)
                         for name, v in values.items() if isinstance(v, SecretRef)]
        server = servers.get(block.server)
        if server is not None:
            uses += [SecretUse(block.index, f"server {server.name!r} driver setting {'.'.join(path)}", env)
                     for path, env in driver_secret_refs(server.driver)]
    return uses


def unusable_secrets(job: Job, servers: Mapping[str, Server], env: SecretEnv) -> list[tuple[str, str]]:
    """(code, message) for every variable of the job that is unset or too short; one per (block, variable)."""
    found: dict[tuple[int, str], tuple[str, str]] = {}
    for use in secret_uses(job, servers):
        problem = env.problem(use.env)
        if problem is None or (use.block, use.env) in found:
            continue
        code, why = problem
        found[(use.block, use.env)] = (code, (
            f"job {job.name!r} blocks[{use.block}] ({use.where}) reads secret {use.env}, which {why} here: it "
            f"must be set on the reconciler (at least {MIN_SECRET_LENGTH} characters) before the job is claimed; "
            "until then it stays PENDING"))
    return list(found.values())
