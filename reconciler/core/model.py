"""Typed desired state: servers, definitions and jobs, built from files that passed their schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from functools import cached_property
from typing import Any

ACTIONS = ("PLAN", "APPLY-AUTO", "DESTROY")
POLICIES = ("skip", "force", "abort")


@dataclass(frozen=True)
class SecretRef:
    """A token value read from the reconciler's environment at run time: `{secret: ENV_NAME}`."""

    env: str


TokenValue = str | int | float | bool | SecretRef


def token_value(raw: Any) -> TokenValue:
    if isinstance(raw, dict):
        return SecretRef(str(raw["secret"]))
    assert isinstance(raw, (str, int, float, bool))  # a tuple: checked 100,000s of times by a cold load
    return raw


@dataclass(frozen=True)
class User:
    id: str
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Server:
    name: str
    path: str
    environment: str
    organization: str
    driver: dict[str, Any]
    users: tuple[User, ...]
    description: str = ""
    max_parallel: int | None = None  # users deployed at once on this server, across the jobs of a pass

    @property
    def driver_type(self) -> str:
        return str(self.driver["type"])

    @cached_property  # built once per server, not once per block that names it
    def user_ids(self) -> tuple[str, ...]:
        return tuple(u.id for u in self.users)

    @cached_property
    def _by_id(self) -> dict[str, User]:
        return {u.id: u for u in self.users}

    def user(self, uid: str) -> User:
        """A user by id in O(1): a block may have 10,000 users."""
        return self._by_id[uid]


@dataclass(frozen=True)
class TokenDecl:
    name: str
    kind: str  # "content" | "parameter"
    type: str = "string"
    default: Any = None
    has_default: bool = False
    enum: tuple[Any, ...] | None = None
    pattern: str | None = None
    secret: bool = False
    description: str = ""


@dataclass(frozen=True)
class Definition:
    name: str
    path: str
    module_type: str
    description: str
    content: str | None
    content_tokens: tuple[TokenDecl, ...]
    parameter_tokens: tuple[TokenDecl, ...]

    def token(self, kind: str, name: str) -> TokenDecl | None:
        decls = self.content_tokens if kind == "content" else self.parameter_tokens
        for decl in decls:
            if decl.name == name:
                return decl
        return None


@dataclass(frozen=True)
class UserTokens:
    content_tokens: dict[str, TokenValue] = field(default_factory=dict)
    parameter_tokens: dict[str, TokenValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Amount:
    """A number of users, or a percentage of a block's recipients (`3`, `"10%"`)."""

    value: Fraction
    percent: bool

    @classmethod
    def parse(cls, raw: int | str) -> Amount:
        if isinstance(raw, str) and raw.endswith("%"):
            return cls(Fraction(raw[:-1]), True)
        return cls(Fraction(int(raw)), False)

    def of(self, total: int) -> Fraction:
        """The exact number of users this amounts to among `total` recipients (not rounded)."""
        return self.value * total / 100 if self.percent else self.value

    def __str__(self) -> str:
        number = str(self.value) if self.value.denominator == 1 else f"{float(self.value):g}"
        return f"{number}%" if self.percent else number


@dataclass(frozen=True)
class Rollout:
    """`rollout:` of a block: cumulative waves and the failure budget (see reconciler.core.rollout)."""

    waves: tuple[Amount, ...]
    max_failures: Amount = Amount(Fraction(0), False)


def rollout_from_data(raw: dict[str, Any] | None) -> Rollout | None:
    if raw is None:
        return None
    return Rollout(tuple(Amount.parse(w) for w in raw["waves"]), Amount.parse(raw.get("max_failures", 0)))


@dataclass(frozen=True)
class Block:
    index: int
    definition: str
    server: str
    action: str
    users: str | tuple[str, ...]  # "all" or explicit ids
    content_tokens: dict[str, TokenValue]
    parameter_tokens: dict[str, TokenValue]
    user_tokens: dict[str, UserTokens]
    rollout: Rollout | None = None


@dataclass(frozen=True)
class Job:
    name: str
    path: str
    blob: str
    description: str
    on_failure: str
    run_at: datetime | None
    suspend: bool
    retry_of: str | None
    blocks: tuple[Block, ...]
    spec_digest: str
    after: tuple[str, ...] = ()  # jobs that must end SUCCESS before this one is claimed


def recipients(block: Block, server: Server) -> list[str]:
    """The users a block deploys to, in recipient order."""
    return list(server.user_ids) if block.users == "all" else list(block.users)


def block_from_data(index: int, raw: dict[str, Any]) -> Block:
    users_raw = raw["users"]
    return Block(
        index=index,
        definition=raw["definition"],
        server=raw["server"],
        action=raw.get("action", "APPLY-AUTO"),
        users="all" if users_raw == "all" else tuple(users_raw),
        content_tokens={k: token_value(v) for k, v in (raw.get("content_tokens") or {}).items()},
        parameter_tokens={k: token_value(v) for k, v in (raw.get("parameter_tokens") or {}).items()},
        user_tokens={
            uid: UserTokens(
                {k: token_value(v) for k, v in (ov.get("content_tokens") or {}).items()},
                {k: token_value(v) for k, v in (ov.get("parameter_tokens") or {}).items()},
            )
            for uid, ov in (raw.get("user_tokens") or {}).items()
        },
        rollout=rollout_from_data(raw.get("rollout")),
    )


def server_from_data(name: str, path: str, raw: dict[str, Any]) -> Server:
    return Server(
        name=name,
        path=path,
        environment=raw["environment"],
        organization=raw["organization"],
        driver=dict(raw["driver"]),
        users=tuple(User(u["id"], u.get("name"), u.get("email")) for u in raw["users"]),
        description=raw.get("description", ""),
        max_parallel=raw.get("max_parallel"),
    )


def definition_from_data(name: str, path: str, raw: dict[str, Any]) -> Definition:
    def decl(kind: str, item: dict[str, Any]) -> TokenDecl:
        return TokenDecl(
            name=item["name"],
            kind=kind,
            type=item.get("type", "string"),
            default=item.get("default"),
            has_default="default" in item,
            enum=tuple(item["enum"]) if "enum" in item else None,
            pattern=item.get("pattern"),
            secret=bool(item.get("secret", False)),
            description=item.get("description", ""),
        )

    return Definition(
        name=name,
        path=path,
        module_type=raw["module_type"],
        description=raw.get("description", ""),
        content=raw.get("content"),
        content_tokens=tuple(decl("content", t) for t in raw.get("content_tokens", [])),
        parameter_tokens=tuple(decl("parameter", t) for t in raw.get("parameter_tokens", [])),
    )
