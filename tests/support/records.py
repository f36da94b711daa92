"""Ledger records built in memory for the pure plan's tests (no git, no pass)."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.core.files import blob_id
from reconciler.core.records import LedgerRecord, Owner
from reconciler.core.validate import Desired

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def record_for(name: str, text: str, desired: Desired, status: str = "SUCCESS") -> LedgerRecord:
    """The record a pass claimed (or finished) for job `name` written as `text`, as another host left it."""
    jf = desired.job_files[name]
    assert jf.job is not None, jf.problems
    return LedgerRecord(
        job=name, job_blob=blob_id(text.encode()), spec_digest=jf.job.spec_digest, desired_commit="0" * 40,
        build_id=f"20261121T110000Z-{name}-abcdef", status=status,  # type: ignore[arg-type]
        owner=Owner(host="elsewhere", pid=1, started_at=NOW), lease_expires_at=None, created_at=None,
        queued_at=NOW, started_at=NOW, finished_at=None if status == "WORKING" else NOW, on_failure="skip",
        on_interrupt="resume", blocks=[], summary={}, log=f"status/logs/20261121T110000Z-{name}-abcdef.log",
        error=None,
    )
