"""The operator's day on the command line: finding the repo, retry and push, logs, notices, details, init."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.cli import main
from tests.support.cli import run_cli, run_on_terminal
from tests.support.repos import BROKEN_FOR_U2, GIT_ENV, OK_JOB, commit_all, git, write


def clone_of_bare(tmp_path: Path, make_repo: Callable[..., Path], jobs: dict[str, str]) -> tuple[Path, Path]:
    """A bare remote holding a deployment repo, and a clone of it with `origin` as upstream."""
    source = make_repo(name="source", jobs=jobs)
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    return bare, work


# -- finding the deployment repo ---------------------------------------------------------------------

def test_validate_in_an_empty_or_wrong_folder_says_no_deployment_repo(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", "--repo", str(empty)]) == 2
    assert "no deployment repo found" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    git(plain, "init", "-q")
    write(plain, "notes.txt", "not a deployment repo\n")
    assert main(["validate", "--repo", str(plain)]) == 2
    assert "no deployment repo found" in capsys.readouterr().err


def test_every_command_finds_the_repo_from_a_folder_inside_it(example_repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(example_repo / "jobs")
    assert main(["validate"]) == 0
    assert "ok: 4 job(s), 2 definition(s), 2 server(s) valid" in capsys.readouterr().out
    assert main(["status", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    monkeypatch.chdir(example_repo / "definitions" / "sales-dashboard")
    assert main(["plan", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["to_run"]) == 2


def test_repo_before_the_command_and_errors_without_a_doubled_prefix(example_repo: Path) -> None:
    before = run_cli("--repo", str(example_repo), "status", "--format", "json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout) == json.loads(run_cli("status", "--repo", str(example_repo), "--format",
                                                           "json").stdout)
    wrong = run_cli("status", "--format", "xml", "--repo", str(example_repo))
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("reconciler: error: argument --format") and wrong.stderr.count("reconciler:") == 1
    assert "see `reconciler status --help`" in wrong.stderr


# -- init in an empty clone ----------------------------------------------------------------------------

def test_init_in_an_empty_clone_keeps_its_remote(tmp_path: Path) -> None:
    bare = tmp_path / "host.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "trunk", str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(tmp_path / "clone"))
    result = run_cli("init", str(tmp_path / "clone"))
    assert result.returncode == 0, result.stderr
    assert "git push -u origin trunk" in result.stdout
    clone = tmp_path / "clone"
    assert git(clone, "remote", "get-url", "origin").strip() == str(bare)
    assert "branch: trunk" in (clone / "reconciler.yaml").read_text("utf-8")
    git(clone, "push", "-q", "-u", "origin", "trunk")
    reconcile = run_cli("reconcile", "--repo", str(clone))
    assert reconcile.returncode == 0, reconcile.stderr
    assert git(clone, "status", "--porcelain") == ""
    assert run_cli("init", str(clone)).returncode == 2  # it has commits now: never written over


# -- retry --commit / --push ------------------------------------------------------------------------

def test_retry_commit_with_an_upstream_says_push_and_retry_push_runs_on_the_next_pass(
        tmp_path: Path, make_repo: Callable[..., Path]) -> None:
    bare, work = clone_of_bare(tmp_path, make_repo, {"broken": BROKEN_FOR_U2})
    assert run_cli("reconcile", "--repo", str(work)).returncode == 1  # u2 SKIPPED: FAILURE, pushed
    committed = run_cli("retry", "broken", "--commit", "--repo", str(work))
    assert committed.returncode == 0, committed.stderr
    assert "the next reconcile pass runs it" not in committed.stdout  # it would not: not on the remote
    assert "git push origin main" in committed.stdout
    refused = run_cli("reconcile", "--repo", str(work))
    assert refused.returncode == 2  # what the old promise led to
    git(work, "reset", "-q", "--hard", "origin/main")

    pushed = run_cli("retry", "broken", "--push", "--repo", str(work))
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed to origin/main; the next reconcile pass runs it" in pushed.stdout
    assert "jobs/broken-retry-1.yaml" in git(bare, "ls-tree", "-r", "--name-only", "main")
    again = run_cli("reconcile", "--repo", str(work))
    assert again.returncode == 1, again.stderr  # the retry ran (and u2 is still broken)
    status = json.loads(run_cli("status", "broken-retry-1", "--format", "json", "--repo", str(work)).stdout)
    assert status["build_id"] and status["retry_of"] == "broken"


def test_retry_push_without_a_remote_commits_and_says_so(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"broken": BROKEN_FOR_U2})
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 1
    result = run_cli("retry", "broken", "--push", "--repo", str(repo))
    assert result.returncode == 1 and "no remote to push to" in result.stderr
    assert "Retry broken" in git(repo, "log", "-1", "--format=%s")


# -- logs JOB, logs -f ------------------------------------------------------------------------------

def test_logs_of_a_job_is_its_latest_build(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"done": OK_JOB, "later": "suspend: true\n" + OK_JOB})
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 0
    build = json.loads(run_cli("status", "done", "--format", "json", "--repo", str(repo)).stdout)["build_id"]
    by_job = run_cli("logs", "done", "--repo", str(repo))
    assert by_job.returncode == 0 and by_job.stdout == run_cli("logs", build, "--repo", str(repo)).stdout
    assert f"as build {build}" in by_job.stdout
    never = run_cli("logs", "later", "--repo", str(repo))
    assert never.returncode == 1 and "has no build yet" in never.stderr
    assert run_cli("logs", "nope", "--repo", str(repo)).returncode == 1
    assert run_cli("logs", "NOT A NAME", "--repo", str(repo)).returncode == 1


# Each user waits (at most 2 minutes) until the file named by its `greeting` token exists: the test
# opens that gate when it has seen what it wants to see, so nothing depends on timing.
SLOW_SERVER = """\
environment: test
organization: test-org
driver:
  type: command
  commands:
    APPLY-AUTO: [{python}, -c, "import pathlib, time, os; g = pathlib.Path(os.environ['RECONCILER_TOKEN_GREETING']); \
[time.sleep(0.05) for _ in range(2400) if not g.exists()]"]
users: [{{id: a}}, {{id: b}}]
"""


def slow_job(repo: Path, gate: Path) -> None:
    write(repo, "servers/slow.yaml", SLOW_SERVER.format(python=sys.executable))
    write(repo, "jobs/slow.yaml", "blocks:\n  - {definition: app, server: slow, users: all, "
                                  f"content_tokens: {{greeting: '{gate}'}}}}\n")
    commit_all(repo, "a slow job")


def test_logs_follow_waits_for_the_build_and_follows_it_to_the_end(make_repo: Callable[..., Path],
                                                                   tmp_path: Path) -> None:
    repo = make_repo()
    gate = tmp_path / "gate"
    slow_job(repo, gate)
    env = {**os.environ, **GIT_ENV}
    follower = subprocess.Popen([sys.executable, "-m", "reconciler", "logs", "-f", "slow", "--repo", str(repo),
                                 "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    passing = subprocess.Popen([sys.executable, "-m", "reconciler", "reconcile", "--repo", str(repo),
                                "--concurrency", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "WORKING" not in git(repo, "show", "main:status/slow.json",
                                                                    check=False):
            time.sleep(0.1)
        assert follower.poll() is None  # the build is running: still following
        gate.touch()  # let the users finish
        out, err = follower.communicate(timeout=120)
        passing.communicate(timeout=120)
        assert passing.returncode == 0
    finally:
        for proc in (follower, passing):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert follower.returncode == 0, err
    assert "waiting for job slow to start" in err
    final = run_cli("logs", "slow", "--repo", str(repo)).stdout
    assert out == final and "finished: SUCCESS" in out  # every line, once, to the end


# -- notices and progress -----------------------------------------------------------------------------

def test_plan_and_reconcile_say_when_job_files_are_not_committed(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"done": OK_JOB})
    write(repo, "jobs/new-one.yaml", OK_JOB)
    write(repo, "jobs/done.yaml", OK_JOB.replace("hi", "hello"))
    plan = run_cli("plan", "--repo", str(repo))
    assert "2 job file(s) in the working tree are not committed" in plan.stdout
    assert "jobs/new-one.yaml (new)" in plan.stdout and "jobs/done.yaml (modified)" in plan.stdout
    data = json.loads(run_cli("plan", "--format", "json", "--repo", str(repo)).stdout)
    assert sorted(data["uncommitted_jobs"]) == ["jobs/done.yaml", "jobs/new-one.yaml"]
    screen = run_on_terminal(["reconcile"], repo)
    assert "not committed, so no pass runs them" in screen and "jobs/new-one.yaml (new)" in screen
    piped = run_cli("reconcile", "--repo", str(repo))  # a CI job or a hook's log: the line and an event
    assert "not committed, so no pass runs them" in piped.stderr
    events = [json.loads(line) for line in piped.stderr.splitlines() if line.startswith("{")]
    noted = [e for e in events if e["event"] == "jobs.uncommitted"]
    assert len(noted) == 1 and sorted(noted[0]["jobs"]) == ["jobs/done.yaml", "jobs/new-one.yaml"], events
    git(repo, "add", "jobs")
    git(repo, "commit", "-q", "-m", "commit them")
    assert "not committed" not in run_cli("plan", "--repo", str(repo)).stdout


def test_the_progress_bar_counts_users_of_the_job_and_time(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    repo = make_repo()
    gate = tmp_path / "gate"
    slow_job(repo, gate)

    def open_gate_once_drawn(screen: str) -> None:
        if "0/2 users" in screen:
            gate.touch()

    screen = run_on_terminal(["reconcile", "--concurrency", "1"], repo, on_output=open_gate_once_drawn)
    assert gate.exists(), screen  # the bar showed the job's users before any finished
    assert re.search(r"slow +\S* *0/2 users +0:00:\d\d", screen), screen
    assert "slow: starting" not in screen and "slow: SUCCESS" in screen


# -- per-user details ---------------------------------------------------------------------------------

SECRET_DEFINITION = """\
module_type: test/content
content: app
content_tokens:
  - name: greeting
parameter_tokens:
  - name: level
    type: integer
    default: 1
  - name: api_key
    type: string
    secret: true
"""


def test_status_job_user_shows_resolved_tokens_digests_and_result(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"with-secret": BROKEN_FOR_U2.replace(
        "content_tokens: {greeting: hi}\n", "content_tokens: {greeting: hi}\n"
        "    parameter_tokens: {level: 3, api_key: {secret: DEPLOY_SECRET_API_KEY}}\n")})
    write(repo, "definitions/app.yaml", SECRET_DEFINITION)
    commit_all(repo, "a secret parameter")
    secret = "s3cr3t-value-never-shown"
    assert run_cli("reconcile", "--repo", str(repo), env={"DEPLOY_SECRET_API_KEY": secret}).returncode == 1
    text = run_cli("status", "with-secret", "--user", "u1", "--repo", str(repo))
    assert text.returncode == 0, text.stderr
    assert "api_key = {secret: DEPLOY_SECRET_API_KEY}" in text.stdout and "level = 3" in text.stdout
    assert 'greeting = "hi"' in text.stdout and "result: DEPLOYED" in text.stdout
    data = json.loads(run_cli("status", "with-secret", "--user", "u1", "--format", "json", "--repo",
                              str(repo)).stdout)
    (block,) = data["blocks"]
    deployed = repo / ".deployments" / "srv" / "u1" / "app"
    assert block["files"] == {"config.json": "sha256:" + hashlib.sha256(
        (deployed / "config.json").read_bytes()).hexdigest()}
    assert block["content_digest"] == json.loads((deployed / ".deployment.json").read_text("utf-8"))[
        "content_digest"]
    skipped = json.loads(run_cli("status", "with-secret", "--user", "u2", "--format", "json", "--repo",
                                 str(repo)).stdout)["blocks"][0]
    assert skipped["status"] == "SKIPPED" and skipped["tokens"]["greeting"] == 'say "hi"' and skipped["broken"]
    for out in (text.stdout, json.dumps(data)):
        assert secret not in out
    missing = run_cli("status", "with-secret", "--user", "u3", "--repo", str(repo))
    assert missing.returncode == 1 and "not a recipient" in missing.stdout
    assert run_cli("status", "--user", "u1", "--repo", str(repo)).returncode == 2


# -- did you mean ---------------------------------------------------------------------------------------

def test_unknown_names_suggest_the_close_one(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={
        "typos": "blocks:\n  - {definition: ap, server: srv, users: [u1], content_tokens: {greeting: hi}}\n"
                 "  - {definition: app, server: svr, users: [u1], content_tokens: {greeting: hi}}\n"
                 "  - {definition: app, server: srv, users: [u1, U2, nobody],\n"
                 "     content_tokens: {greting: hi, level: 2},\n"
                 "     user_tokens: {u-1: {content_tokens: {greeting: x}}}}\n"})
    data = json.loads(run_cli("validate", "--format", "json", "--repo", str(repo)).stdout)
    messages = {p["message"] for p in data["problems"]}
    expected = ["definition 'ap' does not exist (definitions/ap.yaml); did you mean 'app'?",
                "server 'svr' does not exist (servers/svr.yaml); did you mean 'srv'?",
                "user 'U2' does not exist on server 'srv'; did you mean 'u2'?",
                "user 'nobody' does not exist on server 'srv'",
                "content token 'greting' is not declared by definition 'app'; did you mean 'greeting'?",
                "content token 'level' is not declared by definition 'app'; it is a parameter token: set it under "
                "parameter_tokens",
                "user_tokens names 'u-1', who is not a user of this block; did you mean 'u1'?"]
    for message in expected:
        assert message in messages, (message, sorted(messages))


def test_watch_prints_readable_lines_on_a_terminal_and_json_otherwise(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"first": OK_JOB, "typo": OK_JOB.replace("srv", "srvv")})
    screen = run_on_terminal(["watch", "--interval", "30"], repo, columns=200,
                             on_output=lambda text: "pass finished" in text)
    lines = screen.splitlines()
    assert not any(line.lstrip().startswith("{") for line in lines), screen
    (finished,) = [line for line in lines if " pass finished: " in line]
    assert "outcome=failure" in finished or "outcome=ok" in finished
    assert "ran=first:SUCCESS" in finished and "1 problem(s):" in finished
    below = lines[lines.index(finished) + 1]
    assert below.startswith("    jobs/typo.yaml:") and "[REF_SERVER]" in below  # the message itself
    assert re.search(r"^\d\d:\d\d:\d\d watch started: ", screen, re.M)


# -- the GitHub Actions examples ---------------------------------------------------------------------

def test_the_workflow_examples_install_a_pinned_reconciler_not_an_unpublished_package() -> None:
    import yaml

    from tests.support.repos import ROOT

    for path in sorted((ROOT / "examples" / "github-actions").glob("*.yml")):
        text = path.read_text("utf-8")
        workflow = yaml.safe_load(text)
        assert "gitops-reconciler==" not in text, path.name  # not on PyPI: that install fails
        spec = workflow["env"]["RECONCILER"]
        assert re.fullmatch(r"gitops-reconciler @ git\+https://\S+@v\d+\.\d+\.\d+", spec), spec  # a tag
        steps = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
        assert any('pip install "$RECONCILER"' in run for run in steps), path.name


# -- regression: a pass killed mid-build, then a new user and a job for them (issue 16, point 7) ---------

def test_recovering_a_killed_build_beside_a_job_for_a_new_user(make_repo: Callable[..., Path]) -> None:
    from tests.support.repos import SERVER

    repo = make_repo(jobs={"first": OK_JOB})
    killed = run_cli("reconcile", "--repo", str(repo), env={"RECONCILER_FAILPOINTS": "user.before-apply=kill"})
    assert killed.returncode == -9, killed.stderr  # SIGKILL inside the build
    assert json.loads(git(repo, "show", "main:status/first.json"))["status"] in ("IN-PROGRESS", "WORKING")
    write(repo, "servers/srv.yaml", SERVER.format(name="srv") + "  - id: u4\n")
    write(repo, "jobs/for-u4.yaml", OK_JOB.replace("users: all", "users: [u4]"))
    commit_all(repo, "a new user and a job for them")
    again = run_cli("reconcile", "--repo", str(repo))
    assert again.returncode in (0, 1), again.stderr  # never 3 (an internal error)
    assert "KeyError" not in again.stderr and "internal error" not in again.stderr
    states = {row["job"]: row["status"] for row in json.loads(run_cli("status", "--format", "json", "--repo",
                                                                       str(repo)).stdout)}
    assert states["for-u4"] == "SUCCESS"
    assert states["first"] in ("SUCCESS", "FAILURE")  # recovered, not left WORKING
