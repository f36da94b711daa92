"""Run one reconcile pass: every due, valid job that has not run yet, exactly once (SPEC section 5)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from reconciler.commands._output import print_problems
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
    return report(result)


def _with_progress(options: PassOptions) -> PassResult:
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("reconciling", total=None)

        def on_user(job: str, user: str, status: str) -> None:
            progress.update(task, advance=1, description=f"{job}: {user} {status}")

        def on_event(event: str, data: dict[str, Any]) -> None:
            if event == "job.started":
                progress.update(task, description=f"{data['job']}: starting")

        options.on_user = on_user
        options.events = on_event
        return run_pass(options)


def report(result: PassResult) -> int:
    summary = PassSummary.of(result)
    print_problems(summary.problems, sys.stderr)
    for line in summary.lines():
        print(line)
    if summary.interrupted:
        print("interrupted: progress was checkpointed; the next pass resumes", file=sys.stderr)
    return summary.exit_code
