"""Where user deployments run: the engine hands each user to an executor and gets an Outcome back.

The engine keeps everything else: claims, epochs, started markers, the failure policy,
checkpoints and the final record. An executor only runs "this user's deployment" somewhere:
- `ThreadExecutor` (the default): in this process, on a thread pool, with the engine's own
  prepared request for the user;
- `reconciler.run.fleet.CeleryExecutor` (extra `fleet`): on Celery workers over Redis, which read
  the claimed commit themselves and guard each user with a fence in Redis.

Both call `on_done(task, outcome)` from a thread of their own once a user's deployment finished
(or failed to start). `resume` tells a recovering build what an executor knows of users a
previous owner had handed out, so nothing is run twice that a fence says ran or is running.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from reconciler.core.settings import ExecutorConfig
from reconciler.drivers.base import Outcome
from reconciler.errors import EXIT_USAGE, UserError


@dataclass(frozen=True)
class UserTask:
    """One user's deployment, as the engine hands it out. Everything a remote worker needs to find
    and run it from the deployment repo's remote: no rendered content, no secret."""

    job: str
    build_id: str
    epoch: int
    block: int  # index of the block in the job
    user: str
    desired_commit: str  # the claimed commit: servers, definitions and the job are read from it
    server: str
    driver_type: str
    action: str
    idempotent: bool  # the driver absorbs a second run of the same deployment

    @property
    def key(self) -> str:
        """Epoch-independent identity of the deployment (a takeover does not make it a new one)."""
        return f"{self.build_id}/{self.block}/{self.user}"


OnDone = Callable[[UserTask, Outcome], None]
Known = Outcome | Literal["running"] | None  # finished (its outcome), still running elsewhere, or unknown


class ExecutorUnavailable(UserError):
    """The executor cannot take or report work now (e.g. the fleet broker cannot be reached). Nothing was
    lost: the engine stops dispatching, keeps the build WORKING (recoverable) and ends the pass with this
    one-line message (exit 2; a UserError, so even uncaught it is one line, never a traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class Executor(Protocol):
    #: True when the executor guarantees at most once per user by a fence of its own, so a recovering build
    #: may re-submit a user that has a git `started` marker but no fence (`resume` answered None); the
    #: thread executor has no fence: there a started, non-idempotent user is FAILED "interrupted"
    fenced: bool

    def submit(self, task: UserTask, on_done: OnDone) -> None:
        """Start the deployment; never blocks for a long driver call (a driver with `inline_calls` may run
        there and then: its calls are short). `on_done` is called exactly once."""

    def resume(self, tasks: list[UserTask], on_done: OnDone) -> dict[str, Known]:
        """For a recovered build: what is known of these users (by `UserTask.key`). A "running" one
        gets `on_done` later; an unknown one was never handed out, or its fate is not known here."""

    def close(self) -> None:
        """Stop accepting work; wait for what is in flight."""

    def failure(self) -> ExecutorUnavailable | None:
        """Why outcomes cannot be collected right now (None while they can). An engine waiting for
        `on_done` checks it: when set, it stops waiting, checkpoints and ends the pass (build WORKING)."""

    def abandon_unstarted(self, build_id: str, block: int, users: list[str]) -> set[str]:
        """The pass is stopping: of these users in flight, those no worker has started (and that this
        executor stops waiting for). Their tasks may still run later, once: their fences outlive the pass
        and the next pass collects the outcome. The thread pool starts every task it takes: none."""

    def inline(self, driver_type: str) -> bool:
        """Whether `submit` runs this driver's calls there and then, on the caller's thread. The engine then
        hands them over one at a time, so that it checks its lease, its fence and a stop before each user."""

    def turn(self, driver_type: str) -> AbstractContextManager[object]:
        """Held around the checks before an inline call and the call itself (`submit`): inline calls of concurrent
        builds take turns, and a build that waited for its turn checks its lease, fence and stop after the wait."""


INLINE_MAX_SECONDS = 0.2  # a driver's calls that take longer go to the pool from then on (e.g. a slow mount) ...
INLINE_SLOW_CALLS = 3  # ... when so many in a row did: one slow call is as often a pause of the whole process


class ThreadExecutor:
    """In-process: `run(task)` (the engine's prepared driver call) on a bounded thread pool; a driver whose calls
    are short and in-process (`Driver.inline_calls`) runs on the submitting build's thread instead."""

    fenced = False

    def __init__(self, run: Callable[[UserTask], Outcome], workers: int) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="user")
        self._inline: dict[str, bool] = {}
        self._one_inline = threading.RLock()  # inline calls of concurrent builds take turns (no lock convoy)
        self._slow: dict[tuple[str, int], int] = {}  # (driver type, thread) -> its inline calls in a row that were slow

    def submit(self, task: UserTask, on_done: OnDone) -> None:
        def call() -> float:
            began = time.monotonic()
            try:
                outcome = self._run(task)
            except Exception as exc:  # a driver bug fails this user, never the pass
                outcome = Outcome("FAILED", f"driver error: {type(exc).__name__}: {exc}")
            took = time.monotonic() - began
            on_done(task, outcome)
            return took

        if not self.inline(task.driver_type):
            self._pool.submit(call)
            return
        took = call()  # in the caller's turn (`turn`)
        # Not short after all: the block's concurrency is worth it. Slow by far and several in a row on one thread:
        # a local call takes a few milliseconds, but a pause of the whole process (the interpreter's collector:
        # 0.2 s at 10,000 jobs) stretches the calls of every build at that moment at once.
        key = (task.driver_type, threading.get_ident())
        slow = self._slow[key] = self._slow.get(key, 0) + 1 if took > INLINE_MAX_SECONDS else 0
        if slow >= INLINE_SLOW_CALLS:
            self._inline[task.driver_type] = False

    def inline(self, driver_type: str) -> bool:
        if driver_type not in self._inline:
            from reconciler import drivers

            try:
                self._inline[driver_type] = bool(drivers.driver_class(driver_type).inline_calls)
            except Exception:  # an unknown or broken plugin: the pool (where its failure is reported per user)
                self._inline[driver_type] = False
        return self._inline[driver_type]

    def turn(self, driver_type: str) -> AbstractContextManager[object]:
        return self._one_inline if self.inline(driver_type) else contextlib.nullcontext()

    def resume(self, tasks: list[UserTask], on_done: OnDone) -> dict[str, Known]:
        return {task.key: None for task in tasks}  # a previous process's threads died with it

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def failure(self) -> ExecutorUnavailable | None:
        return None

    def abandon_unstarted(self, build_id: str, block: int, users: list[str]) -> set[str]:
        return set()


# -- choosing the executor (flags > environment > reconciler.yaml) -------------------------------------------
BROKER_ENV = "RECONCILER_BROKER_URL"


def chosen_config(flag: ExecutorConfig | None, settings: ExecutorConfig, env: Mapping[str, str]) -> ExecutorConfig:
    """The executor a pass uses: `--executor`/`--broker` over reconciler.yaml's `executor:`; the broker URL from
    the flag, else $RECONCILER_BROKER_URL (where a URL with a password belongs), else the settings."""
    kind = (flag.type if flag is not None else None) or settings.type
    broker = (flag.broker if flag is not None else None) or env.get(BROKER_ENV) or settings.broker
    return ExecutorConfig(type=kind, broker=broker if kind == "celery" else None)


def create_executor(config: ExecutorConfig, *, run: Callable[[UserTask], Outcome], workers: int,
                    repo_url: str | None, on_log: Callable[[UserTask, str], None] | None = None) -> Executor:
    """The thread pool, or fleet mode (exit 2 with the install command when the extra is missing)."""
    if config.type != "celery":
        return ThreadExecutor(run, workers)
    from reconciler.run.fleet import require

    require("reconcile --executor celery")
    if not config.broker:
        raise UserError(f"the celery executor needs a broker: --broker URL, ${BROKER_ENV}, or executor.broker in "
                        "reconciler.yaml (e.g. redis://127.0.0.1:6379/0)", EXIT_USAGE)
    if not repo_url:
        raise UserError("the celery executor needs a remote that fleet workers can fetch the claimed commit from "
                        "(--remote, `remote:` in reconciler.yaml, or the branch's upstream)", EXIT_USAGE)
    import os

    from reconciler.run.fleet.executor import ALLOW_UNSAFE_ENV, CeleryExecutor

    return CeleryExecutor(config.broker, repo_url, on_log=on_log,
                          allow_unsafe_broker=os.environ.get(ALLOW_UNSAFE_ENV) == "1")
