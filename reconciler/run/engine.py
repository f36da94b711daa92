"""Executing one claimed build: render, apply the failure policy, hand users to the executor, save results.

The engine is the only caller of drivers (through an executor). Everything it writes (log lines,
reasons, errors) goes through the redactor first. Every save goes through the ledger writer,
which fences it (SPEC 9.1): once the build is not ours any more, the next save raises BuildLost
and the engine starts no further user. Before a user whose deployment cannot be absorbed twice
is started, its `started` marker is made durable (with the users that start with it); an owner
whose newest durable lease is older than half the lease starts nobody until it has renewed it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler import drivers, faults
from reconciler.core import policy
from reconciler.core.model import Block, Definition, Job, Server, recipients
from reconciler.core.prepare import ContentCache, Prepared, prepare_user
from reconciler.core.records import BlockRecord, LedgerRecord, UserResult, outcome
from reconciler.core.redact import Redactor
from reconciler.core.rollout import HALTED, budget_exceeded, plan_waves, so_far, wave_summary
from reconciler.core.timeutil import iso, utcnow
from reconciler.core.validate import Desired
from reconciler.drivers.base import DeployRequest, Driver, DriverContext, Outcome
from reconciler.ledger.writer import BuildLost, LedgerUnavailable
from reconciler.run.executors import Executor, UserTask
from reconciler.run.limits import ServerLimits

INTERRUPTED_RUNNING = "interrupted while running; it may have been applied (on_interrupt: fail)"
INTERRUPTED_NOT_STARTED = "interrupted before it started (on_interrupt: fail)"


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


class RecordSink(Protocol):
    """Where a build's saves go: the ledger writer (`reconciler.ledger.writer.LedgerWriter`)."""

    def save(self, record: LedgerRecord, log: str, *, durable: bool = False) -> None: ...

    def lost(self, build_id: str) -> str | None: ...

    def lease_age(self, build_id: str) -> float: ...


class DriverPool:
    """One driver per server settings and pass (a driver resolves its target once, not once per block)."""

    def __init__(self, context: DriverContext) -> None:
        self.context = context
        self._made: dict[str, Driver] = {}
        self._lock = threading.Lock()

    def get(self, server: Server) -> Driver:
        key = json.dumps([server.name, server.driver], sort_keys=True, default=str)
        with self._lock:
            if key not in self._made:
                self._made[key] = drivers.create(server.driver_type, server.driver, self.context)
            return self._made[key]


@dataclass(frozen=True)
class RunContext:
    """How a pass runs builds: configuration only (caches belong to the desired state they read)."""

    repo_root: Path
    env: dict[str, str]
    redactor: Redactor
    sink: RecordSink
    executor: Executor
    drivers: DriverPool
    concurrency: int = 4
    lease_seconds: float = 600
    stop: threading.Event = field(default_factory=threading.Event)
    on_user: Callable[[str, str, str], None] | None = None  # (job, user, status) for progress
    work_root: Path | None = None  # drivers' private scratch space, under .git/reconciler/
    fenced_executor: bool = False  # the executor guarantees at most once per user by a fence of its own
    limits: ServerLimits = field(default_factory=lambda: ServerLimits({}))  # max_parallel, across the pass
    checkpoint_seconds: float = 2.0  # the ledger writer commits checkpoints at most this often


@dataclass
class Claimed:
    """The desired state a build runs against (its claimed commit), with its content cache."""

    desired: Desired
    content: ContentCache

    @classmethod
    def of(cls, desired: Desired) -> Claimed:
        return cls(desired, ContentCache(desired))


class Interrupted(Exception):
    """A stop was requested: users in flight finished and were saved; the build stays WORKING."""

    def __init__(self, record: LedgerRecord) -> None:
        super().__init__("interrupted")
        self.record = record


class Stopped(Exception):
    """The build cannot go on here (lease not renewable, ledger unwritable): it stays WORKING, recoverable."""


def block_record(block: Block, server: Server, definition: Definition,
                 users: dict[str, UserResult]) -> BlockRecord:
    return BlockRecord(definition=definition.name, module_type=definition.module_type, server=server.name,
                       environment=server.environment, organization=server.organization,
                       action=block.action,  # type: ignore[arg-type]  # validated by the job schema
                       users=users)


def deploy_request(job: Job, build_id: str, block: Block, server: Server, definition: Definition,
                   prepared: Prepared, log: BuildLog) -> DeployRequest:
    return DeployRequest(job=job.name, build_id=build_id, action=block.action, server=server,
                         definition=definition, user=server.user(prepared.user), assets=prepared.assets,
                         content_digest=prepared.content_digest, parameters=prepared.parameters,
                         public_parameters=prepared.public_parameters, tokens=prepared.tokens, log=log)


class JobRunner:
    """Runs one build to its final record, saving through the ledger writer."""

    def __init__(self, ctx: RunContext, claimed: Claimed, job: Job, record: LedgerRecord, log: BuildLog,
                 recovering: bool = False) -> None:
        self.ctx = ctx
        self.claimed = claimed
        self.job = job
        self.record = record
        self.log = log
        self._staged_at = 0.0  # monotonic time of the last record handed to the ledger writer
        self.recovering = recovering
        self.lock = threading.Lock()
        self.blocks: list[BlockRecord] = list(record.blocks)
        # live per-block results and started markers (O(1) per user), frozen into the record at each save
        self.results: list[dict[str, UserResult]] = [dict(b.users) for b in record.blocks]
        self.started: list[list[str]] = [list(b.started) for b in record.blocks]
        self._local: dict[tuple[int, str], tuple[Driver, DeployRequest]] = {}
        self._inbox: queue.Queue[tuple[UserTask, Outcome]] = queue.Queue()  # outcomes, from executor threads
        self._waiting: set[tuple[int, str]] = set()  # (block, user) still running for a previous owner
        self.halted = False  # a block's rollout exceeded its failure budget: later blocks do not run

    # -- saving ------------------------------------------------------------------------------------
    def _snapshot(self, **changes: Any) -> LedgerRecord:
        with self.lock:
            blocks = [b.model_copy(update={"users": dict(users), "started": list(started)})
                      for b, users, started in zip(self.blocks, self.results, self.started, strict=True)]
        self.record = self.record.with_blocks(blocks, **changes)
        return self.record

    def save(self, durable: bool = False, **changes: Any) -> None:
        self._staged_at = time.monotonic()
        self.ctx.sink.save(self._snapshot(**changes), self.log.text(), durable=durable)

    def _set(self, index: int, uid: str, status: str, reason: str) -> None:
        result = UserResult(status=status, reason=self.ctx.redactor(reason))  # type: ignore[arg-type]
        with self.lock:
            self.results[index][uid] = result
        if self.ctx.on_user is not None:
            self.ctx.on_user(self.job.name, uid, status)

    # -- the build ---------------------------------------------------------------------------------
    def run(self) -> LedgerRecord:
        desired = self.claimed.desired
        if self.record.status == "IN-PROGRESS":
            self.log(f"build {self.record.build_id} of job {self.job.name} started")
            self.save(status="WORKING", started_at=self.record.started_at or utcnow())
        aborted = False
        for block in self.job.blocks:
            server = desired.servers[block.server]
            definition = desired.definitions[block.definition]
            if len(self.blocks) <= block.index:
                self.blocks.append(block_record(block, server, definition, {}))
                self.results.append({})
                self.started.append([])
            done = self.results[block.index]
            todo = [u for u in recipients(block, server) if u not in done]
            if aborted:
                for uid in todo:
                    self._set(block.index, uid, "NOT_RUN", HALTED if self.halted else policy.ABORTED_EARLIER)
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
        self.save(status=final, finished_at=utcnow(), lease_expires_at=None)
        return self.record

    def interrupt_as_failed(self) -> LedgerRecord:
        """on_interrupt: fail — started users without a result FAILED (they may have run), the rest NOT_RUN."""
        desired = self.claimed.desired
        for block in self.job.blocks:
            server = desired.servers[block.server]
            if len(self.blocks) <= block.index:
                self.blocks.append(block_record(block, server, desired.definitions[block.definition], {}))
                self.results.append({})
                self.started.append([])
            began = set(self.started[block.index])
            for uid in recipients(block, server):
                if uid not in self.results[block.index]:
                    if uid in began:
                        self._set(block.index, uid, "FAILED", INTERRUPTED_RUNNING)
                    else:
                        self._set(block.index, uid, "NOT_RUN", INTERRUPTED_NOT_STARTED)
        self.log(f"build {self.record.build_id} was interrupted; on_interrupt is fail")
        self.save(status="FAILURE", error="interrupted", finished_at=utcnow(), lease_expires_at=None)
        return self.record

    def _run_block(self, block: Block, server: Server, definition: Definition, todo: list[str]) -> bool:
        """Run one block; returns True when the job is aborted from here on."""
        content = self.claimed.content.of(definition)
        prepared = [prepare_user(block, definition, uid, content, self.ctx.env, self.ctx.redactor.add) for uid in todo]
        ready = []
        for p in prepared:  # checked before the claim (SPEC 9.1 rule 10); only an executor elsewhere can lack one
            if p.missing_secrets:
                self._set(block.index, p.user, "FAILED", f"secret {', '.join(p.missing_secrets)} is not set in the "
                          "environment that runs this deployment")
            else:
                ready.append(p)
        verdict = policy.triage(ready, self.job.on_failure)
        for uid, (status, reason) in verdict.settled.items():
            self.log(f"{uid}: {status}, {reason}" if status == "FAILED" else f"{uid}: {reason}")
            self._set(block.index, uid, status, reason)
        for warning in verdict.warnings:
            self.log(warning)
        if verdict.aborted:
            return True
        driver = self.ctx.drivers.get(server)
        markers = not driver.idempotent_apply or self.record.on_interrupt == "fail"
        queue_ = self._recover_started(block, server, driver, verdict.deploy)
        if self.job.on_failure == "abort" and any(r.status == "FAILED" for r in self.results[block.index].values()):
            for p in queue_:
                self._set(block.index, p.user, "NOT_RUN", policy.ABORTED_FAILURE)
            return True
        for p in queue_:
            self._local[(block.index, p.user)] = (driver, deploy_request(
                self.job, self.record.build_id, block, server, definition, p, self.log))
        if block.rollout is not None:
            return self._roll_out(block, server, driver, queue_, markers)
        return self._dispatch(block, server, driver, queue_, markers)

    def _roll_out(self, block: Block, server: Server, driver: Driver, deploy: list[Prepared], markers: bool) -> bool:
        """`rollout:` waves (reconciler.core.rollout): after each wave, more failures than `max_failures`
        halt the block (its remaining users NOT_RUN "halted by rollout") and the job. True: stop the job."""
        assert block.rollout is not None
        everyone = recipients(block, server)
        waves = plan_waves(everyone, block.rollout)
        by_user = {p.user: p for p in deploy}
        results = self.results[block.index]
        for index, wave in enumerate(waves):
            batch = [by_user[uid] for uid in wave if uid in by_user]
            if batch:
                self.log(f"block {block.index} wave {index + 1}/{len(waves)}: starting {len(batch)} user(s)")
            aborted = self._dispatch(block, server, driver, batch, markers) if batch else False
            statuses = {uid: r.status for uid, r in results.items()}
            self.log(wave_summary(block.index, index, waves, statuses, block.rollout, len(everyone)))
            halted = budget_exceeded(so_far(waves, index, statuses), block.rollout, len(everyone))
            if aborted or halted:
                reason = HALTED if halted and not aborted else policy.ABORTED_FAILURE
                for uid in (u for later in waves[index + 1:] for u in later):
                    if uid not in results:
                        self._set(block.index, uid, "NOT_RUN", reason)
                self.halted = halted and not aborted
                return True
        return False

    def _task(self, block: Block, server: Server, driver: Driver, uid: str) -> UserTask:
        return UserTask(job=self.job.name, build_id=self.record.build_id, epoch=self.record.epoch,
                        block=block.index, user=uid, desired_commit=self.record.desired_commit, server=server.name,
                        driver_type=server.driver_type, action=block.action, idempotent=driver.idempotent_apply)

    def _recover_started(self, block: Block, server: Server, driver: Driver, deploy: list[Prepared]) -> list[Prepared]:
        """Users a previous owner had started but not finished: ask the executor what it knows; an unknown
        one that cannot be absorbed twice (or under on_interrupt: fail) is FAILED, never run again."""
        began = [u for u in self.started[block.index] if u not in self.results[block.index]]
        if not began:
            return deploy
        tasks = {u: self._task(block, server, driver, u) for u in began}
        known = self.ctx.executor.resume(list(tasks.values()), self._on_done)
        handled: set[str] = set()
        for uid, task in tasks.items():
            answer = known.get(task.key)
            if isinstance(answer, Outcome):
                self._finish_user(block, next((p for p in deploy if p.user == uid), None), uid, answer)
                handled.add(uid)
            elif answer == "running":
                self._waiting.add((block.index, uid))
                handled.add(uid)
            elif not self.ctx.fenced_executor:
                status, reason = policy.interrupted_started(server.driver_type)
                if self.record.on_interrupt == "fail":
                    status, reason = "FAILED", INTERRUPTED_RUNNING
                self.log(f"{uid}: {status}, {reason}")
                self._set(block.index, uid, status, reason)
                handled.add(uid)
        return [p for p in deploy if p.user not in handled]

    def _on_done(self, task: UserTask, result: Outcome) -> None:
        self._inbox.put((task, result))

    def _finish_user(self, block: Block, prepared: Prepared | None, uid: str, result: Outcome) -> str:
        reason = self.ctx.redactor(result.reason)
        status, reason = policy.after_deploy(prepared, result.status, reason) if prepared else (result.status, reason)
        self.log(f"{uid}: {result.status}" + (f", {reason}" if reason else ""))
        self._set(block.index, uid, status, reason)
        return status

    # -- dispatch ----------------------------------------------------------------------------------
    def _dispatch(self, block: Block, server: Server, driver: Driver, deploy: list[Prepared], markers: bool) -> bool:
        """Start users in waves (bounded by `concurrency`), collect their outcomes, save as they come."""
        index = block.index
        items = deque(deploy)
        by_user = {p.user: p for p in deploy}
        in_flight: set[str] = {uid for (i, uid) in self._waiting if i == index}
        self._waiting -= {(index, uid) for uid in in_flight}  # a later rollout wave must not wait for them again
        holding: set[str] = set()  # users of ours holding one of the server's max_parallel slots
        abandoned: set[str] = set()  # not started by any worker when the pass was stopped: left to the next pass
        limits = self.ctx.limits
        aborted = False
        stopped: str | None = None
        while True:
            if items and not aborted and stopped is None and not self.ctx.stop.is_set():
                # calls the executor runs there and then (short, in-process) are handed over one at a time, so
                # that the lease, the fence and a stop are checked before each user, as for a wave; and inline
                # calls of concurrent builds take turns, so a build checks them again once its turn has come
                inline = self.ctx.executor.inline(server.driver_type)
                stopped = None if inline else self._may_start()
                width = 1 if inline else self.ctx.concurrency
                free = width - len(in_flight)
                # a wave whose markers cost a durable commit waits for half the slots (fewer, larger commits)
                wave_min = max(1, width // 2) if markers and in_flight else 1
                if stopped is None and free >= min(wave_min, len(items)):
                    # max_parallel: wait a moment for a slot only when nothing of ours is running to free one
                    slots = limits.take(server.name, min(free, len(items)), wait=0 if in_flight else 0.5)
                    wave = [items.popleft() for _ in range(slots)]
                    started = False
                    if wave:
                        with self.ctx.executor.turn(server.driver_type):
                            if inline and not self.ctx.stop.is_set():
                                stopped = self._may_start()
                            if stopped is None and not self.ctx.stop.is_set():
                                stopped = self._start(block, server, driver, wave, markers)
                                started = stopped is None
                    if started:
                        in_flight.update(p.user for p in wave)
                        holding.update(p.user for p in wave)
                    else:  # not started: stopping, or the lease or fence failed
                        items.extendleft(reversed(wave))
                        limits.give_back(server.name, slots)
            if not in_flight:
                if items and not aborted and stopped is None and not self.ctx.stop.is_set():
                    continue  # the server is full with other builds' users: wait for a slot
                break
            try:
                got = [self._inbox.get(timeout=0.5)]
            except queue.Empty:
                got = []
            while True:
                try:
                    got.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for task, result in got:
                if task.build_id != self.record.build_id or task.block != index or task.user not in in_flight:
                    continue
                in_flight.discard(task.user)
                if task.user in holding:
                    holding.discard(task.user)
                    limits.give_back(server.name, 1)
                status = self._finish_user(block, by_user.get(task.user), task.user, result)
                if policy.stops_job(status, self.job.on_failure):
                    aborted = True
            if self.ctx.stop.is_set() and not aborted and in_flight and self.ctx.fenced_executor:
                # stopping: users no worker has started are not waited for (their fences hold them to one
                # run, and the next pass collects or submits them: they stay without a result, the build
                # WORKING); the rest finish as usual
                for uid in self.ctx.executor.abandon_unstarted(self.record.build_id, index, sorted(in_flight)):
                    in_flight.discard(uid)
                    abandoned.add(uid)
                    if uid in holding:
                        holding.discard(uid)
                        limits.give_back(server.name, 1)
            if got:
                self._save_checkpoint()
            elif (failure := self.ctx.executor.failure()) is not None:  # outcomes cannot be collected now
                self.save()
                raise failure
        rest = [p.user for p in items]
        if stopped is not None:
            raise Stopped(stopped)
        if self.ctx.stop.is_set() and not aborted and (rest or abandoned):
            self.save()
            raise Interrupted(self.record)
        for uid in rest:
            self._set(index, uid, "NOT_RUN", policy.ABORTED_FAILURE)
        return aborted

    def _save_checkpoint(self) -> None:
        # The writer commits checkpoints at most every checkpoint_seconds and only the newest staged record
        # counts: a snapshot copies the whole record and log (O(users)), so stage one a few times per commit,
        # not per outcome (that made a block of N users cost O(N^2)). Outcomes not staged yet are in the next
        # checkpoint or the final record; a crash re-runs them as any unsaved result (markers still fence).
        if time.monotonic() - self._staged_at < self.ctx.checkpoint_seconds / 4:
            return
        lost = self.ctx.sink.lost(self.record.build_id)
        if lost is None:
            self.save()

    def _may_start(self) -> str | None:
        """None when a new user may start now; else why not (the build is lost, or its lease is too old
        and cannot be renewed: SPEC 9.1 rule 3, self-fencing)."""
        lost = self.ctx.sink.lost(self.record.build_id)
        if lost is not None:
            return lost
        if self.ctx.sink.lease_age(self.record.build_id) > self.ctx.lease_seconds / 2:
            try:
                self.save(durable=True)  # renew now: the writer stamps a fresh lease on the record
            except (BuildLost, LedgerUnavailable) as exc:  # either way, nobody new starts here
                return f"the lease of build {self.record.build_id} could not be renewed ({exc}); stopping"
        return None

    def _start(self, block: Block, server: Server, driver: Driver, wave: list[Prepared], markers: bool) -> str | None:
        """Hand a wave of users to the executor; their started markers first, durably, when needed."""
        index = block.index
        if markers:
            with self.lock:
                before = list(self.started[index])
                self.started[index].extend(p.user for p in wave)
            try:
                self.save(durable=True)
            except (BuildLost, LedgerUnavailable) as exc:  # not durable: these users are not started (rule 4)
                with self.lock:
                    self.started[index] = before
                if self.ctx.sink.lost(self.record.build_id) is None:
                    with contextlib.suppress(BuildLost, LedgerUnavailable):  # it stops anyway
                        self.save()
                return f"started markers of {len(wave)} user(s) could not be made durable ({exc}); stopping"
        for p in wave:
            self.ctx.executor.submit(self._task(block, server, driver, p.user), self._on_done)
        return None

    def run_local(self, task: UserTask) -> Outcome:
        """The in-process executor's call: the prepared request, the driver, the failpoints."""
        driver, request = self._local.pop((task.block, task.user))
        faults.point("user.before-apply", f"{request.job} {request.user.id}")
        try:
            result = driver.run(request)
        except Exception as exc:  # a driver bug or target error fails this user, never the pass
            result = Outcome("FAILED", f"driver error: {type(exc).__name__}: {exc}")
        faults.point("user.after-apply", f"{request.job} {request.user.id} {result.status}")
        return result
