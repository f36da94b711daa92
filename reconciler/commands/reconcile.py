"""Run one reconcile pass: every due, valid job that has not run yet, exactly once."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from reconciler.commands._output import print_problems
from reconciler.commands._uncommitted import uncommitted_jobs, uncommitted_notice
from reconciler.core.settings import ExecutorConfig
from reconciler.errors import UserError
from reconciler.eventlog import json_line
from reconciler.run.reconcile_pass import PassOptions, PassResult, run_pass
from reconciler.run.summary import PassSummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", help="remote to fetch from and push status commits to")
    parser.add_argument("--branch", help="deployment branch (default: reconciler.yaml, else HEAD's branch)")
    parser.add_argument("--concurrency", type=int, help="users of a block deployed at once")
    parser.add_argument("--job-concurrency", type=int, metavar="N",
                        help="builds run at once (1 to 64; default: reconciler.yaml, else 4)")
    parser.add_argument("--only", metavar="JOB", help="run only this job")
    parser.add_argument("--executor", choices=["thread", "celery"],
                        help="where user deployments run: thread (in this process, the default) or celery (fleet "
                             "workers; needs the extra `fleet`); default: reconciler.yaml's executor")
    parser.add_argument("--broker", metavar="URL",
                        help="Redis broker of the fleet, redis://HOST:PORT/DB (implies --executor celery; "
                             "default: $RECONCILER_BROKER_URL, else reconciler.yaml)")
    parser.add_argument("--lock-wait", type=float, default=10.0, help=argparse.SUPPRESS)


def install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second signal: the user insists
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write("reconciler: stopping after the users in flight; checkpointing...\n")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def executor_flag(args: argparse.Namespace) -> ExecutorConfig | None:
    """`--executor`/`--broker` as given (None: neither); fleet mode without the extra exits 2 here, at once."""
    kind = args.executor or ("celery" if args.broker else None)
    if kind is None:
        return None
    if kind == "celery":
        from reconciler.run.fleet import require

        require("reconcile --executor celery")
    elif args.broker:
        raise UserError("--broker is for --executor celery; drop it or choose the celery executor")
    return ExecutorConfig(type=kind, broker=args.broker)


def run(args: argparse.Namespace) -> int:
    executor = executor_flag(args)
    stop = threading.Event()
    install_stop_handlers(stop)
    if args.job_concurrency is not None and not 1 <= args.job_concurrency <= 64:
        raise UserError(f"--job-concurrency {args.job_concurrency}: give 1 to 64")
    if args.concurrency is not None and not 1 <= args.concurrency <= 256:
        raise UserError(f"--concurrency {args.concurrency}: give 1 to 256")
    options = PassOptions(repo=args.repo, remote=args.remote, branch=args.branch, concurrency=args.concurrency,
                          job_concurrency=args.job_concurrency, only=args.only, stop=stop, lock_wait=args.lock_wait,
                          executor=executor)
    if sys.stderr.isatty():
        result = _with_progress(options)
    else:
        options.events = json_line
        result = run_pass(options)
    found = uncommitted_jobs(args.repo)  # say what a pass ignores (SPEC 9.5): a line, and an event in a log
    if found:
        if not sys.stderr.isatty():
            json_line("jobs.uncommitted", {"jobs": [p for _, p in found]})
        print(uncommitted_notice(found), file=sys.stderr)
    return report(result)


def _with_progress(options: PassOptions) -> PassResult:
    """A bar per running job: users done of the job's users, and the time since it started."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    totals = JobTotals(options)
    tasks: dict[str, TaskID] = {}
    lock = threading.Lock()  # builds run concurrently: events and user results arrive from several threads
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[users]}"),
               TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        overall = progress.add_task("reconciling", total=None, users="")

        def task_of(job: str) -> TaskID:
            with lock:
                if job not in tasks:
                    total = totals.of(job)
                    tasks[job] = progress.add_task(job, total=total, users=_users_done(0, total))
                return tasks[job]

        def on_user(job: str, user: str, status: str) -> None:
            task = task_of(job)
            with lock:
                progress.update(task, advance=1)
                done = next(t for t in progress.tasks if t.id == task)
                progress.update(task, users=_users_done(int(done.completed), done.total))

        def on_event(event: str, data: dict[str, Any]) -> None:
            job = str(data.get("job", ""))
            if event in ("job.claimed", "job.started", "job.recovering") and job:
                task = task_of(job)
                if isinstance(data.get("users"), int):  # a pass that says how many users the job has
                    progress.update(task, total=data["users"])
                progress.update(overall, description=f"reconciling: {job} {event.removeprefix('job.')}")
            elif event in ("job.finished", "job.lost", "job.interrupted", "job.stopped"):
                with lock:
                    if job in tasks:
                        progress.remove_task(tasks.pop(job))

        options.on_user = on_user
        options.events = on_event
        return run_pass(options)


def _users_done(done: int, total: float | None) -> str:
    return f"{done}/{int(total)} users" if total is not None else f"{done} users"


class JobTotals:
    """How many users a job deploys to, for its bar: read from the job file and its servers at the branch tip
    (plain data, a couple of `git cat-file`s per job; a terminal only). Unknown: the bar counts without a total."""

    def __init__(self, options: PassOptions) -> None:
        self.options = options
        self._server_users: dict[str, int | None] = {}

    def of(self, job: str) -> int | None:
        try:
            return self._count(job)
        except Exception:  # only a progress display: never a reason to fail a pass
            return None

    def _count(self, job: str) -> int | None:
        from reconciler.core.resources import parse_resource
        from reconciler.ledger import git
        from reconciler.ledger.branch import deployment_branch

        repo = git.open_repo(self.options.repo)
        tip = f"refs/heads/{deployment_branch(repo, self.options.branch)}"
        raw = git.read_path(repo, tip, f"jobs/{job}.yaml") or git.read_path(repo, tip, f"jobs/{job}.yml")
        data = parse_resource("job", raw).data if raw is not None else None
        if not isinstance(data, dict):
            return None
        total = 0
        for block in data.get("blocks", []):
            users = block.get("users")
            if users == "all":
                server = str(block.get("server"))
                if server not in self._server_users:
                    found = git.read_path(repo, tip, f"servers/{server}.yaml")
                    parsed = parse_resource("server", found).data if found is not None else None
                    self._server_users[server] = len(parsed["users"]) if isinstance(parsed, dict) else None
                count = self._server_users[server]
                if count is None:
                    return None
                total += count
            elif isinstance(users, list):
                total += len(users)
        return total


def report(result: PassResult) -> int:
    summary = PassSummary.of(result)
    print_problems(summary.problems, sys.stderr)
    for line in summary.lines():
        print(line)
    if summary.interrupted:
        print("interrupted: progress was checkpointed; the next pass resumes", file=sys.stderr)
    return summary.exit_code
