"""A job as it was claimed: the desired state of the commit its record names (for per-user details)."""

from __future__ import annotations

from reconciler.core.details import UserDetail, user_details
from reconciler.core.snapshot import Snapshot
from reconciler.ledger import git
from reconciler.ledger.load import load_commit_state


def details_for_user(repo: git.Repo, state: Snapshot, job: str, uid: str) -> list[UserDetail] | None:
    """What `uid` gets (got) from `job`: from the claimed commit when the job has a record (what ran), else
    from `state`. None when the job cannot be read there (invalid, or deleted before it ran)."""
    record = state.ledger.records.get(job) if job in state.ledger.records else None
    if record is None:
        jf = state.desired.job_files.get(job)
        if jf is None or jf.job is None:
            return None
        return user_details(state.desired, jf.job, None, uid)
    try:
        claimed = load_commit_state(repo, record.desired_commit, jobs={job})
    except git.GitError:  # the claimed commit is gone (a rewritten history): nothing to show
        return None
    found = claimed.desired.jobs.get(job)
    return user_details(claimed.desired, found, record, uid) if found is not None else None
