"""Print a build's log."""

from __future__ import annotations

import argparse
import sys

from reconciler.errors import UserError
from reconciler.ledger import git
from reconciler.ledger.branch import BUILD_ID, build_log, deployment_branch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build_id")


def run(args: argparse.Namespace) -> int:
    if not BUILD_ID.match(args.build_id):
        raise UserError(f"{args.build_id!r} is not a build id (like 20261121T120000Z-my-job-a1b2c3)", 1)
    repo = git.open_repo(args.repo)
    tip = git.resolve(repo, f"refs/heads/{deployment_branch(repo)}")
    text = build_log(repo, tip, args.build_id) if tip else None
    if text is None:
        print(f"reconciler: no log for build {args.build_id} on the deployment branch", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
