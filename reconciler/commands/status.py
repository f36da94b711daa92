"""The job list (like the jobs page), or one job's blocks and per-user results."""

from __future__ import annotations

import argparse

from reconciler.commands._output import emit_json, print_job_detail, print_job_table
from reconciler.commands._repo import branch_state
from reconciler.core.listing import job_detail, job_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="?", help="show one job's blocks and per-user results")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    state = branch_state(args.repo)
    if args.job:
        detail = job_detail(state, args.job) if state else None
        if detail is None:
            print(f"reconciler: no job {args.job!r} on the deployment branch")
            return 1
        if args.format == "json":
            emit_json(detail.as_json())
        else:
            print_job_detail(detail.as_json())
        return 0
    rows = job_rows(state) if state else []
    if args.format == "json":
        emit_json([row.as_json() for row in rows])
    else:
        print_job_table([row.as_json() for row in rows])
    return 0
