"""Print a build's log."""

from __future__ import annotations

import argparse
import re
import sys

from reconciler.commands._repo import branch_state
from reconciler.errors import UserError
from reconciler.state import RepoState

BUILD_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z0-9][a-z0-9._-]{0,62}-[0-9a-f]{6}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build_id")


def build_log(path_state: RepoState, build_id: str) -> str | None:
    if not BUILD_ID.match(build_id):
        return None
    path = path_state.ledger.log_path(build_id)
    entries = path_state.files.entries()
    if path not in entries:
        return None
    return path_state.files.read_many([path])[path].decode("utf-8", "replace")


def run(args: argparse.Namespace) -> int:
    if not BUILD_ID.match(args.build_id):
        raise UserError(f"{args.build_id!r} is not a build id (like 20261121T120000Z-my-job-a1b2c3)", 1)
    state = branch_state(args.repo)
    text = build_log(state, args.build_id) if state else None
    if text is None:
        print(f"reconciler: no log for build {args.build_id} on the deployment branch", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
