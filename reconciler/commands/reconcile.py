"""Run one reconcile pass: every due, valid job that has not run yet, exactly once (SPEC section 5)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType
from typing import Any

from reconciler.errors import EXIT_INTERRUPTED
from reconciler.output import print_problems
from reconciler.reconcile import PassOptions, PassResult, run_pass
from reconciler.timeutil import iso, utcnow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", help="remote to fetch from and push status commits to")
    parser.add_argument("--branch", help="deployment branch (default: reconciler.yaml, else HEAD's branch)")
    parser.add_argument("--concurrency", type=int, help="users of a block deployed at once")
    parser.add_argument("--only", metavar="JOB", help="run only this job")
    parser.add_argument("--lock-wait", type=float, default=10.0, help=argparse.SUPPRESS)


def structured(event: str, data: dict[str, Any]) -> None:
    sys.stderr.write(json.dumps({"time": iso(utcnow()), "event": event, **data}) + "\n")


def install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second signal: the user insists
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write("reconciler: stopping after the users in flight; checkpointing...\n")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    install_stop_handlers(stop)
    options = PassOptions(repo=args.repo, remote=args.remote, branch=args.branch, concurrency=args.concurrency,
                          only=args.only, stop=stop, lock_wait=args.lock_wait)
    if sys.stderr.isatty():
        result = _with_progress(options)
    else:
        options.events = structured
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
    problems = result.plan.problems if result.plan else []
    print_problems(problems, sys.stderr)
    for record in result.ran:
        counts = ", ".join(f"{v} {k}" for k, v in record.summary.items()) or "no users"
        print(f"{record.job}: {record.status} (build {record.build_id}; {counts})")
    for job in result.skipped_in_flight:
        print(f"{job}: left alone, claimed by a live reconciler")
    if not result.ran:
        print(f"nothing to do: {result.up_to_date} job(s) up to date")
    if result.interrupted:
        print("interrupted: progress was checkpointed; the next pass resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if result.failed or problems else 0
