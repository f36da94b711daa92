"""The driver interface. Only the engine calls drivers; only drivers touch deployment targets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from reconciler.core.model import Definition, Server, User
from reconciler.core.redact import Redactor
from reconciler.core.settings import Settings
from reconciler.core.validate import SettingsProblem as SettingsProblem  # re-exported for plugins


@dataclass(frozen=True)
class DeployRequest:
    """Everything a driver needs to act for one user. `parameters` holds resolved secrets."""

    job: str
    build_id: str
    action: str
    server: Server
    definition: Definition
    user: User
    assets: dict[str, bytes]
    content_digest: str
    parameters: dict[str, Any]
    public_parameters: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)  # every token as text (content and parameter)
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Outcome:
    status: str  # DEPLOYED | UNCHANGED | PLANNED | DESTROYED | FAILED
    reason: str = ""


def _ignore_secret(secret: str) -> None:
    return None


@dataclass(frozen=True)
class DriverContext:
    repo_root: Path
    content_root: Path | None  # where the definition content is checked out, for drivers that need files
    env: dict[str, str]
    #: private scratch space under `.git/reconciler/` (never the working tree); None outside a reconcile pass
    work_root: Path | None = None
    #: registers a value (e.g. an auth token read from `env`) with the build's redactor before it is used
    add_secret: Callable[[str], None] = _ignore_secret
    #: the build's redactor, for text a driver cuts short (`clip`: mask first, then cut); None: the one
    #: `add_secret` belongs to, if any
    redactor: Redactor | None = None

    def clip(self, text: str, limit: int) -> str:
        """`text` masked whole, then cut to `limit` characters without leaving the start of a secret."""
        redactor = self.redactor or getattr(self.add_secret, "__self__", None)
        if not isinstance(redactor, Redactor):
            redactor = Redactor()
        return redactor.clip(text, limit)


class Driver(ABC):
    """Runs one action for one user. Raise nothing for target errors: return a FAILED outcome."""

    #: whether re-running `apply` for a user already deployed is harmless (crash recovery relies on it)
    idempotent_apply: ClassVar[bool] = True
    #: whether a call is short and in-process (no network, no child process to wait for): the thread executor
    #: then runs it on the build's own thread, one user at a time, where handing it to a pool thread would
    #: cost more than the call (16 pool threads doing file writes contend for the interpreter); a call slower
    #: than `run.executors.INLINE_MAX_SECONDS` sends the driver back to the pool
    inline_calls: ClassVar[bool] = False

    def __init__(self, settings: dict[str, Any], context: DriverContext) -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def settings_problems(cls, settings: dict[str, Any], repo: Settings) -> list[SettingsProblem]:
        """Extra checks of the driver settings beyond the server schema."""
        return []

    @abstractmethod
    def plan(self, request: DeployRequest) -> Outcome: ...

    @abstractmethod
    def apply(self, request: DeployRequest) -> Outcome: ...

    @abstractmethod
    def destroy(self, request: DeployRequest) -> Outcome: ...

    def run(self, request: DeployRequest) -> Outcome:
        if request.action == "PLAN":
            return self.plan(request)
        if request.action == "DESTROY":
            return self.destroy(request)
        return self.apply(request)
