"""Install a post-receive hook into a bare repo: a push to the deployment branch starts a background pass.

`reconciler hook install --bare PATH [--branch B]` writes `PATH/hooks/post-receive`. The other
actions are what the installed hook calls (`post-receive`) and the detached runner (`run`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

TAKES_REPO = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("install", "post-receive", "run"),
                        help="install: write the hook (post-receive and run are called by the hook itself)")
    parser.add_argument("--bare", type=Path, required=True, metavar="PATH",
                        help="the bare repository pushed to")
    parser.add_argument("--branch", help="the deployment branch (default: the bare repository's HEAD branch)")
    parser.add_argument("--force", action="store_true", help="replace a post-receive hook not written by us")
    parser.add_argument("--env-file", type=Path, metavar="PATH",
                        help="KEY=VALUE lines (deployment secrets) the background passes run with; the runner "
                             "reads it before every pass and never logs it. Nothing of the pusher's environment "
                             "reaches a pass")


def run(args: argparse.Namespace) -> int:
    from reconciler.triggers import push_hook

    if args.action == "install":
        target, branch, log = push_hook.install(args.bare, args.branch, args.force, args.env_file)
        print(f"installed {target}: a push to {branch} starts a reconcile pass in the background")
        print(f"log: {log}")
        if args.env_file is not None and (warning := push_hook.env_file_warning(args.env_file)):
            print(f"warning: {warning}")
        return 0
    branch = args.branch or push_hook.default_branch(push_hook.open_bare(args.bare))
    return push_hook.main([args.action, str(args.bare), branch])
