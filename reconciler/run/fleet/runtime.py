"""What a fleet worker does with one task: read the claimed commit, render the user, take the fence, run the
driver, store the outcome in the fence. No failure policy here: the reconciler triaged before it dispatched.

Secrets come from the worker's own environment; a missing one fails that user with a reason naming the
variable (never a value). Every reason and log line is masked before it leaves the worker.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from reconciler import drivers
from reconciler.core.model import Block, Definition, Job, SecretRef, Server, recipients
from reconciler.core.prepare import ContentCache, prepare_user, token_values
from reconciler.core.redact import Redactor
from reconciler.core.validate import Desired
from reconciler.drivers.base import DeployRequest, Driver, DriverContext, Outcome
from reconciler.ledger import git
from reconciler.ledger.load import load_commit_state
from reconciler.run.executors import UserTask
from reconciler.run.fleet import keys
from reconciler.run.fleet.app import connection_errors
from reconciler.run.fleet.fence import Decision, Fences
from reconciler.run.fleet.mirror import Mirror

T = TypeVar("T")
MIN_SECRET_LENGTH = 8  # SPEC 9.1.10: a shorter value cannot be masked reliably
STATES_KEPT = 8  # (commit, job) states a worker keeps loaded


class NotReady(Exception):
    """The task cannot be prepared now but may be later (the remote is unreachable): retry, fence untouched."""


def task_message(task: UserTask, repo_url: str) -> dict[str, Any]:
    """The task's kwargs: identity and where to read it from, never content or a secret."""
    return {**asdict(task), "repo_url": repo_url}


def task_of(message: dict[str, Any]) -> tuple[UserTask, str]:
    fields = {k: message[k] for k in UserTask.__dataclass_fields__}
    return UserTask(**fields), str(message.get("repo_url") or "")


@dataclass
class Loaded:
    """One job as claimed at one commit, with what its users share (content, redactor, drivers)."""

    desired: Desired
    job: Job
    content: ContentCache
    redactor: Redactor = field(default_factory=Redactor)
    drivers: dict[int, Driver] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _secret_names(value: Any) -> Iterator[str]:
    """`{secret: NAME}` references anywhere in driver settings (e.g. the http driver's `auth`)."""
    if isinstance(value, dict):
        if set(value) == {"secret"} and isinstance(value["secret"], str):
            yield value["secret"]
        else:
            for item in value.values():
                yield from _secret_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secret_names(item)


class WorkerRuntime:
    """Shared by the worker's threads: mirrors, loaded states, the fences."""

    def __init__(self, *, client: Any, worker_id: str, state_dir: Path, env: dict[str, str],
                 repo_url: str | None = None, target_root: Path | None = None, wait_poll: float = 0.5,
                 echo: Any = None) -> None:
        self.client = client
        self.fences = Fences(client)
        self.worker_id = worker_id
        self.state_dir = state_dir
        self.env = env
        self.repo_url = repo_url
        self.target_root = target_root or Path.cwd()
        self.wait_poll = wait_poll
        self.echo = echo or (lambda event, data: None)
        self._mirrors: dict[str, Mirror] = {}
        self._states: OrderedDict[tuple[str, str, str], Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, str], threading.Lock] = {}
        self._errors = connection_errors()

    # -- desired state at the claimed commit --------------------------------------------------------
    def _mirror(self, url: str) -> Mirror:
        with self._lock:
            if url not in self._mirrors:
                self._mirrors[url] = Mirror(self.state_dir, url)
            return self._mirrors[url]

    def load(self, url: str, commit: str, job: str) -> Loaded:
        """Raises NotReady (remote unreachable) or LookupError (the job cannot be read at that commit)."""
        key = (url, commit, job)
        with self._lock:
            if key in self._states:
                self._states.move_to_end(key)
                return self._states[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._states:
                    return self._states[key]
            try:
                repo = self._mirror(url).at(commit)
            except git.RemoteUnreachable as exc:
                raise NotReady(str(exc)) from None
            state = load_commit_state(repo, commit, jobs={job})
            found = state.desired.jobs.get(job)
            if found is None:
                problems = [p.as_text() for p in state.desired.problems.items
                            if p.path.startswith(f"jobs/{job}.") or not p.path.startswith("jobs/")][:3]
                raise LookupError(f"job {job!r} is not valid at commit {commit[:12]} on this worker"
                                  + (f": {'; '.join(problems)}" if problems else ""))
            loaded = Loaded(state.desired, found, ContentCache(state.desired))
            with self._lock:
                self._states[key] = loaded
                self._loading.pop(key, None)
                while len(self._states) > STATES_KEPT:
                    self._states.popitem(last=False)
            return loaded

    # -- one task ---------------------------------------------------------------------------------
    def idempotent(self, task: UserTask) -> bool:
        """Either side saying "not idempotent" wins; a driver that cannot load is not trusted to be."""
        try:
            return task.idempotent and drivers.driver_class(task.driver_type).idempotent_apply
        except Exception:
            return False

    def count(self, field_name: str, amount: int = 1) -> None:
        self.client.hincrby(keys.METRICS, field_name, amount)

    def durably(self, what: str, call: Callable[[], T]) -> T:
        """Redis calls a delivery cannot do without (its fence): retried while the broker is away, however
        long; the process dying meanwhile is what heartbeats are for."""
        delay = 0.2
        told = False
        while True:
            try:
                return call()
            except self._errors as exc:
                if not told:
                    self.echo("fleet.broker_unreachable", {"worker": self.worker_id, "while": what,
                                                           "error": f"{type(exc).__name__}: {exc}"[:300]})
                    told = True
                time.sleep(delay)
                delay = min(5.0, delay * 2)

    def handle(self, message: dict[str, Any], redelivered: bool = False) -> str:
        """Run one delivery; returns what happened ('ran', 'done', 'waited', ...). Raises NotReady."""
        task, task_url = task_of(message)
        if redelivered:
            self.durably("counting", lambda: self.count("redelivered"))
        existing = self.durably("reading the fence", lambda: self.fences.peek(task.key))
        if existing is not None and existing.done:
            self.durably("counting", lambda: self.count("fenced"))
            return "done"
        url = self.repo_url or task_url
        request: DeployRequest | None = None
        driver: Driver | None = None
        log: list[str] = []
        loaded: Loaded | None = None
        failure: str | None = None
        if not url:
            failure = "the task names no repository and the worker was started without --repo-url"
        else:
            try:
                loaded = self.load(url, task.desired_commit, task.job)
                request, driver, failure = self._prepare(loaded, task, log)
            except NotReady:
                raise
            except LookupError as exc:
                failure = str(exc)
            except Exception as exc:  # a broken mirror, an unreadable commit: this user fails, the worker goes on
                failure = (f"worker {self.worker_id} could not prepare the deployment: {type(exc).__name__}: "
                           f"{str(exc)[:300]}")
        idempotent = self.idempotent(task)
        token = secrets.token_hex(8)  # this delivery: a retried SET whose reply was lost still finds it ours

        def take() -> Decision:
            return self.fences.take(task.key, self.worker_id, task.epoch, idempotent, token)

        decision = self.durably("taking the fence", take)
        waited = False
        while decision.verdict == "running":  # a live worker holds it (e.g. the first delivery still runs)
            waited = True
            time.sleep(self.wait_poll)
            decision = self.durably("taking the fence", take)
        if decision.verdict != "run":
            self.durably("counting", lambda: self.count("fenced"))
            return "waited" if waited else "done"
        redact = loaded.redactor if loaded is not None else Redactor()
        if failure is not None:
            outcome = Outcome("FAILED", redact(failure))
        else:
            assert request is not None and driver is not None
            outcome = self._call(driver, request, redact)
        lines = [redact(line) for line in log]
        stored = self.durably("storing the outcome", lambda: self.fences.finish(
            task.key, self.worker_id, task.epoch, outcome, lines, token))
        self.echo("fleet.user", {"job": task.job, "build_id": task.build_id, "block": task.block, "user": task.user,
                                 "status": outcome.status, "stored": stored})
        return "ran" if stored else "overruled"

    def _prepare(self, loaded: Loaded, task: UserTask, log: list[str]) -> tuple[DeployRequest | None,
                                                                               Driver | None, str | None]:
        """The user's request and driver, or why it cannot run on this worker."""
        if task.block >= len(loaded.job.blocks):
            return None, None, f"job {task.job!r} has no block {task.block} at commit {task.desired_commit[:12]}"
        block = loaded.job.blocks[task.block]
        server = loaded.desired.servers[block.server]
        definition = loaded.desired.definitions[block.definition]
        if task.user not in recipients(block, server):
            return None, None, f"user {task.user!r} is not a recipient of block {task.block} of job {task.job!r}"
        problem = self._secret_problem(block, definition, server, task.user)
        if problem is not None:
            return None, None, problem
        prepared = prepare_user(block, definition, task.user, loaded.content.of(definition), self.env,
                                loaded.redactor.add)
        driver = self._driver(loaded, block, server)

        def record(line: str) -> None:
            log.append(line)

        request = DeployRequest(job=task.job, build_id=task.build_id, action=block.action, server=server,
                                definition=definition, user=server.user(task.user), assets=prepared.assets,
                                content_digest=prepared.content_digest, parameters=prepared.parameters,
                                public_parameters=prepared.public_parameters, tokens=prepared.tokens, log=record)
        return request, driver, None

    def _secret_problem(self, block: Block, definition: Definition, server: Server, uid: str) -> str | None:
        content, params = token_values(block, definition, uid)
        names = [v.env for v in (*content.values(), *params.values()) if isinstance(v, SecretRef)]
        names += list(_secret_names(server.driver))
        for name in dict.fromkeys(names):
            value = self.env.get(name)
            if value is None:
                return f"secret {name} is not set in the environment of worker {self.worker_id}"
            if len(value) < MIN_SECRET_LENGTH:
                return (f"secret {name} in the environment of worker {self.worker_id} is shorter than "
                        f"{MIN_SECRET_LENGTH} characters and cannot be masked reliably")
        return None

    def _driver(self, loaded: Loaded, block: Block, server: Server) -> Driver:
        with loaded.lock:
            if block.index not in loaded.drivers:
                context = DriverContext(self.target_root, None, self.env, work_root=self.state_dir / "work",
                                        add_secret=loaded.redactor.add)
                loaded.drivers[block.index] = drivers.create(server.driver_type, server.driver, context)
            return loaded.drivers[block.index]

    @staticmethod
    def _call(driver: Driver, request: DeployRequest, redact: Redactor) -> Outcome:
        try:
            result = driver.run(request)
        except Exception as exc:  # a driver bug or target error fails this user, never the worker
            result = Outcome("FAILED", f"driver error: {type(exc).__name__}: {exc}")
        return Outcome(result.status, redact(result.reason))

    def fail_unprepared(self, message: dict[str, Any], reason: str) -> None:
        """Retries exhausted (the remote stayed unreachable): the user is FAILED, never run."""
        task, _ = task_of(message)
        token = secrets.token_hex(8)
        decision = self.durably("taking the fence", lambda: self.fences.take(
            task.key, self.worker_id, task.epoch, self.idempotent(task), token))
        if decision.verdict == "run":
            self.durably("storing the outcome", lambda: self.fences.finish(
                task.key, self.worker_id, task.epoch, Outcome("FAILED", reason), (), token))


def describe(worker_id: str, queues: list[str], concurrency: int, started: float) -> str:
    import os
    import socket

    return json.dumps({"worker": worker_id, "host": socket.gethostname(), "pid": os.getpid(), "queues": queues,
                       "concurrency": concurrency, "started": started})
