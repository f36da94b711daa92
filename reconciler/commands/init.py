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
branch: {branch}
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
    parser.add_argument("dir", type=Path, help="folder to create (must not exist, or be empty), or an empty clone "
                        "(only .git: the usual state after creating a repository on a git host and cloning it)")


def _copy(source: Traversable, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name.startswith("__") or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            _copy(item, dest / item.name)
        else:
            (dest / item.name).write_bytes(item.read_bytes())


def _empty_clone(target: Path) -> git.Repo | None:
    """The repository of `target` when it holds nothing but `.git` and has no commit yet, else None."""
    if [p.name for p in target.iterdir()] != [".git"]:
        return None
    repo = git.open_repo(target)
    if repo.top is None or repo.top.resolve() != target.resolve():
        return None
    if git.resolve(repo, "HEAD") is not None:
        raise UserError(f"{target} is a git repository with commits already; `init` starts a new one: choose an "
                        "empty folder, or an empty clone")
    return repo


def run(args: argparse.Namespace) -> int:
    target: Path = args.dir
    repo = _empty_clone(target) if target.is_dir() else None
    if repo is None:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{target} already exists and is not empty; choose a new folder (or an empty clone)")
        target.mkdir(parents=True, exist_ok=True)
        repo = git.init_repo(target)
    branch = git.head_branch(repo) or "main"
    for part in ("servers", "definitions", "jobs"):
        _copy(data_dir(part), target / part)
    (target / "reconciler.yaml").write_text(SETTINGS.format(branch=branch), "utf-8")
    (target / ".gitignore").write_text(GITIGNORE, "utf-8")
    git.commit_all(repo, "Example deployment repo (reconciler init)")
    print(f"created {target} (branch {branch}): servers/, definitions/, jobs/ committed")
    remotes = git.remotes(repo)
    if remotes:
        print(f"next: cd {target} && git push -u {remotes[0]} {branch}   (then a pass on the remote's side, or "
              f"`reconciler reconcile` here)")
    else:
        print(f"next: reconciler reconcile --repo {target} && reconciler status --repo {target}")
    return 0
