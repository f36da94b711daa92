"""End to end through the real CLI, with real git repos: one reconcile pass and what it leaves behind.

Every test drives `python -m reconciler` in a subprocess against a repo from `make_repo` (server
`srv` with users u1..u3 on the local driver at `.deployments/srv`, definition `app` with content
token `greeting` and parameter token `level` (default 1), content `config.json`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_cli
from tests.support.repos import commit_all, git, write

MakeRepo = Callable[..., Path]
TARGET = ".deployments/srv"
JOB = """\
blocks:
  - definition: app
    server: srv
    users: all
    content_tokens:
      greeting: hello
"""


def job(users: str = "all", on_failure: str | None = None, extra: str = "", block_extra: str = "",
        action: str | None = None) -> str:
    head = f"on_failure: {on_failure}\n" if on_failure else ""
    act = f"    action: {action}\n" if action else ""
    return (f"{head}{extra}blocks:\n  - definition: app\n    server: srv\n{act}    users: {users}\n"
            f"    content_tokens:\n      greeting: hello\n{block_extra}")


def reconcile(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = run_cli("reconcile", "--repo", str(repo), *args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def record(repo: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repo / "status" / f"{name}.json").read_text("utf-8"))
    return data


def users_of(repo: Path, name: str, block: int = 0) -> dict[str, str]:
    return {u: r["status"] for u, r in record(repo, name)["blocks"][block]["users"].items()}


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def commit_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "--all").strip())


def deployed(repo: Path, user: str, rel: str = "config.json") -> Path:
    return repo / TARGET / user / "app" / rel


def status_json(repo: Path) -> list[dict[str, Any]]:
    result = run_cli("status", "--format", "json", "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def states(repo: Path) -> dict[str, str]:
    return {row["job"]: row["status"] for row in status_json(repo)}


def fingerprint(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime, content) of every file below root: proves files were not rewritten."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            info = path.stat()
            found[path.relative_to(root).as_posix()] = (info.st_ino, info.st_mtime_ns, path.read_bytes())
    return found


# ------------------------------------------------------------------------------------- happy path
def test_happy_path_with_per_user_overrides(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": job(block_extra="""\
    parameter_tokens:
      level: 2
    user_tokens:
      u2:
        content_tokens: {greeting: hi u2}
      u3:
        parameter_tokens: {level: 5}
""")})
    result = reconcile(repo)
    assert result.returncode == 0, result.stderr
    rec = record(repo, "rollout")
    assert rec["status"] == "SUCCESS"
    assert users_of(repo, "rollout") == {"u1": "DEPLOYED", "u2": "DEPLOYED", "u3": "DEPLOYED"}
    assert rec["summary"] == {"DEPLOYED": 3}
    assert f"rollout: SUCCESS (build {rec['build_id']}" in result.stdout
    assert json.loads(deployed(repo, "u1").read_text()) == {"greeting": "hello"}
    assert json.loads(deployed(repo, "u2").read_text()) == {"greeting": "hi u2"}
    assert json.loads(deployed(repo, "u3").read_text()) == {"greeting": "hello"}
    manifests = {u: json.loads(deployed(repo, u, ".deployment.json").read_text()) for u in ("u1", "u2", "u3")}
    for user, manifest in manifests.items():
        assert manifest["job"] == "rollout"
        assert manifest["build_id"] == rec["build_id"]
        assert manifest["definition"] == "app"
        assert manifest["user"] == user
        assert manifest["content_digest"].startswith("sha256:")
    assert manifests["u1"]["parameters"] == {"level": 2}
    assert manifests["u3"]["parameters"] == {"level": 5}
    assert manifests["u1"]["content_digest"] != manifests["u2"]["content_digest"]
    assert manifests["u1"]["content_digest"] == manifests["u3"]["content_digest"]
    blocks = rec["blocks"]
    assert {k: blocks[0][k] for k in ("definition", "module_type", "server", "environment", "organization",
                                      "action")} == {
        "definition": "app", "module_type": "test/content", "server": "srv", "environment": "test",
        "organization": "test-org", "action": "APPLY-AUTO"}
    assert rec["desired_commit"] == git(repo, "rev-list", "--max-count=1", "HEAD", "--", "jobs").strip()
    assert (repo / rec["log"]).is_file()


def test_claim_is_committed_before_the_job_runs(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": JOB})
    assert reconcile(repo).returncode == 0
    subjects = git(repo, "log", "--reverse", "--format=%H %s", "HEAD~2..HEAD").splitlines()
    # SPEC 9.2: the WORKING step may share a commit with the next save; the claim comes first, alone
    assert [s.split(" ", 1)[1] for s in subjects] == ["status: claim rollout", "status: rollout SUCCESS"]
    claim = json.loads(git(repo, "show", f"{subjects[0].split()[0]}:status/rollout.json"))
    assert claim["status"] == "IN-PROGRESS"
    assert claim["started_at"] is None and claim["blocks"] == []
    assert claim["owner"]["pid"] > 0 and claim["lease_expires_at"] is not None


def test_rerun_is_a_no_op(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": JOB})
    assert reconcile(repo).returncode == 0
    before_head, before_count = head(repo), commit_count(repo)
    deployments, ledger = fingerprint(repo / ".deployments"), fingerprint(repo / "status")
    time.sleep(0.05)  # so that any rewrite would show in mtimes
    result = reconcile(repo)
    assert result.returncode == 0
    assert "nothing to do" in result.stdout
    assert (head(repo), commit_count(repo)) == (before_head, before_count)
    assert fingerprint(repo / ".deployments") == deployments
    assert fingerprint(repo / "status") == ledger


def test_status_commits_touch_only_the_ledger_and_leave_the_clone_clean(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"a": JOB, "b": job(users="[u1]")})
    start = head(repo)
    assert reconcile(repo).returncode == 0
    commits = git(repo, "rev-list", f"{start}..HEAD").split()
    assert len(commits) >= 2  # the claims, then the final records (SPEC 9.2: builds may share commits)
    for commit in commits:
        message = git(repo, "log", "-1", "--format=%B", commit)
        assert message.startswith("status:")
        trailers = [line for line in message.splitlines() if line.startswith("Reconciler-Build: ")]
        assert 1 <= len(trailers) <= 2
        paths = git(repo, "show", "--name-only", "--format=", commit).split()
        assert paths and all(p.startswith("status/") for p in paths), paths
        for trailer in trailers:  # each build in the commit: its record and its log
            build = trailer.split(": ", 1)[1]
            assert f"status/logs/{build}.log" in paths
        author = git(repo, "log", "-1", "--format=%an <%ae>", commit).strip()
        assert author == "reconciler[bot] <reconciler@localhost>"
        assert len(git(repo, "rev-list", "--parents", "-1", commit).split()) == 2  # never a merge
    assert git(repo, "status", "--porcelain", "--ignored=no") == ""
    assert not (repo / ".reconciler-crash.log").exists()
    assert (repo / ".git" / "reconciler").is_dir()
    # the final record and its log are in the same commit
    final = git(repo, "log", "-1", "--format=%H", "--grep", "^status: b SUCCESS").strip()
    names = git(repo, "show", "--name-only", "--format=", final).split()
    assert "status/b.json" in names and record(repo, "b")["log"] in names


def test_status_commit_leaves_other_uncommitted_work_alone(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": JOB})
    write(repo, "notes.txt", "work in progress\n")
    write(repo, "servers/srv.yaml", (repo / "servers/srv.yaml").read_text() + "# local edit\n")
    git(repo, "add", "notes.txt")
    assert reconcile(repo).returncode == 0
    porcelain = sorted(git(repo, "status", "--porcelain").splitlines())
    assert porcelain == sorted(["A  notes.txt", " M servers/srv.yaml"])


# ------------------------------------------------------------------------------------ immutability
def test_modified_executed_job_is_refused_and_not_rerun(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": job(users="[u1]")})
    assert reconcile(repo).returncode == 0
    build = record(repo, "rollout")["build_id"]
    write(repo, "jobs/rollout.yaml", job(users="[u1, u2]"))
    commit_all(repo, "widen the rollout")
    before = head(repo)
    result = reconcile(repo)
    assert result.returncode == 1
    assert "jobs/rollout.yaml:1:" in result.stderr and "[MODIFIED]" in result.stderr
    assert head(repo) == before
    assert record(repo, "rollout")["build_id"] == build
    assert not deployed(repo, "u2").exists()
    assert states(repo)["rollout"] == "MODIFIED"
    plan = json.loads(run_cli("plan", "--format", "json", "--repo", str(repo)).stdout)
    assert plan["to_run"] == [] and plan["modified"] == ["rollout"]


def test_comment_key_order_and_quoting_edits_are_fine(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": JOB})
    assert reconcile(repo).returncode == 0
    write(repo, "jobs/rollout.yaml", """\
# a comment, reordered keys, other quoting and flow style, explicit default
on_failure: skip
blocks:
  - {users: 'all', content_tokens: {"greeting": "hello"}, server: srv, definition: "app", action: APPLY-AUTO}
""")
    commit_all(repo, "tidy the job")
    before = head(repo)
    result = reconcile(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert head(repo) == before
    assert states(repo)["rollout"] == "SUCCESS"


def test_removed_record_is_tampering_and_the_job_is_not_rerun(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": JOB})
    assert reconcile(repo).returncode == 0
    manifest = deployed(repo, "u1", ".deployment.json").read_bytes()
    git(repo, "rm", "-q", "status/rollout.json")
    git(repo, "commit", "-q", "-m", "let's deploy it again")
    before = head(repo)
    result = reconcile(repo)
    assert result.returncode == 1
    assert "LEDGER_TAMPERED" in result.stderr
    assert head(repo) == before
    assert deployed(repo, "u1", ".deployment.json").read_bytes() == manifest
    assert states(repo)["rollout"] == "INVALID"


# ------------------------------------------------------------------------ what does and does not run
def test_invalid_job_does_not_block_valid_ones(make_repo: MakeRepo) -> None:
    bad = JOB.replace("server: srv", "server: nowhere")
    repo = make_repo(jobs={"a-bad": bad, "b-good": JOB})
    result = reconcile(repo)
    assert result.returncode == 1
    assert "jobs/a-bad.yaml:3:" in result.stderr and "REF_SERVER" in result.stderr
    assert record(repo, "b-good")["status"] == "SUCCESS"
    assert not (repo / "status" / "a-bad.json").exists()
    assert states(repo) == {"a-bad": "INVALID", "b-good": "SUCCESS"}


def test_unreadable_record_stops_only_its_job(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"a": JOB, "b": JOB})
    write(repo, "status/a.json", "{ not json\n")
    commit_all(repo, "broken record")
    result = reconcile(repo)
    assert result.returncode == 1
    assert "status/a.json:1:" in result.stderr and "LEDGER_INVALID" in result.stderr
    assert (repo / "status/a.json").read_text() == "{ not json\n"
    assert record(repo, "b")["status"] == "SUCCESS"


def test_run_at_in_the_future_is_scheduled_then_runs(make_repo: MakeRepo) -> None:
    # What is seen before run_at proves the job waited only if the pass and the listing ended before it; on a
    # loaded machine they may not, and that attempt proves nothing: try again with twice the margin.
    for attempt, margin in enumerate((3, 6, 12, 24, 48)):
        soon = (datetime.now(UTC) + timedelta(seconds=margin)).replace(microsecond=0)
        repo = make_repo(f"repo-{attempt}", jobs={"later": job(extra=f"run_at: {soon:%Y-%m-%dT%H:%M:%SZ}\n")})
        result = reconcile(repo)
        ran_early = (repo / "status" / "later.json").exists()
        listed = states(repo)["later"]
        if datetime.now(UTC) < soon:
            break
    else:
        pytest.fail("no attempt ended before its run_at: the machine is too slow for this test")
    assert result.returncode == 0
    assert not ran_early
    assert listed == "SCHEDULED"
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
    assert reconcile(repo).returncode == 0
    assert record(repo, "later")["status"] == "SUCCESS"


def test_suspended_job_waits_until_unsuspended(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"draft": job(extra="suspend: true\n")})
    assert reconcile(repo).returncode == 0
    assert states(repo)["draft"] == "SUSPENDED"
    assert not (repo / TARGET).exists()
    write(repo, "jobs/draft.yaml", job(extra="suspend: false\n"))
    commit_all(repo, "go")
    assert reconcile(repo).returncode == 0
    assert record(repo, "draft")["status"] == "SUCCESS"


def test_uncommitted_job_is_not_run(make_repo: MakeRepo) -> None:
    repo = make_repo()
    write(repo, "jobs/local.yaml", JOB)
    before = head(repo)
    result = reconcile(repo)
    assert result.returncode == 0
    assert "nothing to do" in result.stdout
    assert head(repo) == before
    assert not (repo / "status").exists() and not (repo / TARGET).exists()
    assert git(repo, "status", "--porcelain") == "?? jobs/\n"
    assert "local" not in states(repo)  # status reads the committed branch


def test_deleted_job_keeps_its_record(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"gone": JOB})
    assert reconcile(repo).returncode == 0
    kept = (repo / "status" / "gone.json").read_bytes()
    git(repo, "rm", "-q", "jobs/gone.yaml")
    git(repo, "commit", "-q", "-m", "remove the job file")
    before = head(repo)
    assert reconcile(repo).returncode == 0
    assert head(repo) == before
    assert (repo / "status" / "gone.json").read_bytes() == kept
    [row] = status_json(repo)
    assert row["job"] == "gone" and row["status"] == "DELETED"
    assert row["build_id"] == json.loads(kept)["build_id"]
    assert row["blocks"][0]["users"] == {"u1": "DEPLOYED", "u2": "DEPLOYED", "u3": "DEPLOYED"}


# ------------------------------------------------------------------------------ PLAN and DESTROY
def test_plan_action_writes_nothing(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"preview": job(action="PLAN")})
    result = reconcile(repo)
    assert result.returncode == 0
    assert record(repo, "preview")["status"] == "SUCCESS"
    assert users_of(repo, "preview") == {"u1": "PLANNED", "u2": "PLANNED", "u3": "PLANNED"}
    assert not (repo / TARGET).exists()
    log = (repo / record(repo, "preview")["log"]).read_text()
    assert "would add config.json" in log


def test_destroy_removes_the_folder_then_is_unchanged(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"a-deploy": JOB})
    assert reconcile(repo).returncode == 0
    assert deployed(repo, "u1").exists()
    write(repo, "jobs/b-destroy.yaml",
          "blocks:\n  - {definition: app, server: srv, action: DESTROY, users: [u1, u2]}\n")
    commit_all(repo, "destroy for u1 u2")
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "b-destroy") == {"u1": "DESTROYED", "u2": "DESTROYED"}
    assert not (repo / TARGET / "u1" / "app").exists() and not (repo / TARGET / "u2" / "app").exists()
    assert deployed(repo, "u3").exists()
    write(repo, "jobs/c-destroy-again.yaml", "blocks:\n  - {definition: app, server: srv, action: DESTROY, "
          "users: [u1]}\n")
    commit_all(repo, "again")
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "c-destroy-again") == {"u1": "UNCHANGED"}
    assert record(repo, "c-destroy-again")["status"] == "SUCCESS"


def test_identical_content_is_unchanged_and_untouched(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"a": JOB})
    assert reconcile(repo).returncode == 0
    files = fingerprint(repo / TARGET)
    write(repo, "jobs/b.yaml", JOB)
    commit_all(repo, "same content again")
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "b") == {"u1": "UNCHANGED", "u2": "UNCHANGED", "u3": "UNCHANGED"}
    assert fingerprint(repo / TARGET) == files


# --------------------------------------------------------------------------------- failure policies
BROKEN_FOR_U2 = """\
    user_tokens:
      u2:
        content_tokens: {greeting: 'say "hi"'}
"""


@pytest.mark.parametrize("policy, job_status, exit_code, expected", [
    ("skip", "FAILURE", 1, {"u1": "DEPLOYED", "u2": "SKIPPED", "u3": "DEPLOYED"}),
    ("force", "SUCCESS", 0, {"u1": "DEPLOYED", "u2": "FORCED", "u3": "DEPLOYED"}),
    ("abort", "FAILURE", 1, {"u1": "NOT_RUN", "u2": "FAILED", "u3": "NOT_RUN"}),
])
def test_failure_policy_with_a_broken_asset(make_repo: MakeRepo, policy: str, job_status: str, exit_code: int,
                                            expected: dict[str, str]) -> None:
    second = "  - {definition: app, server: srv, users: [u1], content_tokens: {greeting: later}}\n"
    repo = make_repo(jobs={"risky": job(on_failure=policy, block_extra=BROKEN_FOR_U2) + second})
    result = reconcile(repo)
    assert result.returncode == exit_code, result.stdout + result.stderr
    rec = record(repo, "risky")
    assert rec["status"] == job_status
    assert rec["on_failure"] == policy
    assert users_of(repo, "risky") == expected
    u2 = rec["blocks"][0]["users"]["u2"]["reason"]
    assert "config.json is not valid JSON after rendering" in u2
    log = (repo / rec["log"]).read_text()
    if policy == "skip":
        assert not deployed(repo, "u2").exists()
        assert json.loads(deployed(repo, "u3").read_text()) == {"greeting": "hello"}
        assert users_of(repo, "risky", 1) == {"u1": "DEPLOYED"}
        assert json.loads(deployed(repo, "u1").read_text()) == {"greeting": "later"}
    elif policy == "force":
        assert deployed(repo, "u2").read_text() == '{"greeting": "say "hi""}\n'
        assert "WARNING u2" in log
        assert users_of(repo, "risky", 1) == {"u1": "DEPLOYED"}
    else:
        assert not (repo / TARGET).exists()  # nobody in the block, nor later blocks, was deployed
        assert users_of(repo, "risky", 1) == {"u1": "NOT_RUN"}
        assert rec["summary"] == {"FAILED": 1, "NOT_RUN": 3}


# ----------------------------------------------------------------------------------------- secrets
SECRET = "s3cr3t-Val/ue+XyZ=="


def test_a_secret_never_leaves_the_deployment(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"with-secret": """\
blocks:
  - definition: app
    server: srv
    users: [u1, u2]
    content_tokens:
      greeting: {secret: DEPLOY_SECRET_X}
"""})
    write(repo, "definitions/app.yaml", (repo / "definitions/app.yaml").read_text() + """\
  - name: api_key
    type: string
    secret: true
""")
    write(repo, "jobs/with-secret.yaml", (repo / "jobs/with-secret.yaml").read_text()
          + "    parameter_tokens:\n      api_key: {secret: DEPLOY_SECRET_X}\n")
    commit_all(repo, "secret job")
    env = {"DEPLOY_SECRET_X": SECRET}
    result = reconcile(repo, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(deployed(repo, "u1").read_text()) == {"greeting": SECRET}  # the user does get it
    manifest = json.loads(deployed(repo, "u1", ".deployment.json").read_text())
    assert manifest["parameters"]["api_key"] == {"secret": "DEPLOY_SECRET_X"}
    build = record(repo, "with-secret")["build_id"]
    outputs = [
        result.stdout, result.stderr,
        git(repo, "log", "-p", "--all"),
        deployed(repo, "u1", ".deployment.json").read_text(),
        run_cli("status", "--repo", str(repo), env=env).stdout,
        run_cli("status", "with-secret", "--repo", str(repo), env=env).stdout,
        run_cli("status", "--format", "json", "--repo", str(repo), env=env).stdout,
        run_cli("logs", build, "--repo", str(repo), env=env).stdout,
        run_cli("plan", "--format", "json", "--repo", str(repo), env=env).stdout,
    ]
    outputs += [p.read_text("utf-8") for p in (repo / "status").rglob("*") if p.is_file()]
    forms = [SECRET, base64.b64encode(SECRET.encode()).decode(), "s3cr3t-Val%2Fue%2BXyZ%3D%3D"]
    for text in outputs:
        for form in forms:
            assert form not in text


def test_a_missing_secret_keeps_the_job_unclaimed(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"needs-secret": JOB.replace("greeting: hello",
                                                       "greeting: {secret: DEPLOY_SECRET_NONE}")})
    env = {k: v for k, v in os.environ.items() if k != "DEPLOY_SECRET_NONE"}
    result = run_cli("reconcile", "--repo", str(repo), env=env)
    assert result.returncode == 1
    assert "SECRET_UNSET" in result.stderr and "DEPLOY_SECRET_NONE" in result.stderr
    assert not (repo / "status").exists()
    assert states(repo) == {"needs-secret": "PENDING"}
    assert not (repo / TARGET).exists()


# ------------------------------------------------------------------------------- status and logs
BLOCK_KEYS = {"definition", "module_type", "server", "environment", "organization", "action", "users"}


def test_status_json_shape_and_listing_states(example_repo: Path) -> None:
    write(example_repo, "jobs/zz-broken.yaml",
          "blocks:\n  - {definition: nope, server: prod-eu, users: all}\n")
    commit_all(example_repo, "a broken job")
    before = {row["job"]: row for row in status_json(example_repo)}
    assert before["zz-broken"]["status"] == "INVALID"
    assert before["2026-11-01-sales-dashboard-rollout"]["status"] == "PENDING"
    assert reconcile(example_repo).returncode == 1  # the invalid job is a problem
    rows = status_json(example_repo)
    assert [r["job"] for r in rows] == sorted(r["job"] for r in rows)
    by_job = {r["job"]: r for r in rows}
    assert {k: r["status"] for k, r in by_job.items()} == {
        "2026-11-01-sales-dashboard-rollout": "SUCCESS", "2026-11-02-runbook-plan": "SUCCESS",
        "2026-12-24-holiday-banner": "SCHEDULED", "draft-retire-staging-dashboard": "SUSPENDED",
        "zz-broken": "INVALID"}
    for row in rows:
        assert {"job", "status", "build_id", "created_at", "last_run_at", "blocks"} <= set(row)
        assert row["created_at"] is not None and row["created_at"].endswith("Z")
        for block in row["blocks"]:
            assert set(block) >= BLOCK_KEYS
    done = by_job["2026-11-01-sales-dashboard-rollout"]
    assert done["build_id"] == record(example_repo, done["job"])["build_id"]
    assert done["last_run_at"] == record(example_repo, done["job"])["started_at"]
    assert [b["environment"] for b in done["blocks"]] == ["production", "staging"]
    assert done["blocks"][0]["users"] == {"alice": "DEPLOYED", "bob": "DEPLOYED", "carol": "DEPLOYED"}
    waiting = by_job["2026-12-24-holiday-banner"]
    assert waiting["build_id"] is None and waiting["last_run_at"] is None
    assert waiting["blocks"][0]["users"] == {} and waiting["blocks"][0]["organization"] == "acme-europe"


def test_status_text_is_one_untruncated_line_per_job(example_repo: Path) -> None:
    assert reconcile(example_repo).returncode == 0
    result = run_cli("status", "--repo", str(example_repo))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["JOB", "BUILD_ID", "ENVIRONMENT", "ORGANIZATION", "MODULE_TYPE",
                                    "MODULE_NAME", "ACTION", "STATUS", "CREATED", "LAST_RUN"]
    assert len(lines) == 5
    build = record(example_repo, "2026-11-01-sales-dashboard-rollout")["build_id"]
    assert any(line.startswith(f"2026-11-01-sales-dashboard-rollout\t{build}\t") for line in lines)
    detail = run_cli("status", "2026-11-01-sales-dashboard-rollout", "--repo", str(example_repo))
    assert detail.returncode == 0
    assert "alice" in detail.stdout and "DEPLOYED" in detail.stdout
    missing = run_cli("status", "no-such-job", "--repo", str(example_repo))
    assert missing.returncode == 1


def test_status_exits_zero_when_jobs_failed(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"risky": job(on_failure="abort", block_extra=BROKEN_FOR_U2)})
    assert reconcile(repo).returncode == 1
    assert run_cli("status", "--repo", str(repo)).returncode == 0
    assert states(repo) == {"risky": "FAILURE"}


def test_logs_of_a_build(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": JOB})
    assert reconcile(repo).returncode == 0
    build = record(repo, "rollout")["build_id"]
    result = run_cli("logs", build, "--repo", str(repo))
    assert result.returncode == 0
    assert result.stdout == (repo / "status" / "logs" / f"{build}.log").read_text()
    lines = result.stdout.splitlines()
    assert all(line[:4].isdigit() and line[19] == "Z" for line in lines)
    assert "claimed" in lines[0] and lines[-1].endswith("finished: SUCCESS")
    unknown = run_cli("logs", "20000101T000000Z-rollout-000000", "--repo", str(repo))
    assert unknown.returncode == 1 and "no log" in unknown.stderr
    malformed = run_cli("logs", "../../etc/passwd", "--repo", str(repo))
    assert malformed.returncode == 1 and "Traceback" not in malformed.stderr


# -------------------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("command", [["reconcile"], ["status"], ["plan"],
                                     ["logs", "20000101T000000Z-x-000000"]])
def test_not_a_git_repository_is_exit_2(tmp_path: Path, command: list[str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_cli(*command, "--repo", str(plain), env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert result.returncode == 2
    assert "not a git repository" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_usage_errors_are_exit_2(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo()
    for args in (["reconcile", "--no-such-flag"], ["frobnicate"], ["status", "--format", "yaml"], []):
        result = run_cli(*args, "--repo", str(repo)) if args else run_cli()
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr
    assert run_cli("reconcile", "--repo", str(tmp_path / "missing")).returncode == 2


def test_empty_repository_and_detached_head(tmp_path: Path, make_repo: MakeRepo) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    result = reconcile(empty)
    assert result.returncode == 2 and "no commits" in result.stderr
    repo = make_repo(jobs={"rollout": JOB})
    git(repo, "checkout", "-q", "--detach")
    result = reconcile(repo)
    assert result.returncode == 2 and "detached" in result.stderr
    assert reconcile(repo, "--branch", "main").returncode == 0
    assert git(repo, "show", "main:status/rollout.json")


def test_a_failed_job_is_exit_1_and_a_clean_pass_exit_0(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"risky": job(block_extra=BROKEN_FOR_U2)})
    assert reconcile(repo).returncode == 1
    assert reconcile(repo).returncode == 0  # nothing new: the failure was reported by the pass that ran it


HOLD_LOCK = """
import sys, time
from pathlib import Path
from reconciler.ledger import git
from reconciler.ledger.lock import RepoLock
repo = git.open_repo(Path(sys.argv[1]))
with RepoLock(repo.state_dir, wait=0):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_pass_while_the_lock_is_held_exits_2_naming_the_holder(make_repo: MakeRepo) -> None:
    repo = make_repo(jobs={"rollout": JOB})
    with subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(repo)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "locked"
            result = reconcile(repo, "--lock-wait", "0.5")
            assert result.returncode == 2
            assert f"pid {holder.pid}" in result.stderr and "lock" in result.stderr
            assert not (repo / "status").exists()
        finally:
            holder.stdin.close()  # the helper reads stdin to its end, then releases the lock and exits
            holder.wait(timeout=30)
    assert reconcile(repo).returncode == 0  # the lock died with its holder
    assert record(repo, "rollout")["status"] == "SUCCESS"
