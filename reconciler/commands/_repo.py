"""Shared command plumbing: opening the repo at the deployment branch's committed state."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.listing import Listing
from reconciler.core.snapshot import Snapshot
from reconciler.ledger import git
from reconciler.ledger.branch import deployment_branch
from reconciler.ledger.listing_cache import load_listing
from reconciler.ledger.load import load_commit_state


def branch_tip(path: Path, branch: str | None = None) -> tuple[git.Repo, str | None]:
    repo = git.open_repo(path)
    return repo, git.resolve(repo, f"refs/heads/{deployment_branch(repo, branch)}")


def branch_state(path: Path, branch: str | None = None) -> Snapshot | None:
    """The committed state of the deployment branch, or None when it has no commits yet."""
    repo, tip = branch_tip(path, branch)
    if tip is None:
        return None
    return load_commit_state(repo, tip)


def branch_listing(path: Path, branch: str | None = None) -> Listing | None:
    """The job list of the deployment branch. Jobs whose finished record claimed their file as it is are
    not validated again (they can never run again, and their state is the record's), so a listing
    reads what changed and the cached summaries of the rest."""
    repo, tip = branch_tip(path, branch)
    if tip is None:
        return None
    return load_listing(load_commit_state(repo, tip, skip_executed=True), repo.state_dir)
