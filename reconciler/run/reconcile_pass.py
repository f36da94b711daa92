"""One reconcile pass: lock, converge, load, plan, check the environment, take over, claim, run. SPEC 5, 9.

1. Take the repo lock; finish any move of the local branch a crash interrupted; with a remote,
   fetch and fast-forward (the clone converges on the remote, SPEC 9.1 rule 8).
2. A tip known to need nothing stops here (ledger/quiet.py); else load and plan (pure).
3. With work to do: check the environment before claiming anything (run/preflight.py).
4. Builds run through the scheduler (run/builds.py): takeovers of interrupted builds first, then
   claims in batches, up to `job_concurrency` builds at once, each user through the executor;
   every save through the fenced, batched ledger writer (ledger/writer.py).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.core.settings import ExecutorConfig
from reconciler.core.timeutil import utcnow
from reconciler.errors import UserError
from reconciler.ledger import git, quiet
from reconciler.ledger.branch import committed_settings, deployment_branch
from reconciler.ledger.checkout import Checkout
from reconciler.ledger.lock import RepoLock

if TYPE_CHECKING:  # the modules a pass needs only when it has work: a quiet pass never loads them
    from reconciler.core.plan import Plan
    from reconciler.core.records import LedgerRecord
    from reconciler.core.redact import Redactor
    from reconciler.core.snapshot import Snapshot
    from reconciler.run.notices import PassNotices


@dataclass
class PassOptions:
    repo: Path
    remote: str | None = None
    branch: str | None = None
    concurrency: int | None = None
    job_concurrency: int | None = None
    only: str | None = None
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    lock_wait: float = 10.0
    stop: threading.Event = field(default_factory=threading.Event)
    events: Callable[[str, dict[str, object]], None] = lambda event, data: None
    on_user: Callable[[str, str, str], None] | None = None
    #: `--executor`/`--broker` (None: reconciler.yaml's `executor:`); see run.executors.chosen_config
    executor: ExecutorConfig | None = None


@dataclass
class PassResult:
    plan: Plan | None  # None when the tip was already known to need nothing (see quiet.py)
    ran: list[LedgerRecord] = field(default_factory=list)
    skipped_in_flight: list[str] = field(default_factory=list)
    held_back: list[tuple[str, str, str]] = field(default_factory=list)  # (job, state, why): behind a build elsewhere
    lost: list[str] = field(default_factory=list)  # claimed or taken over by another reconciler first
    stopped: list[str] = field(default_factory=list)  # could not go on here (left WORKING, recoverable)
    interrupted: bool = False
    quiet_up_to_date: int | None = None
    commits: int = 0
    pushes: int = 0

    @property
    def up_to_date(self) -> int:
        return len(self.plan.up_to_date) if self.plan is not None else self.quiet_up_to_date or 0

    @property
    def failed(self) -> bool:
        return any(r.status == "FAILURE" for r in self.ran)


def sync_with_remote(repo: git.Repo, branch: str, remote: str, checkout: Checkout) -> str:
    """Fetch and bring the local branch to the remote's tip. Returns the tip to plan on."""
    local = git.resolve(repo, f"refs/heads/{branch}")
    try:
        remote_tip = git.fetch(repo, remote, branch)
    except git.RemoteUnreachable as exc:
        raise UserError(f"{exc}; check the remote and reconcile again (nothing was claimed)") from None
    if remote_tip is None:
        raise UserError(f"remote {remote!r} has no branch {branch!r}; push the deployment branch first")
    if local == remote_tip:
        return remote_tip
    if local is not None and not git.is_ancestor(repo, local, remote_tip):
        base = git.merge_base(repo, local, remote_tip) or remote_tip
        foreign = [sha for sha, ours in git.commits_in(repo, base, local) if not ours]
        if foreign:
            raise UserError(f"local branch {branch!r} has {len(foreign)} commit(s) that are not on {remote!r} "
                            f"(first {foreign[0][:12]}); push or drop them, then reconcile again")
        # only status commits an older reconciler left unpushed: never durable, so nothing relies on them
        checkout.events("local.reset", {"branch": branch, "dropped": len(git.commits_in(repo, base, local))})
    checkout.move(local, remote_tip)
    return remote_tip


def run_pass(options: PassOptions) -> PassResult:
    repo = git.open_repo(options.repo)
    started = utcnow()
    with RepoLock(repo.state_dir, wait=options.lock_wait):
        local = committed_settings(repo, "HEAD")[0]  # before the fetch: branch, remote, ledger_dir
        branch = deployment_branch(repo, options.branch, local)
        checkout = Checkout(repo, branch, local.ledger_dir, options.events)
        checkout.repair()
        remote = options.remote or local.remote or git.upstream_remote(repo, branch)
        tip = sync_with_remote(repo, branch, remote, checkout) if remote else git.resolve(repo, f"refs/heads/{branch}")
        if tip is None:
            raise UserError(f"branch {branch!r} has no commits yet; commit the deployment repo first")
        known = quiet.quiet_count(repo.state_dir, branch, tip, started)
        if known is not None:
            return PassResult(plan=None, quiet_up_to_date=known)
        return _full_pass(repo, branch, tip, remote, options, started)


def _full_pass(repo: git.Repo, branch: str, tip: str, remote: str | None, options: PassOptions,
               started: datetime) -> PassResult:
    from reconciler.drivers.workspace import clear_work_root
    from reconciler.ledger.load import load_commit_state

    clear_work_root(repo.state_dir / "work")  # rendered content a killed pass left behind (rule 11)
    overrides: dict[str, object] = {"concurrency": options.concurrency, "job_concurrency": options.job_concurrency}
    state = load_commit_state(repo, tip, overrides, skip_executed=True)
    gc.freeze()  # see _full_pass_loaded
    try:
        result = _full_pass_loaded(repo, branch, tip, remote, options, started, state, overrides)
    finally:
        gc.unfreeze()
    del state
    # Thawed objects join the oldest generation without counting towards its next collection, so in a process
    # that runs pass after pass (`watch`, `serve`) each pass's state would stay, uncollected (found by an attack:
    # 8 MiB more per pass at 3,000 jobs). Collected here, once, when it has become garbage.
    gc.collect()
    return result


def _full_pass_loaded(repo: git.Repo, branch: str, tip: str, remote: str | None, options: PassOptions,
                      started: datetime, state: Snapshot, overrides: dict[str, object]) -> PassResult:
    """The pass over a loaded state. What was loaded (every module, the state: at 10,000 jobs some 200 MiB of
    small objects) lives for the whole pass, so it is frozen out of the cyclic collector's sight while the pass
    runs: every full collection walked all of it (0.25 s, the whole process paused, up to ten times a pass) and
    found nothing. Thawed afterwards, and what became garbage is collected once the pass is over (`_full_pass`)."""
    from reconciler.core.gates import dependents
    from reconciler.core.redact import Redactor
    from reconciler.ledger.load import load_commit_state
    from reconciler.run.notices import PassNotices

    if state.settings_problems:
        first = state.settings_problems[0]
        raise UserError(f"{first.as_text()}; fix reconciler.yaml before reconciling")
    plan = state.plan(options.env)
    result = PassResult(plan)
    redactor = Redactor()
    notices = PassNotices(state, options.env, redactor, options.events, repo.state_dir)
    try:
        for round_number in range(MAX_ROUNDS):
            in_flight = [j for j in plan.in_flight if (not options.only or j == options.only) and not round_number]
            to_run = [j for j in plan.to_run if not options.only or j == options.only]
            done = PassResult(plan)
            if in_flight or to_run:
                elsewhere = [j for j in plan.in_flight if j not in in_flight]
                _run_builds(repo, branch, remote, state, in_flight, to_run, options, started, done, redactor, notices,
                            elsewhere=elsewhere)
                _merge(result, done)
            plan.block_dependents_of([r.job for r in done.ran if r.status == "FAILURE"])
            notices.blocked(plan)
            # `after:` jobs waiting for a build that just succeeded may be due now: plan again on the new tip
            released = {j for r in done.ran if r.status == "SUCCESS" for j in dependents(plan.waits_for, r.job)}
            if not released or done.interrupted or done.stopped or options.stop.is_set():
                break
            tip = git.resolve(repo, f"refs/heads/{branch}") or tip
            state = load_commit_state(repo, tip, overrides, skip_executed=True)
            plan = state.plan(options.env)
            result.plan, notices.state = plan, state
    finally:
        notices.close()
    if not (plan.to_run or plan.in_flight or plan.problems or result.ran or options.only):
        # the next moment time alone changes the plan: a run_at falls due, a freeze window ends
        quiet.remember(repo.state_dir, branch, git.resolve(repo, f"refs/heads/{branch}") or tip,
                       len(plan.up_to_date), plan.wakes_at())
    return result


MAX_ROUNDS = 100  # rounds of one pass: a chain of `after:` jobs runs link after link, not one link per pass


def _merge(result: PassResult, done: PassResult) -> None:
    result.ran += done.ran
    result.skipped_in_flight += done.skipped_in_flight
    result.held_back += done.held_back
    result.lost += done.lost
    result.stopped += done.stopped
    result.interrupted = result.interrupted or done.interrupted
    result.commits += done.commits
    result.pushes += done.pushes


def _run_builds(repo: git.Repo, branch: str, remote: str | None, state: object, in_flight: list[str],
                to_run: list[str], options: PassOptions, started: datetime, result: PassResult,
                redactor: Redactor, notices: PassNotices, *, elsewhere: list[str]) -> None:
    from reconciler.core.snapshot import Snapshot
    from reconciler.drivers.base import DriverContext
    from reconciler.ledger.load import load_commit_state
    from reconciler.ledger.writer import LedgerWriter
    from reconciler.run import preflight
    from reconciler.run.builds import BuildScheduler
    from reconciler.run.engine import DriverPool, RunContext
    from reconciler.run.executors import chosen_config, create_executor
    from reconciler.run.limits import ServerLimits

    assert isinstance(state, Snapshot)
    settings = state.settings
    checkout = Checkout(repo, branch, settings.ledger_dir, options.events)
    preflight.check(repo, branch, checkout.checked_out)
    writer = LedgerWriter(repo, branch, state.commit or "", settings.ledger_dir,
                          (settings.commit_name, settings.commit_email), redactor, remote, options.events,
                          lease_seconds=settings.lease_seconds, checkpoint_seconds=settings.checkpoint_seconds,
                          checkout=checkout)
    holder: list[BuildScheduler] = []
    config = chosen_config(options.executor, settings.executor, options.env)
    repo_url = (git.remote_url(repo, remote) if remote else None) or str(repo.root)
    executor = create_executor(config, run=lambda task: holder[0].run_local(task),
                               workers=settings.job_concurrency * settings.concurrency, repo_url=repo_url,
                               on_log=lambda task, line: holder[0].log_line(task, line))
    work_root = repo.state_dir / "work"
    pool = DriverPool(DriverContext(repo.root, None, options.env, work_root=work_root, add_secret=redactor.add))
    ctx = RunContext(repo_root=repo.root, env=options.env, redactor=redactor, sink=writer, executor=executor,
                     fenced_executor=executor.fenced,
                     concurrency=settings.concurrency, lease_seconds=settings.lease_seconds, stop=options.stop,
                     on_user=options.on_user, work_root=work_root, drivers=pool,
                     limits=ServerLimits.of(state.desired.servers.values()),
                     checkpoint_seconds=settings.checkpoint_seconds)
    scheduler = BuildScheduler(state, ctx, writer, started,
                               lambda commit: load_commit_state(repo, commit, {"concurrency": options.concurrency}),
                               settings.job_concurrency, options.events, notify=notices.build)
    holder.append(scheduler)
    try:
        outcomes = scheduler.run(in_flight, to_run, elsewhere)
    finally:
        executor.close()
        flushed = writer.flush(patience=min(60.0, settings.lease_seconds / 2))
        writer.close()
    result.ran = outcomes.ran
    result.skipped_in_flight = outcomes.left_in_flight
    result.held_back = outcomes.held
    result.lost = outcomes.lost
    result.stopped = outcomes.stopped
    result.interrupted = outcomes.interrupted
    result.commits, result.pushes = writer.commits, writer.pushes
    problem = outcomes.unavailable or (None if flushed else writer.problem)
    if problem:
        raise UserError(f"{problem}. Builds that could not be saved stay WORKING; the next pass recovers them")
