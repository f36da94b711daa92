"""Validate the deployment repo in the working tree (every file, cross-file rules); for editors and pre-commit."""

from __future__ import annotations

import argparse

from reconciler.commands._output import emit_json, print_problems
from reconciler.commands._root import require_deployment_repo
from reconciler.ledger.load import load_worktree_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)  # pre-commit passes file names; we check all


def run(args: argparse.Namespace) -> int:
    require_deployment_repo(args.repo, args.given_repo)
    state = load_worktree_state(args.repo)
    plan = state.plan()
    problems = plan.problems
    if args.format == "json":
        emit_json({"valid": not problems, "problems": [p.as_json() for p in problems],
                   "jobs": len(state.desired.job_files), "servers": len(state.desired.servers),
                   "definitions": len(state.desired.definitions)})
    else:
        print_problems(problems)
        if not problems:
            print(f"ok: {len(state.desired.job_files)} job(s), {len(state.desired.definitions)} definition(s), "
                  f"{len(state.desired.servers)} server(s) valid")
        else:
            print(f"{len(problems)} problem(s) found")
    return 1 if problems else 0
