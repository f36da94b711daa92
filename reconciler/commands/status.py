"""The job list (like the jobs page), or one job's blocks and per-user results.

On a terminal: one line per job that fits the terminal (`--format wide` or `-o wide` for every
column). Otherwise: one tab-separated line per job, never truncated, full build ids.
"""

from __future__ import annotations

import argparse
import sys

from reconciler.commands._output import emit_json, print_job_detail, print_job_lines, print_job_table
from reconciler.commands._repo import branch_listing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="?", help="show one job's blocks and per-user results")
    parser.add_argument("--format", "-o", choices=("text", "wide", "json"), default="text",
                        help="text (fits the terminal), wide (every column), json (stable, for scripts)")


def run(args: argparse.Namespace) -> int:
    listing = branch_listing(args.repo)
    if args.job:
        detail = listing.detail(args.job) if listing else None
        if detail is None:
            print(f"reconciler: no job {args.job!r} on the deployment branch")
            return 1
        if args.format == "json":
            emit_json(detail.as_json())
        else:
            print_job_detail(detail.as_json())
        return 0
    if args.format == "json":
        sys.stdout.write(listing.rows_json() if listing else "[]\n")
        return 0
    rows = [listing.table_row(name) for name in listing.names] if listing else []
    if sys.stdout.isatty() and args.format == "text":
        print_job_lines(rows)
    else:
        print_job_table(rows)
    return 0
