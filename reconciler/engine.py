"""Executing one claimed job: render, apply the failure policy, call drivers, checkpoint results.

The engine is the only caller of drivers. Everything it writes (log lines, reasons, errors)
goes through the redactor first.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from reconciler import drivers, faults
from reconciler.drivers.base import DeployRequest, Driver, DriverContext, Outcome
from reconciler.ledger import BlockRecord, LedgerRecord, UserResult, outcome
from reconciler.model import Block, Definition, Job, SecretRef, Server, TokenValue, User
from reconciler.redact import Redactor
from reconciler.render import as_text, broken_reason, render, value_text
from reconciler.source import MODE_LINK
from reconciler.timeutil import iso, utcnow
from reconciler.validate import Desired

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


@dataclass
class RunContext:
    desired: Desired
    repo_root: Path
    env: dict[str, str]
    redactor: Redactor
    store: RecordStore
    concurrency: int = 4
    lease_seconds: int = 600
    stop: threading.Event = field(default_factory=threading.Event)
    on_user: Callable[[str, str, str], None] | None = None  # (job, user, status) for progress
    work_root: Path | None = None  # drivers' private scratch space, under .git/reconciler/
    _content: dict[str, dict[str, bytes]] = field(default_factory=dict)
    _users: dict[str, dict[str, User]] = field(default_factory=dict)  # server -> id -> user

    def user_of(self, server: Server, uid: str) -> User:
        """A user by id in O(1): a block may have 10,000 users."""
        if server.name not in self._users:
            self._users[server.name] = {u.id: u for u in server.users}
        return self._users[server.name][uid]

    def content_of(self, definition: Definition) -> dict[str, bytes]:
        if definition.name not in self._content:
            entries = self.desired.content.get(definition.name, {})
            files = self.desired.files
            all_entries = files.entries()
            wanted = {rel: e.path for rel, e in entries.items() if e.mode != MODE_LINK}
            links = {rel: e for rel, e in entries.items() if e.mode == MODE_LINK}
            data = files.read_many(list(wanted.values())) if wanted else {}
            assets = {rel: data[path] for rel, path in wanted.items()}
            for rel, entry in links.items():  # validation allowed only links inside the content folder
                target = files.read_many([entry.path])[entry.path].decode("utf-8", "replace")
                resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
                if resolved in all_entries and all_entries[resolved].mode != MODE_LINK:
                    assets[rel] = files.read_many([resolved])[resolved]
            self._content[definition.name] = assets
        return self._content[definition.name]


@dataclass
class Prepared:
    """One user's rendered deployment, or why it is broken."""

    user: str
    request: DeployRequest | None
    broken: list[str]


class Interrupted(Exception):
    def __init__(self, record: LedgerRecord) -> None:
        super().__init__("interrupted")
        self.record = record


def recipients(block: Block, server: Server) -> list[str]:
    return list(server.user_ids) if block.users == "all" else list(block.users)


def _merged(decls: tuple[Any, ...], block_values: dict[str, TokenValue],
            user_values: dict[str, TokenValue]) -> dict[str, TokenValue]:
    values: dict[str, TokenValue] = {d.name: d.default for d in decls if d.has_default}
    values.update(block_values)
    values.update(user_values)
    return values


def prepare_user(ctx: RunContext, job: Job, build_id: str, block: Block, server: Server, definition: Definition,
                 uid: str, log: BuildLog) -> Prepared:
    override = block.user_tokens.get(uid)
    content_values = _merged(definition.content_tokens, block.content_tokens,
                             override.content_tokens if override else {})
    param_values = _merged(definition.parameter_tokens, block.parameter_tokens,
                           override.parameter_tokens if override else {})
    broken: list[str] = []

    def resolve(value: TokenValue) -> Any:
        if isinstance(value, SecretRef):
            secret = ctx.env.get(value.env)
            if secret is None:
                broken.append(f"secret {value.env} is not set in the reconciler's environment")
                return ""
            ctx.redactor.add(secret)
            return secret
        return value

    content_text = {k: value_text(resolve(v)) for k, v in content_values.items()}
    params = {k: resolve(v) for k, v in param_values.items()}
    public = {k: ({"secret": v.env} if isinstance(v, SecretRef) else v) for k, v in param_values.items()}
    assets: dict[str, bytes] = {}
    for rel, data in sorted(ctx.content_of(definition).items()):
        text = as_text(data)
        rendered = data if text is None else render(text, content_text).encode("utf-8")
        # DESTROY needs no content tokens (SPEC 3.4): its content (e.g. a Terraform module) is handed over
        # as far as it renders, and never judged broken
        reason = broken_reason(rel, rendered) if text is not None and block.action != "DESTROY" else None
        if reason:
            broken.append(reason)
        assets[rel] = rendered
    digest = hashlib.sha256()
    for rel, data in sorted(assets.items()):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    user = ctx.user_of(server, uid)
    tokens = {**content_text, **{k: value_text(v) for k, v in params.items()}}
    request = DeployRequest(job=job.name, build_id=build_id, action=block.action, server=server,
                            definition=definition, user=user, assets=assets,
                            content_digest="sha256:" + digest.hexdigest(), parameters=params,
                            public_parameters=public, tokens=tokens, log=log)
    return Prepared(uid, request, broken)


def block_record(block: Block, server: Server, definition: Definition,
                  users: dict[str, UserResult]) -> BlockRecord:
    return BlockRecord(definition=definition.name, module_type=definition.module_type, server=server.name,
                       environment=server.environment, organization=server.organization,
                       action=block.action,  # type: ignore[arg-type]  # validated by the job schema
                       users=users)


class JobRunner:
    """Runs one job to its final record, checkpointing through the store."""

    def __init__(self, ctx: RunContext, job: Job, record: LedgerRecord, log: BuildLog) -> None:
        self.ctx = ctx
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
        desired = self.ctx.desired
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
                    self._set(block.index, uid, "NOT_RUN", "not run: the job was aborted by an earlier failure")
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
        prepared = [prepare_user(self.ctx, self.job, self.record.build_id, block, server, definition, uid, self.log)
                    for uid in todo]
        policy = self.job.on_failure
        broken = [p for p in prepared if p.broken]
        if broken and policy == "abort":
            for p in prepared:
                if p.broken:
                    reason = "broken assets: " + "; ".join(p.broken)
                    self.log(f"{p.user}: FAILED, {reason}")
                    self._set(block.index, p.user, "FAILED", reason)
                else:
                    self._set(block.index, p.user, "NOT_RUN", "not run: the block was aborted (broken assets for "
                              "another user)")
            return True
        queue: list[Prepared] = []
        for p in prepared:
            if p.broken and policy == "skip":
                reason = "skipped, broken assets: " + "; ".join(p.broken)
                self.log(f"{p.user}: {reason}")
                self._set(block.index, p.user, "SKIPPED", reason)
            else:
                if p.broken:
                    self.log(f"WARNING {p.user}: deploying despite broken assets (on_failure: force): "
                             + "; ".join(p.broken))
                queue.append(p)
        context = DriverContext(self.ctx.repo_root, None, self.ctx.env, work_root=self.ctx.work_root,
                                add_secret=self.ctx.redactor.add)
        driver = drivers.create(server.driver_type, server.driver, context)
        if not driver.idempotent_apply:
            queue = self._fail_interrupted_starts(block, server, queue)
            if policy == "abort" and any(r.status == "FAILED" for r in self.results[block.index].values()):
                for p in queue:
                    self._set(block.index, p.user, "NOT_RUN", "not run: the job was aborted by a failure")
                return True
        return self._deploy(block, driver, queue)

    def _fail_interrupted_starts(self, block: Block, server: Server, queue: list[Prepared]) -> list[Prepared]:
        """Users whose non-idempotent deployment began before a crash are FAILED, never run twice."""
        started = set(self.blocks[block.index].started)
        rest = []
        for p in queue:
            if p.user in started:
                reason = (f"interrupted while its deployment was running; not run again because the "
                          f"{server.driver_type} driver cannot absorb a second run (see `reconciler retry`)")
                self.log(f"{p.user}: FAILED, {reason}")
                self._set(block.index, p.user, "FAILED", reason)
            else:
                rest.append(p)
        return rest

    def _mark_started(self, index: int, uid: str) -> None:
        with self.lock:
            block = self.blocks[index]
            self.blocks[index] = block.model_copy(update={"started": [*block.started, uid]})
        self.checkpoint(f"status: {self.job.name} {uid} starting")

    def _deploy(self, block: Block, driver: Driver, queue: list[Prepared]) -> bool:
        aborted = False
        pending: dict[Future[Outcome], Prepared] = {}
        items = iter(queue)
        with ThreadPoolExecutor(max_workers=max(1, self.ctx.concurrency)) as pool:
            while True:
                while not aborted and not self.ctx.stop.is_set() and len(pending) < self.ctx.concurrency:
                    item = next(items, None)
                    if item is None:
                        break
                    assert item.request is not None
                    if not driver.idempotent_apply:  # committed (and pushed) before the call begins
                        self._mark_started(block.index, item.user)
                    pending[pool.submit(self._call, driver, item.request)] = item
                if not pending:
                    break
                finished, _ = wait(pending, timeout=CHECKPOINT_SECONDS, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = pending.pop(future)
                    result = future.result()
                    status, reason = result.status, result.reason
                    if status != "FAILED" and item.broken:
                        status, reason = "FORCED", "deployed despite broken assets: " + "; ".join(item.broken)
                    self._set(block.index, item.user, status, reason)
                    if status == "FAILED" and self.job.on_failure == "abort":
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
            self._set(block.index, uid, "NOT_RUN", "not run: the job was aborted by a failure")
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
