"""Create a new deployment repo with a working example (git branch main, one commit)."""

from __future__ import annotations

import argparse
from importlib.resources.abc import Traversable
from pathlib import Path

from reconciler.core.package_data import data_dir
from reconciler.errors import UserError
from reconciler.ledger import git

SETTINGS = """\
# Repository settings for the reconciler (all optional; flags override them).
branch: main
ledger_dir: status
concurrency: 4
on_interrupt: resume
secret_prefixes: [DEPLOY_SECRET_]
commit_author:
  name: reconciler[bot]
  email: reconciler@localhost
"""
TAKES_REPO = False
GITIGNORE = "# local-driver deployment targets of the example servers\n.deployments/\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="folder to create (must not exist, or be empty)")


def _copy(source: Traversable, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name.startswith("__") or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            _copy(item, dest / item.name)
        else:
            (dest / item.name).write_bytes(item.read_bytes())


def run(args: argparse.Namespace) -> int:
    target: Path = args.dir
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists and is not empty; choose a new folder")
    target.mkdir(parents=True, exist_ok=True)
    repo = git.init_repo(target)
    for part in ("servers", "definitions", "jobs"):
        _copy(data_dir(part), target / part)
    (target / "reconciler.yaml").write_text(SETTINGS, "utf-8")
    (target / ".gitignore").write_text(GITIGNORE, "utf-8")
    git.commit_all(repo, "Example deployment repo (reconciler init)")
    print(f"created {target} (branch main): servers/, definitions/, jobs/ committed")
    print(f"next: reconciler reconcile --repo {target} && reconciler status --repo {target}")
    return 0
