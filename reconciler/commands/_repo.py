"""Shared command plumbing: opening the repo at the deployment branch's committed state."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.snapshot import Snapshot
from reconciler.ledger import git
from reconciler.ledger.branch import deployment_branch
from reconciler.ledger.load import load_commit_state


def branch_state(path: Path, branch: str | None = None) -> Snapshot | None:
    """The committed state of the deployment branch, or None when it has no commits yet."""
    repo = git.open_repo(path)
    tip = git.resolve(repo, f"refs/heads/{deployment_branch(repo, branch)}")
    if tip is None:
        return None
    return load_commit_state(repo, tip)
