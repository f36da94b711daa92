"""Job files in the working tree that are not committed (SPEC 9.5): light, so that every pass can say so."""

from __future__ import annotations

from pathlib import Path

from reconciler.ledger import git


def uncommitted_jobs(path: Path) -> list[tuple[str, str]]:
    """Job files in the working tree that are not committed: a pass never runs them (only committed state)."""
    from reconciler.core.resources import SUFFIXES

    repo = git.open_repo(path)
    return [(state, p) for state, p in git.uncommitted(repo, "jobs")
            if p.endswith(SUFFIXES) and "/" not in p.removeprefix("jobs/")]


def uncommitted_notice(found: list[tuple[str, str]]) -> str | None:
    if not found:
        return None
    shown = ", ".join(f"{p} ({state})" for state, p in found[:5]) + (f" and {len(found) - 5} more"
                                                                     if len(found) > 5 else "")
    return (f"note: {len(found)} job file(s) in the working tree are not committed, so no pass runs them: {shown}; "
            "commit (and push) them to deploy")
