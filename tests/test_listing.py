"""The job list at scale and on a terminal: one batched read, cached summaries, a table that fits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from reconciler.core.listing import Query, job_rows
from reconciler.ledger import git as gitmod
from reconciler.ledger.listing_cache import FILE_NAME, load_listing
from reconciler.ledger.load import load_commit_state
from tests.support.cli import run_cli, run_on_terminal
from tests.support.repos import BROKEN_FOR_U2, GIT_ENV, OK_JOB, commit_all, git, write


def counting_git(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `git` logs every invocation (one line each) before running the real git."""
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "git-calls.log"
    real = shutil.which("git")
    assert real is not None
    (shim / "git").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n', "utf-8")
    (shim / "git").chmod(0o755)
    return {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}, log


def executed_repo(make_repo: Callable[..., Path], jobs: int = 12) -> Path:
    repo = make_repo(jobs={f"job-{i:02d}": OK_JOB for i in range(jobs)})
    result = run_cli("reconcile", "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    return repo


def full_rows(repo: Path) -> list[dict[str, object]]:
    """The rows as the original listing built them: every record read and every job validated."""
    repo_ = gitmod.open_repo(repo)
    tip = gitmod.resolve(repo_, "refs/heads/main")
    assert tip is not None
    return [row.as_json() for row in job_rows(load_commit_state(repo_, tip))]


def test_status_json_reads_every_record_with_one_batched_read(make_repo: Callable[..., Path],
                                                             tmp_path: Path) -> None:
    repo = executed_repo(make_repo)
    write(repo, "jobs/later.yaml", OK_JOB.replace("all", "[u1]"))  # one job without a record
    commit_all(repo, "a new job")
    env, log = counting_git(tmp_path)
    for run in ("cold", "warm"):
        log.unlink(missing_ok=True)
        result = run_cli("status", "--format", "json", "--repo", str(repo), env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == full_rows(repo), run  # the stable shape, unchanged
        calls = log.read_text("utf-8").splitlines()
        reads = [c for c in calls if " cat-file " in f" {c} "]
        # a few batches (settings, definitions, the new job, the records, the job files not parsed yet),
        # the same number whatever the number of records: never one `git cat-file` per record
        assert len(reads) <= 7 < 12, (run, reads)
        assert len(calls) <= 16, (run, calls)
    assert (repo / ".git" / "reconciler" / FILE_NAME).is_file()
    assert git(repo, "status", "--porcelain") == ""


def test_a_corrupt_listing_cache_is_ignored(make_repo: Callable[..., Path]) -> None:
    repo = executed_repo(make_repo, jobs=3)
    expected = run_cli("status", "--format", "json", "--repo", str(repo)).stdout
    (repo / ".git" / "reconciler" / FILE_NAME).write_bytes(b"\x00not marshal")
    again = run_cli("status", "--format", "json", "--repo", str(repo))
    assert again.returncode == 0 and again.stdout == expected


def test_listing_sorts_searches_counts_and_pages(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"alpha": OK_JOB, "broken-one": BROKEN_FOR_U2, "beta": OK_JOB})
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 1  # broken-one: u2 SKIPPED
    write(repo, "jobs/gamma-draft.yaml", "suspend: true\n" + OK_JOB)
    git(repo, "add", "-A")  # committed later than any build started (times are kept to the second)
    subprocess.run(["git", "commit", "-q", "-m", "a draft"], cwd=repo, check=True,
                   env={**os.environ, **GIT_ENV, "GIT_COMMITTER_DATE": "2030-01-01T00:00:00Z"})
    repo_ = gitmod.open_repo(repo)
    tip = gitmod.resolve(repo_, "refs/heads/main")
    assert tip is not None
    listing = load_listing(load_commit_state(repo_, tip, skip_executed=True), repo_.state_dir)
    assert listing.states["broken-one"] == "FAILURE"
    first = listing.select(Query())
    assert first.entries[0].job == "broken-one"  # needing attention first
    assert (first.total, first.matched, first.pages) == (4, 4, 1)
    newest = [e.job for e in listing.select(Query(sort="newest")).entries]
    assert newest[0] == "gamma-draft"  # the latest arrival
    failed = listing.select(Query(status="FAILURE"))
    assert [e.job for e in failed.entries] == ["broken-one"] and (failed.matched, failed.total) == (1, 4)
    found = listing.select(Query(search="ETA", sort="name"))
    assert [e.job for e in found.entries] == ["beta"]
    paged = listing.select(Query(sort="name", per_page=3, page=2))
    assert [e.job for e in paged.entries] == ["gamma-draft"] and paged.pages == 2
    assert listing.select(Query(page=9)).entries == []


def test_status_on_a_terminal_fits_it_and_wide_shows_every_column(make_repo: Callable[..., Path]) -> None:
    long_name = "2026-11-01-a-job-with-a-rather-long-name-for-a-narrow-screen"
    repo = make_repo(jobs={long_name: OK_JOB, "short": OK_JOB})
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 0
    rows = json.loads(run_cli("status", "--format", "json", "--repo", str(repo)).stdout)
    screen = run_on_terminal(["status"], repo, columns=80)
    lines = [line for line in screen.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), screen
    for row in rows:
        matching = [line for line in lines if row["build_id"][-6:] in line]
        assert len(matching) == 1, (row["job"], screen)  # one line per job, with its short build id
        assert "SUCCESS" in matching[0] and "test" in matching[0] and " UTC" in matching[0]
    assert row["build_id"] not in screen  # the full id does not fit: `-o wide` shows it
    wide = run_on_terminal(["status", "-o", "wide"], repo, columns=200)
    assert "MODULE TYPE" in wide and "ORGANIZATION" in wide and rows[1]["build_id"] in wide
    short = make_repo("short", jobs={"a1": OK_JOB, "b2": OK_JOB})  # short names leave a narrow screen room for it
    assert run_cli("reconcile", "--repo", str(short)).returncode == 0
    narrow = run_on_terminal(["status"], short, columns=62)
    assert "ENVIRONMENT" in narrow and all(len(line) <= 62 for line in narrow.splitlines()), narrow
    piped = run_cli("status", "--repo", str(repo)).stdout.splitlines()  # not a terminal: as before
    assert piped[0].startswith("JOB\tBUILD_ID\t") and len(piped) == 3
    assert any(rows[0]["build_id"] in line for line in piped)


def test_the_fast_listing_equals_the_full_one_for_every_kind_of_job(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"done": OK_JOB, "edited": OK_JOB, "gone": OK_JOB, "broken-one": BROKEN_FOR_U2,
                           "retried": OK_JOB})
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 1
    write(repo, "jobs/edited.yaml", OK_JOB.replace("hi", "changed"))  # MODIFIED
    (repo / "jobs" / "gone.yaml").unlink()  # DELETED
    write(repo, "jobs/invalid.yaml", "blocks: [{definition: nope, server: srv, users: all}]\n")
    write(repo, "jobs/unparsable.yaml", "blocks: [\n")
    write(repo, "jobs/draft.yaml", "suspend: true\n" + OK_JOB)
    write(repo, "jobs/later.yaml", "run_at: 2099-01-01T00:00:00Z\n" + OK_JOB)
    write(repo, "jobs/retried-retry-1.yaml", "retry_of: retried\ndescription: again\n" + OK_JOB)
    commit_all(repo, "every kind of job")
    for _ in ("cold", "warm"):
        fast = json.loads(run_cli("status", "--format", "json", "--repo", str(repo)).stdout)
        assert fast == full_rows(repo)
    states = {row["job"]: row["status"] for row in fast}
    assert states == {"done": "SUCCESS", "edited": "MODIFIED", "gone": "DELETED", "broken-one": "FAILURE",
                      "retried": "SUCCESS", "invalid": "INVALID", "unparsable": "INVALID", "draft": "SUSPENDED",
                      "later": "SCHEDULED", "retried-retry-1": "PENDING"}
    detail = json.loads(run_cli("status", "retried", "--format", "json", "--repo", str(repo)).stdout)
    assert detail["retried_by"] == ["retried-retry-1"]


def test_a_summary_from_the_records_json_equals_the_one_from_the_checked_record(
        make_repo: Callable[..., Path]) -> None:
    from reconciler.core.listing import RecordSummary

    repo = make_repo(jobs={"done": OK_JOB, "broken-one": BROKEN_FOR_U2})
    run_cli("reconcile", "--repo", str(repo))
    repo_ = gitmod.open_repo(repo)
    tip = gitmod.resolve(repo_, "refs/heads/main")
    assert tip is not None
    state = load_commit_state(repo_, tip)
    for job in ("done", "broken-one"):
        raw = gitmod.read_path(repo_, tip, f"status/{job}.json")
        assert raw is not None
        assert RecordSummary.of_data(json.loads(raw)) == RecordSummary.of(state.ledger.records[job])


def test_replanning_an_unchanged_tip_keeps_what_was_computed_for_every_job(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"now": OK_JOB, "later": "run_at: 2099-01-01T00:00:00Z\n" + OK_JOB})
    repo_ = gitmod.open_repo(repo)
    tip = gitmod.resolve(repo_, "refs/heads/main")
    assert tip is not None
    listing = load_listing(load_commit_state(repo_, tip, skip_executed=True), repo_.state_dir)
    entries = listing.entries()
    again = listing.replanned()
    assert again.entries() is entries  # nothing changed: no work per job
    next_change = listing.next_change()
    assert next_change is not None and next_change.year == 2099  # when `later` falls due
