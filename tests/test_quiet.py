"""The quiet-tip memo (reconciler/quiet.py) makes a no-op pass instant, and never hides work."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.cli import run_main
from tests.support.repos import commit_all, flow_job, git, write

JOB = flow_job("[u1]")


def quiet_note(repo: Path) -> dict[str, object] | None:
    path = repo / ".git" / "reconciler" / "quiet.json"
    return json.loads(path.read_text())["note"] if path.exists() else None


def test_a_quiet_tip_is_remembered_and_a_new_commit_is_not_missed(make_repo) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(jobs={"first": JOB})
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0  # runs `first`: not quiet
    second = run_main("reconcile", "--repo", str(repo))
    assert second.returncode == 0 and "nothing to do: 1 job(s) up to date" in second.stdout
    note = quiet_note(repo)
    assert note is not None and note["tip"] == git(repo, "rev-parse", "HEAD").strip()
    third = run_main("reconcile", "--repo", str(repo))  # answered from the note
    assert "nothing to do: 1 job(s) up to date" in third.stdout
    write(repo, "jobs/second.yaml", JOB)
    commit_all(repo, "add second")
    fourth = run_main("reconcile", "--repo", str(repo))
    assert fourth.returncode == 0 and "second: SUCCESS" in fourth.stdout


def test_a_scheduled_job_falls_due_through_the_note(make_repo) -> None:  # type: ignore[no-untyped-def]
    due = datetime.now(UTC) + timedelta(seconds=4)
    repo = make_repo(jobs={"later": f"run_at: {due.strftime('%Y-%m-%dT%H:%M:%SZ')}\n" + JOB})
    first = run_main("reconcile", "--repo", str(repo))
    assert first.returncode == 0 and "nothing to do" in first.stdout
    note = quiet_note(repo)
    assert note is not None and note["until"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1.2)
    second = run_main("reconcile", "--repo", str(repo))
    assert second.returncode == 0 and "later: SUCCESS" in second.stdout


def test_a_pass_with_problems_is_never_remembered(make_repo) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(jobs={"bad": "blocks: []\n"})
    result = run_main("reconcile", "--repo", str(repo))
    assert result.returncode == 1 and quiet_note(repo) is None  # problems are reported on every pass
    again = run_main("reconcile", "--repo", str(repo))
    assert again.returncode == 1 and "jobs/bad.yaml" in again.stderr
