"""Shared command plumbing: opening the repo at the deployment branch's committed state."""

from __future__ import annotations

from pathlib import Path

from reconciler import git
from reconciler.errors import UserError
from reconciler.state import RepoState, load_commit_state


def branch_state(path: Path, branch: str | None = None) -> RepoState | None:
    """The committed state of the deployment branch, or None when it has no commits yet."""
    repo = git.open_repo(path)
    tip = git.resolve(repo, f"refs/heads/{deployment_branch(repo, branch)}")
    if tip is None:
        return None
    return load_commit_state(repo, tip)


def deployment_branch(repo: git.Repo, branch: str | None = None) -> str:
    """The deployment branch: the flag, else `branch:` in HEAD's reconciler.yaml, else HEAD's branch."""
    settings_branch = None
    head = git.resolve(repo, "HEAD")
    if head is not None and branch is None:
        from reconciler.source import SETTINGS_FILE
        from reconciler.state import settings_at

        settings_branch = settings_at(git.GitTree(repo, head, (SETTINGS_FILE,)))[0].branch
    name = branch or settings_branch or git.head_branch(repo)
    if name is None:
        raise UserError("HEAD is detached and no branch is configured (set `branch:` in reconciler.yaml)")
    return name
