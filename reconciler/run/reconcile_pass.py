"""One reconcile pass: lock, load, plan, claim, execute, commit. SPEC section 5."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import __version__
from reconciler.core.settings import Settings
from reconciler.core.timeutil import utcnow
from reconciler.errors import UserError
from reconciler.ledger import git, quiet
from reconciler.ledger.branch import committed_settings, deployment_branch
from reconciler.ledger.lock import RepoLock

if TYPE_CHECKING:  # the modules a pass needs only when it has work: a quiet pass never loads them
    from reconciler.core.plan import Plan
    from reconciler.core.records import LedgerRecord
    from reconciler.core.redact import Redactor
    from reconciler.core.snapshot import Snapshot
    from reconciler.ledger.writer import BranchStore
    from reconciler.run.engine import BuildLog, Claimed, RunContext


@dataclass
class PassOptions:
    repo: Path
    remote: str | None = None
    branch: str | None = None
    concurrency: int | None = None
    only: str | None = None
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    lock_wait: float = 10.0
    stop: threading.Event = field(default_factory=threading.Event)
    events: Callable[[str, dict[str, object]], None] = lambda event, data: None
    on_user: Callable[[str, str, str], None] | None = None


@dataclass
class PassResult:
    plan: Plan | None  # None when the tip was already known to need nothing (see quiet.py)
    ran: list[LedgerRecord] = field(default_factory=list)
    skipped_in_flight: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # claimed by another reconciler first
    interrupted: bool = False
    quiet_up_to_date: int | None = None

    @property
    def up_to_date(self) -> int:
        return len(self.plan.up_to_date) if self.plan is not None else self.quiet_up_to_date or 0

    @property
    def failed(self) -> bool:
        return any(r.status == "FAILURE" for r in self.ran)


def claim_record(state: Snapshot, job: str, started: datetime) -> LedgerRecord:
    from reconciler.core.records import LedgerRecord, new_build_id
    from reconciler.run.ownership import me

    jf = state.desired.job_files[job]
    assert jf.job is not None and state.commit is not None
    now = utcnow()
    build_id = new_build_id(job, now)
    added = state.history.added.get(job)
    created = datetime.fromtimestamp(added[2], now.tzinfo) if added else None
    lease = now + timedelta(seconds=state.settings.lease_seconds)
    return LedgerRecord.model_validate({
        "job": job, "job_blob": jf.blob, "spec_digest": jf.job.spec_digest, "desired_commit": state.commit,
        "build_id": build_id, "status": "IN-PROGRESS", "owner": me(started), "lease_expires_at": lease,
        "created_at": created, "queued_at": now, "started_at": None, "finished_at": None,
        "on_failure": jf.job.on_failure, "on_interrupt": state.settings.on_interrupt, "blocks": [], "summary": {},
        "log": state.ledger.log_path(build_id), "error": None, "reconciler_version": __version__,
    })


def _fail_interrupted(record: LedgerRecord, state: Snapshot, store: BranchStore, log: BuildLog) -> LedgerRecord:
    """on_interrupt: fail — users without a final result become NOT_RUN; the job ends FAILURE."""
    from reconciler.core.model import recipients
    from reconciler.core.records import UserResult
    from reconciler.run.engine import block_record

    job = state.desired.jobs.get(record.job)
    blocks = list(record.blocks)
    if job is not None:
        for block in job.blocks:
            server = state.desired.servers[block.server]
            if block.index >= len(blocks):
                definition = state.desired.definitions[block.definition]
                blocks.append(block_record(block, server, definition, {}))
            users = dict(blocks[block.index].users)
            for uid in recipients(block, server):
                users.setdefault(uid, UserResult(status="NOT_RUN", reason="interrupted"))
            blocks[block.index] = blocks[block.index].model_copy(update={"users": users})
    log(f"build {record.build_id} was interrupted; on_interrupt is fail")
    final = record.with_blocks(blocks, status="FAILURE", error="interrupted", finished_at=utcnow(),
                               lease_expires_at=None)
    store.save(final, log.text(), f"status: {record.job} FAILURE (interrupted)")
    return final


def sync_with_remote(repo: git.Repo, branch: str, remote: str, ledger_dir: str,
                     store_factory: Callable[[str], BranchStore]) -> str:
    """Fetch and fast-forward; push status commits a crashed pass left unpushed. Returns the tip to use."""
    local = git.resolve(repo, f"refs/heads/{branch}")
    remote_tip = git.fetch(repo, remote, branch)
    if remote_tip is None:
        raise UserError(f"remote {remote!r} has no branch {branch!r}; push the deployment branch first")
    if local is None or local == remote_tip or git.is_ancestor(repo, local, remote_tip):
        store = store_factory(remote_tip)
        store.follow_local(remote_tip)
        return remote_tip
    base = git.merge_base(repo, local, remote_tip) or remote_tip
    foreign = [sha for sha, ours in git.commits_in(repo, base, local) if not ours]
    if foreign:
        raise UserError(f"local branch {branch!r} has {len(foreign)} commit(s) that are not on {remote!r} "
                        f"(first {foreign[0][:12]}); push or drop them, then reconcile again")
    # only our own status commits are ahead (a pass stopped before pushing): replay them on the remote
    store = store_factory(local)
    store.carry_onto(remote_tip)
    if store.tip != remote_tip and not git.push(repo, remote, store.tip, branch):
        raise UserError(f"remote {remote!r} moved while replaying status commits; reconcile again")
    store.follow_local(store.tip)
    return store.tip


def run_pass(options: PassOptions) -> PassResult:
    repo = git.open_repo(options.repo)
    started = utcnow()
    with RepoLock(repo.state_dir, wait=options.lock_wait):
        local = committed_settings(repo, "HEAD")[0]  # before the fetch: branch, remote, ledger_dir
        branch = deployment_branch(repo, options.branch, local)
        tip = git.resolve(repo, f"refs/heads/{branch}")
        remote = options.remote or local.remote or git.upstream_remote(repo, branch)
        if remote is not None:
            try:
                tip = sync_with_remote(repo, branch, remote, local.ledger_dir, lambda at: _store(
                    repo, branch, at, local, remote, options))
            except git.RemoteUnreachable as exc:
                raise UserError(str(exc)) from None
        if tip is None:
            raise UserError(f"branch {branch!r} has no commits yet; commit the deployment repo first")
        if not git.ledger_sync_pending(repo):
            known = quiet.quiet_count(repo.state_dir, branch, tip, started)
            if known is not None:
                return PassResult(plan=None, quiet_up_to_date=known)
        return _full_pass(repo, branch, tip, remote, options, started)


def _store(repo: git.Repo, branch: str, at: str, settings: Settings, remote: str | None,
           options: PassOptions, redactor: Redactor | None = None) -> BranchStore:
    from reconciler.core.redact import Redactor
    from reconciler.ledger.writer import BranchStore

    return BranchStore(repo, branch, at, settings.ledger_dir, (settings.commit_name, settings.commit_email),
                       redactor or Redactor(), remote, options.events)


def _full_pass(repo: git.Repo, branch: str, tip: str, remote: str | None, options: PassOptions,
               started: datetime) -> PassResult:

    from reconciler.core.redact import Redactor
    from reconciler.ledger.load import load_commit_state
    from reconciler.ledger.writer import ClaimLost
    from reconciler.run.engine import BuildLog, Claimed, RunContext
    from reconciler.run.ownership import recoverable

    state = load_commit_state(repo, tip, {"concurrency": options.concurrency}, skip_executed=True)
    if state.settings_problems:
        first = state.settings_problems[0]
        raise UserError(f"{first.as_text()}; fix reconciler.yaml before reconciling")
    if repo.top is not None and git.head_branch(repo) == branch:
        git.repair_ledger_checkout(repo, state.settings.ledger_dir)
    plan = state.plan()
    result = PassResult(plan)
    settings = state.settings
    redactor = Redactor()
    store = _store(repo, branch, tip, settings, remote, options, redactor)
    ctx = RunContext(repo_root=repo.root, env=options.env, redactor=redactor,
                     store=store, concurrency=settings.concurrency, lease_seconds=settings.lease_seconds,
                     stop=options.stop, on_user=options.on_user, work_root=repo.state_dir / "work")
    current = Claimed.of(state.desired)  # the tip's desired state and content, shared by its builds
    now = utcnow()
    for job in plan.in_flight:
        record = state.ledger.records[job]
        if options.only and job != options.only:
            continue
        if not recoverable(record, now):
            result.skipped_in_flight.append(job)
            continue
        # a build resumes exactly what was claimed: the job, servers and definitions of its commit
        claimed = state if record.desired_commit == state.commit else load_commit_state(
            repo, record.desired_commit, {"concurrency": options.concurrency})
        if not _run_one(ctx, state, store, record, options, result, recovering=True,
                        claimed=claimed if claimed is not state else None, current=current):
            return result
    for job in plan.to_run:
        if options.only and job != options.only:
            continue
        if options.stop.is_set():
            result.interrupted = True
            break
        record = claim_record(state, job, started)
        log = BuildLog(redactor)
        log(f"job {job} claimed by {record.owner.host} pid {record.owner.pid} as build {record.build_id}")
        try:
            store.save(record, log.text(), f"status: claim {job}", claim=True,
                       job_path=state.desired.job_files[job].path)
        except ClaimLost as lost:
            result.lost.append(job)
            options.events("job.skipped", {"job": job, "reason": str(lost)})
            continue
        options.events("job.claimed", {"job": job, "build_id": record.build_id})
        if not _run_one(ctx, state, store, record, options, result, log=log, current=current):
            break
    if not (plan.to_run or plan.in_flight or plan.problems or result.ran or options.only):
        due = [j.run_at for name in plan.scheduled if (j := state.desired.jobs.get(name)) and j.run_at]
        quiet.remember(repo.state_dir, branch, store.tip, len(plan.up_to_date), min(due) if due else None)
    return result


def _run_one(ctx: RunContext, state: Snapshot, store: BranchStore, record: LedgerRecord, options: PassOptions,
             result: PassResult, recovering: bool = False, log: BuildLog | None = None,
             claimed: Snapshot | None = None, current: Claimed | None = None) -> bool:
    """Run (or recover) one job; False when the pass must stop (interrupted)."""
    from reconciler.ledger.writer import ClaimLost
    from reconciler.run.engine import BuildLog, Claimed, Interrupted, JobRunner
    from reconciler.run.ownership import me

    claimed = claimed or state
    job = claimed.desired.jobs.get(record.job)
    if log is None:
        previous = ""
        try:
            blob = _log_blob(state, record)
            previous = git.read_blobs(store.repo, [blob])[blob].decode("utf-8", "replace")
        except (git.GitError, KeyError):
            previous = ""
        log = BuildLog(ctx.redactor, previous)
    if recovering:
        options.events("job.recovering", {"job": record.job, "build_id": record.build_id})
        log(f"recovering build {record.build_id} (owner {record.owner.host} pid {record.owner.pid} is gone)")
        if record.on_interrupt == "fail" or job is None:
            if job is None:
                log(f"the claimed job cannot be loaded from commit {record.desired_commit[:12]}; ending it")
            result.ran.append(_fail_interrupted(record, claimed, store, log))
            return True
        record = record.model_copy(update={"owner": me(utcnow()),
                                           "recoveries": record.recoveries + 1})
    assert job is not None
    options.events("job.started", {"job": record.job, "build_id": record.build_id})
    try:
        inputs = current if claimed is state and current is not None else Claimed.of(claimed.desired)
        final = JobRunner(ctx, inputs, job, record, log).run()
    except ClaimLost as lost:
        result.lost.append(record.job)
        options.events("job.lost", {"job": record.job, "build_id": record.build_id, "reason": str(lost)})
        return True
    except Interrupted as stop:
        result.ran.append(stop.record)
        result.interrupted = True
        options.events("job.interrupted", {"job": record.job, "build_id": record.build_id})
        return False
    result.ran.append(final)
    options.events("job.finished", {"job": final.job, "build_id": final.build_id, "status": final.status,
                                    **{k: v for k, v in final.summary.items()}})
    return True


def _log_blob(state: Snapshot, record: LedgerRecord) -> str:
    entries = state.files.entries()
    return entries[record.log].blob


