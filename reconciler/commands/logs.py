"""Print a build's log."""

from __future__ import annotations

import argparse
import re
import sys

from reconciler import git
from reconciler.errors import UserError
from reconciler.settings import committed_settings, deployment_branch

BUILD_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z0-9][a-z0-9._-]{0,62}-[0-9a-f]{6}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build_id")


def build_log(repo: git.Repo, commit: str, build_id: str, ledger_dir: str | None = None) -> str | None:
    """The log of `build_id` as committed at `commit` (one `git cat-file`; nothing else is loaded)."""
    if not BUILD_ID.match(build_id):
        return None
    ledger_dir = ledger_dir or committed_settings(repo, commit)[0].ledger_dir
    raw = git.read_path(repo, commit, f"{ledger_dir}/logs/{build_id}.log")
    return raw.decode("utf-8", "replace") if raw is not None else None


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
