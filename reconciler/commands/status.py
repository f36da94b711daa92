"""The job list (like the jobs page), or one job's blocks and per-user results.

On a terminal: one line per job that fits the terminal (`--format wide` or `-o wide` for every
column). Otherwise: one tab-separated line per job, never truncated, full build ids.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler.commands._output import (
    emit_json,
    print_job_detail,
    print_job_lines,
    print_job_table,
    print_user_details,
)
from reconciler.commands._repo import branch_listing
from reconciler.core.listing import Listing
from reconciler.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="?", help="show one job's blocks and per-user results")
    parser.add_argument("--user", metavar="ID", help="with JOB: that user's resolved tokens (secrets by name), "
                        "rendered files' digests and result")
    parser.add_argument("--format", "-o", choices=("text", "wide", "json"), default="text",
                        help="text (fits the terminal), wide (every column), json (stable, for scripts)")


def run(args: argparse.Namespace) -> int:
    listing = branch_listing(args.repo)
    if args.user and not args.job:
        raise UserError("--user needs a job: `reconciler status JOB --user ID`")
    if args.job and args.user:
        return _user(listing, args.repo, args.job, args.user, args.format)
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


def _user(listing: Listing | None, path: Path, job: str, uid: str, form: str) -> int:
    from reconciler.ledger import git
    from reconciler.ledger.claimed import details_for_user

    detail = listing.detail(job) if listing else None
    if listing is None or detail is None:
        print(f"reconciler: no job {job!r} on the deployment branch")
        return 1
    found = details_for_user(git.open_repo(path), listing.state, job, uid)
    if found is None:
        print(f"reconciler: job {job!r} cannot be read as claimed (it is invalid, or its commit is gone)")
        return 1
    if not found:
        print(f"reconciler: user {uid!r} is not a recipient of any block of job {job!r}")
        return 1
    if form == "json":
        emit_json({"job": job, "user": uid, "status": detail.status, "build_id": detail.build_id,
                   "blocks": [d.as_json() for d in found]})
    else:
        print_user_details(job, uid, detail.status, detail.build_id, found)
    return 0
