"""The pull-request check: validate the head, refuse ledger edits and changed executed jobs, show the plan.

Compares `--head` (default HEAD) with `--base` (the deployment branch the pull request targets).
Nothing from the head is executed: no driver runs, no command, no secret is read.
Exit 0 when merging is safe, 1 when there are problems, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys

from reconciler.ledger import git


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, metavar="REF",
                        help="the branch the pull request targets, e.g. origin/main")
    parser.add_argument("--head", default="HEAD", metavar="REF",
                        help="the pull request's commit (default: HEAD)")
    parser.add_argument("--format", choices=("text", "json", "markdown", "github"), default="text")


def run(args: argparse.Namespace) -> int:
    from reconciler.commands._output import emit_json
    from reconciler.core.timeutil import utcnow
    from reconciler.triggers.check import run_check  # the engine and pydantic: only when the command runs
    from reconciler.triggers.check_report import github, markdown, text

    repo = git.open_repo(args.repo)
    result = run_check(repo, args.base, args.head, utcnow())
    if args.format == "json":
        emit_json(result.as_json())
    else:
        render = {"text": text, "markdown": markdown, "github": github}[args.format]
        sys.stdout.write(render(result))
    return 0 if result.valid else 1
