"""Starting builds in a pass: claims in batches, takeovers of interrupted builds, up to `job_concurrency`
builds at once (SPEC 5.3, 9.1, 9.2).

Claims are made ahead of the builds, in batches that share one commit (and push): a claimed build
is `IN-PROGRESS` until a slot runs it. The batch grows while builds wait for claims (fast jobs)
and stays small while they wait for slots (slow jobs), so a pass over 10,000 quick jobs makes a
few hundred commits, not tens of thousands, and one slow job no longer holds up the rest.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reconciler import __version__
from reconciler.core.model import Job
from reconciler.core.plan import start_key
from reconciler.core.records import LedgerRecord, new_build_id
from reconciler.core.snapshot import Snapshot
from reconciler.core.timeutil import utcnow
from reconciler.drivers.base import Outcome
from reconciler.errors import UserError
from reconciler.ledger import git
from reconciler.ledger.writer import BuildLost, LedgerUnavailable, LedgerWriter
from reconciler.run.engine import BuildLog, Claimed, Interrupted, JobRunner, RunContext, Stopped
from reconciler.run.executors import ExecutorUnavailable, UserTask
from reconciler.run.ownership import me, recoverable

Events = Callable[[str, dict[str, object]], None]
MAX_BATCH = 128


@dataclass
class Outcomes:
    """What happened to the builds of a pass."""

    ran: list[LedgerRecord] = field(default_factory=list)
    left_in_flight: list[str] = field(default_factory=list)  # a live owner's build: left alone
    lost: list[str] = field(default_factory=list)  # claimed or taken over by another reconciler first
    stopped: list[str] = field(default_factory=list)  # could not go on here; WORKING, recoverable
    held: list[tuple[str, str, str]] = field(default_factory=list)  # (job, its state, why): behind a build elsewhere
    interrupted: bool = False
    unavailable: str | None = None  # the ledger could not be written: the pass exits 2


def claim_record(state: Snapshot, job: str, owner_started: datetime) -> LedgerRecord:
    jf = state.desired.job_files[job]
    assert jf.job is not None and state.commit is not None
    now = utcnow()
    build_id = new_build_id(job, now)
    added = state.history.added.get(job)
    created = datetime.fromtimestamp(added[2], UTC) if added else None
    return LedgerRecord.model_validate({
        "job": job, "job_blob": jf.blob, "spec_digest": jf.job.spec_digest, "desired_commit": state.commit,
        "build_id": build_id, "status": "IN-PROGRESS", "owner": me(owner_started),
        "lease_expires_at": now + timedelta(seconds=state.settings.lease_seconds), "created_at": created,
        "queued_at": now, "started_at": None, "finished_at": None, "on_failure": jf.job.on_failure,
        "on_interrupt": state.settings.on_interrupt, "blocks": [], "summary": {},
        "log": state.ledger.log_path(build_id), "error": None, "reconciler_version": __version__, "epoch": 1,
    })


class BuildScheduler:
    def __init__(self, state: Snapshot, ctx: RunContext, writer: LedgerWriter, started: datetime,
                 load_claimed: Callable[[str], Snapshot], job_concurrency: int, events: Events,
                 notify: Callable[[str, LedgerRecord], None] | None = None) -> None:
        self.state = state
        self.ctx = ctx
        self.writer = writer
        self.started = started
        self.load_claimed = load_claimed  # a build resumes exactly what was claimed: its commit's desired state
        self.job_concurrency = max(1, job_concurrency)
        self.events = events
        self.notify = notify or (lambda event, record: None)  # notify: targets (run/notices.py)
        self.current = Claimed.of(state.desired)  # the tip's desired state and content, shared by its builds
        self.runners: dict[str, JobRunner] = {}
        self.finishing: list[JobRunner] = []  # done running, final record not durable yet: targets still busy
        self.outcomes = Outcomes()
        self._lock = threading.Lock()
        #: (server, definition) -> the job whose build in flight deploys there and is not run by this pass (another
        #: reconciler's, or one held back): an interrupted build or a job newer than it must not run there meanwhile
        self._elsewhere: dict[tuple[str, str], str] = {}

    # -- the executor's view -----------------------------------------------------------------------
    def run_local(self, task: UserTask) -> Outcome:
        with self._lock:
            runner = self.runners[task.build_id]
        return runner.run_local(task)

    def log_line(self, task: UserTask, line: str) -> None:
        """A line the driver logged on a fleet worker (masked there, masked again here): into the build log."""
        with self._lock:
            runner = self.runners.get(task.build_id)
        if runner is not None:
            runner.log(line)

    # -- the pass ----------------------------------------------------------------------------------
    def run(self, in_flight: list[str], to_run: list[str], elsewhere: Iterable[str] = ()) -> Outcomes:
        """Take over what `in_flight` may be taken over, claim and run `to_run`. `elsewhere`: other jobs in flight
        (not for this pass to take over), whose targets `to_run` must not deploy to meanwhile."""
        pool = ThreadPoolExecutor(max_workers=self.job_concurrency, thread_name_prefix="build")
        running: dict[Future[None], JobRunner] = {}
        ready: deque[tuple[JobRunner, str]] = deque()
        try:
            for job in elsewhere:  # in flight, not for this pass to take over (--only, a later round)
                self._runs_elsewhere(job, self._claimed_targets(self.state.ledger.records[job]))
            ready.extend(self._takeovers(in_flight))
            pending = deque(to_run)
            batch = max(4, 2 * self.job_concurrency)
            while True:
                if self.writer.problem and not self.outcomes.unavailable:
                    self.outcomes.unavailable = self.writer.problem  # start nothing more; builds in flight stop
                if self.ctx.stop.is_set() or self.outcomes.unavailable:
                    pending.clear()
                if pending and len(ready) < self.job_concurrency:
                    starved = not ready and len(running) < self.job_concurrency
                    take = [pending.popleft() for _ in range(min(batch, len(pending)))]
                    ready.extend(self._claim(take))
                    if starved:  # builds waited for claims: claim more at once next time
                        batch = min(MAX_BATCH, batch * 2)
                if not self.ctx.stop.is_set() and not self.outcomes.unavailable:
                    for runner, kind in self._startable(ready, running, len(running)):
                        running[pool.submit(self._run_one, runner, kind)] = runner
                        ready.remove((runner, kind))
                if not running:
                    if (pending or ready) and not self.ctx.stop.is_set() and not self.outcomes.unavailable:
                        if ready and self.finishing:  # a conflicting build waits for its predecessor's final commit
                            self.writer.wait_settled([r.record.build_id for r in self.finishing], 0.05)
                        continue
                    break
                waiting = pending or (ready and self.finishing)
                done, _ = wait(list(running), timeout=0.05 if waiting else None, return_when=FIRST_COMPLETED)
                for future in done:
                    self.finishing.append(running.pop(future))
                    future.result()
            if ready and self.ctx.stop.is_set():
                self.outcomes.interrupted = True  # claimed, not started: IN-PROGRESS, the next pass runs them
        finally:
            pool.shutdown(wait=True)
        return self.outcomes

    def _startable(self, ready: deque[tuple[JobRunner, str]], running: dict[Future[None], JobRunner],
                   busy: int) -> list[tuple[JobRunner, str]]:
        """Ready builds that may start now, oldest first. Two builds that deploy the same definition on the
        same server run in claim order, one after the other (the older one's content must not land last)."""
        # a build's targets stay busy until its final record is durable: after a crash, recovery re-applies
        # unsaved results in claim order, so a newer build must not have applied on top meanwhile
        self.finishing = [r for r in self.finishing if not self.writer.settled(r.record.build_id)]
        blocked = {target for runner in [*running.values(), *self.finishing] for target in _targets(runner)}
        chosen: list[tuple[JobRunner, str]] = []
        held: set[tuple[str, str]] = set()  # targets of ready builds that wait for a busy one
        for runner, kind in ready:
            if busy + len(chosen) >= self.job_concurrency:
                break
            targets = _targets(runner)
            if targets & blocked:
                held |= targets & blocked
                blocked |= targets  # later builds on these targets wait for this one too
                continue
            blocked |= targets
            chosen.append((runner, kind))
        if held and busy + len(chosen) < self.job_concurrency:
            # a free slot waits for a final record: have it committed now, not at the next tick. While every slot
            # is busy anyway, finals ride along with the next commit (claims, the tick): one commit, not one each
            for runner in self.finishing:
                if _targets(runner) & held:
                    self.writer.expedite(runner.record.build_id)
        return chosen

    def _claim(self, jobs: list[str]) -> list[tuple[JobRunner, str]]:
        items = []
        for job in self._not_behind_others(jobs):
            record = claim_record(self.state, job, self.started)
            log = BuildLog(self.ctx.redactor)
            log(f"job {job} claimed by {record.owner.host} pid {record.owner.pid} as build {record.build_id}")
            items.append((record, log, self.state.desired.job_files[job].path))
        if not items:
            return []
        try:
            answers = self.writer.claim([(record, log.text(), path) for record, log, path in items])
        except LedgerUnavailable as exc:
            self.outcomes.unavailable = str(exc)
            return []
        claimed = []
        for record, log, _ in items:
            lost = answers[record.build_id]
            targets = _job_targets(self.state.desired.jobs[record.job])
            if lost is not None:  # claimed by another reconciler meanwhile: it runs there
                self.outcomes.lost.append(record.job)
                self.events("job.skipped", {"job": record.job, "reason": lost})
                self._runs_elsewhere(record.job, targets)
                continue
            self.events("job.claimed", {"job": record.job, "build_id": record.build_id})
            self.notify("job.claimed", record)
            if self._behind(record.job, "IN-PROGRESS", targets, "claimed, "):  # started by a later pass
                continue
            claimed.append((self._runner(self.current, self.state.desired.jobs[record.job], record, log,
                                         recovering=False), "claimed"))
        return claimed

    def _takeovers(self, in_flight: list[str]) -> list[tuple[JobRunner, str]]:
        """Interrupted builds whose owner is provably gone or whose lease expired: take them over (epoch + 1)."""
        now = utcnow()
        mine = me(self.started)
        taken: list[tuple[JobRunner, str]] = []
        for job in self._claim_order(in_flight):
            record = self.state.ledger.records[job]
            targets = self._claimed_targets(record)
            if not recoverable(record, now, mine):
                self.outcomes.left_in_flight.append(job)
                self._runs_elsewhere(job, targets)
                continue
            if self._behind(job, record.status, targets):  # beside an older build running elsewhere: a later pass
                continue
            claimed = self.state if record.desired_commit == self.state.commit else self.load_claimed(
                record.desired_commit)
            log = BuildLog(self.ctx.redactor, self._previous_log(record))
            log(f"taking over build {record.build_id} (epoch {record.epoch} owner {record.owner.host} pid "
                f"{record.owner.pid} is gone) as epoch {record.epoch + 1}")
            new = record.model_copy(update={"owner": mine, "epoch": record.epoch + 1,
                                            "recoveries": record.recoveries + 1})
            try:
                lost = self.writer.takeover(new, record, log.text(), self.state.ledger.blobs.get(job))
            except LedgerUnavailable as exc:
                self.outcomes.unavailable = str(exc)
                return taken
            if lost is not None:
                self.outcomes.lost.append(job)
                self.events("job.lost", {"job": job, "build_id": record.build_id, "reason": lost})
                self._runs_elsewhere(job, targets)
                continue
            self.events("job.recovering", {"job": job, "build_id": record.build_id, "epoch": new.epoch})
            inputs = self.current if claimed is self.state else Claimed.of(claimed.desired)
            job_model = claimed.desired.jobs.get(job)
            if job_model is None:  # the claimed version cannot be loaded any more: end it
                log(f"the claimed job cannot be loaded from commit {record.desired_commit[:12]}; ending it")
                taken.append((self._ended(new, log), "ended"))
                continue
            kind = "fail" if new.on_interrupt == "fail" else "resume"
            taken.append((self._runner(inputs, job_model, new, log, recovering=True), kind))
        return taken

    def _not_behind_others(self, jobs: list[str]) -> list[str]:
        """The jobs that may be claimed now: not one that deploys a definition to a server where a build in flight
        elsewhere deploys it (another reconciler's, or one held back here). Claimed now, its content could land
        before the older build's: it stays PENDING, and a later pass claims it."""
        return [job for job in jobs if not self._behind(job, "PENDING", _job_targets(self.state.desired.jobs[job]))]

    def _behind(self, job: str, state: str, targets: set[tuple[str, str]], what: str = "") -> bool:
        """Whether `job` must wait for a build in flight elsewhere on one of its targets; if so it is held (and holds
        the later jobs on its targets too)."""
        behind = sorted(target for target in targets if target in self._elsewhere)
        if not behind:
            return False
        server, definition = behind[0]
        other = self._elsewhere[behind[0]]
        self._hold(job, state, f"{what}waits for the build of {other} in flight (definition {definition} on server "
                   f"{server})")
        self._runs_elsewhere(other, targets)
        return True

    def _runs_elsewhere(self, job: str, targets: set[tuple[str, str]]) -> None:
        for target in targets:
            self._elsewhere.setdefault(target, job)

    def _hold(self, job: str, state: str, why: str) -> None:
        self.outcomes.held.append((job, state, why))
        self.events("job.held", {"job": job, "reason": why})

    def _claimed_targets(self, record: LedgerRecord) -> set[tuple[str, str]]:
        """(server, definition) of every block of a build, as claimed (the job file may have changed since)."""
        job = self.state.desired.jobs.get(record.job)
        if job is None or job.blob != record.job_blob:
            try:
                job = self.load_claimed(record.desired_commit).desired.jobs.get(record.job)
            except (git.GitError, UserError):
                job = None
        return _job_targets(job) if job is not None else set()

    def _claim_order(self, in_flight: list[str]) -> list[str]:
        """Interrupted builds oldest first, in the order their claims became durable (the commits that added their
        records: a claim's `queued_at` is stamped before a rejected push and its retry), then by claim time and
        the order jobs are claimed in."""
        records = self.state.ledger.records
        added = self.state.history.added
        ledger = self.state.ledger
        landed: dict[str, int] = {}
        if len(in_flight) > 1 and self.state.commit:
            landed = git.claim_order(self.writer.repo, self.state.commit, [ledger.path(job) for job in in_flight])
        never = len(landed) + len(in_flight)
        return sorted(in_flight, key=lambda j: (landed.get(ledger.path(j), never), records[j].queued_at,
                                                start_key(added, j)))

    def _ended(self, record: LedgerRecord, log: BuildLog) -> JobRunner:
        """A runner for a build whose job cannot be read: it only writes FAILURE (interrupted)."""
        runner = JobRunner(self.ctx, self.current, _placeholder(record), record, log, recovering=True)
        with self._lock:
            self.runners[record.build_id] = runner
        return runner

    def _runner(self, inputs: Claimed, job: Job, record: LedgerRecord, log: BuildLog,
                recovering: bool) -> JobRunner:
        runner = JobRunner(self.ctx, inputs, job, record, log, recovering=recovering)
        with self._lock:
            self.runners[record.build_id] = runner
        return runner

    def _previous_log(self, record: LedgerRecord) -> str:
        try:
            found = git.read_objects(self.writer.repo, [f"{self.writer.base}:{record.log}"])
        except git.GitError:
            return ""
        hit = found.get(f"{self.writer.base}:{record.log}")
        return hit[1].decode("utf-8", "replace") if hit else ""

    def _run_one(self, runner: JobRunner, kind: str) -> None:
        record = runner.record
        job = record.job
        self.events("job.started", {"job": job, "build_id": record.build_id})
        try:
            final = runner.interrupt_as_failed() if kind in ("fail", "ended") else runner.run()
        except BuildLost as lost:
            self.outcomes.lost.append(job)
            self.events("job.lost", {"job": job, "build_id": record.build_id, "reason": str(lost)})
            return
        except Interrupted as stop:
            self.outcomes.ran.append(stop.record)
            self.outcomes.interrupted = True
            self.events("job.interrupted", {"job": job, "build_id": record.build_id})
            return
        except Stopped as why:
            self.outcomes.stopped.append(job)
            self.events("job.stopped", {"job": job, "build_id": record.build_id, "reason": str(why)})
            problem = self.writer.problem
            if problem:
                self.outcomes.unavailable = problem
            return
        except (LedgerUnavailable, ExecutorUnavailable) as exc:
            self.outcomes.stopped.append(job)
            self.outcomes.unavailable = str(exc)
            return
        finally:
            with self._lock:
                self.runners.pop(record.build_id, None)
        self.outcomes.ran.append(final)
        self.events("job.finished", {"job": final.job, "build_id": final.build_id, "status": final.status,
                                     **{k: v for k, v in final.summary.items()}})
        self.notify("job.finished", final)


def _targets(runner: JobRunner) -> set[tuple[str, str]]:
    return _job_targets(runner.job)


def _job_targets(job: Job) -> set[tuple[str, str]]:
    return {(block.server, block.definition) for block in job.blocks}


def _placeholder(record: LedgerRecord) -> Job:
    return Job(name=record.job, path="", blob=record.job_blob, description="", on_failure=record.on_failure,
               run_at=None, suspend=False, retry_of=None, blocks=(), spec_digest=record.spec_digest)
