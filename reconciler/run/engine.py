"""Executing one claimed job: render, apply the failure policy, call drivers, checkpoint results.

The engine is the only caller of drivers. Everything it writes (log lines, reasons, errors)
goes through the redactor first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from reconciler import drivers, faults
from reconciler.core import policy
from reconciler.core.model import Block, Definition, Job, Server, recipients
from reconciler.core.prepare import ContentCache, Prepared, prepare_user
from reconciler.core.records import BlockRecord, LedgerRecord, UserResult, outcome
from reconciler.core.redact import Redactor
from reconciler.core.timeutil import iso, utcnow
from reconciler.core.validate import Desired
from reconciler.drivers.base import DeployRequest, Driver, DriverContext, Outcome

CHECKPOINT_SECONDS = 2.0


class BuildLog:
    """The build's log: redacted, timestamped, thread-safe."""

    def __init__(self, redactor: Redactor, initial: str = "", echo: Callable[[str], None] | None = None) -> None:
        self.redactor = redactor
        self._lines: list[str] = initial.splitlines()
        self._lock = threading.Lock()
        self.echo = echo

    def __call__(self, message: str) -> None:
        clean = self.redactor(message)
        lines = [f"{iso(utcnow())} {part}" for part in clean.splitlines() or [""]]
        with self._lock:
            self._lines.extend(lines)
        if self.echo is not None:
            for line in lines:
                self.echo(line)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines) + ("\n" if self._lines else "")


class RecordStore(Protocol):
    def save(self, record: LedgerRecord, log_text: str, message: str) -> None: ...


@dataclass(frozen=True)
class RunContext:
    """How a pass runs builds: configuration only (caches belong to the desired state they read)."""

    repo_root: Path
    env: dict[str, str]
    redactor: Redactor
    store: RecordStore
    concurrency: int = 4
    lease_seconds: int = 600
    stop: threading.Event = field(default_factory=threading.Event)
    on_user: Callable[[str, str, str], None] | None = None  # (job, user, status) for progress
    work_root: Path | None = None  # drivers' private scratch space, under .git/reconciler/


@dataclass
class Claimed:
    """The desired state a build runs against (its claimed commit), with its content cache."""

    desired: Desired
    content: ContentCache

    @classmethod
    def of(cls, desired: Desired) -> Claimed:
        return cls(desired, ContentCache(desired))


class Interrupted(Exception):
    def __init__(self, record: LedgerRecord) -> None:
        super().__init__("interrupted")
        self.record = record


def deploy_request(job: Job, build_id: str, block: Block, server: Server, definition: Definition,
                   prepared: Prepared, log: BuildLog) -> DeployRequest:
    return DeployRequest(job=job.name, build_id=build_id, action=block.action, server=server,
                         definition=definition, user=server.user(prepared.user), assets=prepared.assets,
                         content_digest=prepared.content_digest, parameters=prepared.parameters,
                         public_parameters=prepared.public_parameters, tokens=prepared.tokens, log=log)


def block_record(block: Block, server: Server, definition: Definition,
                 users: dict[str, UserResult]) -> BlockRecord:
    return BlockRecord(definition=definition.name, module_type=definition.module_type, server=server.name,
                       environment=server.environment, organization=server.organization,
                       action=block.action,  # type: ignore[arg-type]  # validated by the job schema
                       users=users)


class JobRunner:
    """Runs one job to its final record, checkpointing through the store."""

    def __init__(self, ctx: RunContext, claimed: Claimed, job: Job, record: LedgerRecord, log: BuildLog) -> None:
        self.ctx = ctx
        self.claimed = claimed
        self.job = job
        self.record = record
        self.log = log
        self.lock = threading.Lock()
        self.blocks: list[BlockRecord] = list(record.blocks)
        # live per-block results, turned into frozen BlockRecords at each checkpoint (O(1) per user)
        self.results: list[dict[str, UserResult]] = [dict(b.users) for b in record.blocks]
        self.last_checkpoint = time.monotonic()

    def checkpoint(self, message: str, **changes: Any) -> None:
        changes.setdefault("lease_expires_at", utcnow() + timedelta(seconds=self.ctx.lease_seconds))
        with self.lock:
            blocks = [b.model_copy(update={"users": dict(users)}) for b, users in zip(self.blocks, self.results,
                                                                                      strict=True)]
        self.record = self.record.with_blocks(blocks, **changes)
        self.ctx.store.save(self.record, self.log.text(), message)
        self.last_checkpoint = time.monotonic()

    def _set(self, index: int, uid: str, status: str, reason: str) -> None:
        result = UserResult(status=status, reason=self.ctx.redactor(reason))  # type: ignore[arg-type]
        with self.lock:
            self.results[index][uid] = result
        if self.ctx.on_user is not None:
            self.ctx.on_user(self.job.name, uid, status)

    def run(self) -> LedgerRecord:
        desired = self.claimed.desired
        if self.record.status != "WORKING":
            self.log(f"build {self.record.build_id} of job {self.job.name} started")
            self.checkpoint(f"status: {self.job.name} WORKING", status="WORKING",
                            started_at=self.record.started_at or utcnow())
        aborted = False
        for block in self.job.blocks:
            server = desired.servers[block.server]
            definition = desired.definitions[block.definition]
            if len(self.blocks) <= block.index:
                self.blocks.append(block_record(block, server, definition, {}))
                self.results.append({})
            done = self.results[block.index]
            todo = [u for u in recipients(block, server) if u not in done]
            if aborted:
                for uid in todo:
                    self._set(block.index, uid, "NOT_RUN", policy.ABORTED_EARLIER)
                continue
            self.log(f"block {block.index}: {block.action} {definition.name} on {server.name} "
                     f"({server.environment}/{server.organization}) for {len(todo)} user(s)")
            aborted = self._run_block(block, server, definition, todo)
        for block in self.job.blocks:  # results in recipient order, whatever order users finished in
            order = recipients(block, desired.servers[block.server])
            users = self.results[block.index]
            self.results[block.index] = {u: users[u] for u in order if u in users}
        final = outcome([b.model_copy(update={"users": r}) for b, r in zip(self.blocks, self.results, strict=True)])
        self.log(f"build {self.record.build_id} finished: {final}")
        self.checkpoint(f"status: {self.job.name} {final}", status=final, finished_at=utcnow(),
                        lease_expires_at=None)
        return self.record

    def _run_block(self, block: Block, server: Server, definition: Definition, todo: list[str]) -> bool:
        """Run one block; returns True when the job is aborted from here on."""
        content = self.claimed.content.of(definition)
        prepared = [_secrets_as_broken(prepare_user(block, definition, uid, content, self.ctx.env,
                                                    self.ctx.redactor.add)) for uid in todo]
        verdict = policy.triage(prepared, self.job.on_failure)
        for uid, (status, reason) in verdict.settled.items():
            self.log(f"{uid}: {status}, {reason}" if status == "FAILED" else f"{uid}: {reason}")
            self._set(block.index, uid, status, reason)
        for warning in verdict.warnings:
            self.log(warning)
        if verdict.aborted:
            return True
        queue = verdict.deploy
        context = DriverContext(self.ctx.repo_root, None, self.ctx.env, work_root=self.ctx.work_root,
                                add_secret=self.ctx.redactor.add)
        driver = drivers.create(server.driver_type, server.driver, context)
        if not driver.idempotent_apply:
            queue = self._fail_interrupted_starts(block, server, queue)
            if self.job.on_failure == "abort" and any(r.status == "FAILED" for r in self.results[block.index].values()):
                for p in queue:
                    self._set(block.index, p.user, "NOT_RUN", policy.ABORTED_FAILURE)
                return True
        return self._deploy(block, server, definition, driver, queue)

    def _fail_interrupted_starts(self, block: Block, server: Server, queue: list[Prepared]) -> list[Prepared]:
        """Users whose non-idempotent deployment began before a crash are FAILED, never run twice."""
        started = set(self.blocks[block.index].started)
        rest = []
        for p in queue:
            if p.user in started:
                status, reason = policy.interrupted_started(server.driver_type)
                self.log(f"{p.user}: {status}, {reason}")
                self._set(block.index, p.user, status, reason)
            else:
                rest.append(p)
        return rest

    def _mark_started(self, index: int, uid: str) -> None:
        with self.lock:
            block = self.blocks[index]
            self.blocks[index] = block.model_copy(update={"started": [*block.started, uid]})
        self.checkpoint(f"status: {self.job.name} {uid} starting")

    def _deploy(self, block: Block, server: Server, definition: Definition, driver: Driver,
                queue: list[Prepared]) -> bool:
        aborted = False
        pending: dict[Future[Outcome], Prepared] = {}
        items = iter(queue)
        with ThreadPoolExecutor(max_workers=max(1, self.ctx.concurrency)) as pool:
            while True:
                while not aborted and not self.ctx.stop.is_set() and len(pending) < self.ctx.concurrency:
                    item = next(items, None)
                    if item is None:
                        break
                    if not driver.idempotent_apply:  # committed (and pushed) before the call begins
                        self._mark_started(block.index, item.user)
                    request = deploy_request(self.job, self.record.build_id, block, server, definition, item,
                                             self.log)
                    pending[pool.submit(self._call, driver, request)] = item
                if not pending:
                    break
                finished, _ = wait(pending, timeout=CHECKPOINT_SECONDS, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = pending.pop(future)
                    result = future.result()
                    status, reason = policy.after_deploy(item, result.status, result.reason)
                    self._set(block.index, item.user, status, reason)
                    if policy.stops_job(status, self.job.on_failure):
                        aborted = True
                since = time.monotonic() - self.last_checkpoint
                # checkpoint new results often, and renew the lease even while one long user runs
                if (finished and since >= CHECKPOINT_SECONDS) or since >= self.ctx.lease_seconds / 3:
                    self.checkpoint(f"status: {self.job.name} checkpoint")
        rest = [p.user for p in queue if p.user not in self.results[block.index]]
        if self.ctx.stop.is_set() and not aborted and rest:
            self.checkpoint(f"status: {self.job.name} interrupted")
            raise Interrupted(self.record)
        for uid in rest:
            self._set(block.index, uid, "NOT_RUN", policy.ABORTED_FAILURE)
        return aborted

    def _call(self, driver: Driver, request: DeployRequest) -> Outcome:
        faults.point("user.before-apply", f"{request.job} {request.user.id}")
        try:
            result = driver.run(request)
        except Exception as exc:  # a driver bug or target error fails this user, never the pass
            result = Outcome("FAILED", f"driver error: {type(exc).__name__}: {exc}")
        faults.point("user.after-apply", f"{request.job} {request.user.id} {result.status}")
        reason = self.ctx.redactor(result.reason)
        self.log(f"{request.user.id}: {result.status}" + (f", {reason}" if reason else ""))
        return Outcome(result.status, reason)


def _secrets_as_broken(prepared: Prepared) -> Prepared:
    """Until secrets are checked before a claim: a secret that is not set breaks that user's assets."""
    if not prepared.missing_secrets:
        return prepared
    missing = tuple(f"secret {name} is not set in the reconciler's environment" for name in prepared.missing_secrets)
    return replace(prepared, broken=missing + prepared.broken)
