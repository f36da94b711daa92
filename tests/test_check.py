"""`reconciler check`: the pull-request check, against real git branches and the real CLI."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import run_main
from tests.support.repos import commit_all, git, write

GOLDEN = Path(__file__).parent / "golden" / "check.md"

DONE = """\
description: Already deployed
blocks:
  - definition: app
    server: srv
    users: all
    content_tokens: {greeting: hello}
"""
NEW = """\
description: New rollout with a per-user title
blocks:
  - definition: app
    server: srv
    users: [u1, u2]
    content_tokens: {greeting: hi}
    parameter_tokens:
      level: 2
    user_tokens:
      u2:
        content_tokens: {greeting: 'say "hi"'}
  - definition: app
    server: srv
    action: PLAN
    users: [u3]
    content_tokens:
      greeting: {secret: DEPLOY_SECRET_GREETING}
"""
BAD = """\
blocks:
  - definition: app
    server: srv
    users: [u1, nobody]
    content_tokens: {greeting: x}
    colour: red
"""


API_SERVER = """\
environment: production
organization: test-org
driver:
  type: http
  url: https://deploy.example.com/api/v1
  auth: {secret: DEPLOY_SECRET_API_TOKEN}
users: [{id: u1}]
"""


def normalise(text: str) -> str:
    text = re.sub(r"\b[0-9]{8}T[0-9]{6}Z-[a-z0-9._-]+-[0-9a-f]{6}\b", "<build>", text)
    return re.sub(r"\b[0-9a-f]{40}\b|\b[0-9a-f]{12}\b", "<commit>", text)


def pull_request(make_repo: Callable[..., Path]) -> Path:
    """main: `done` executed; branch `pr`: adds `new`, edits `done`, adds the invalid `bad`."""
    repo = make_repo(jobs={"done": DONE})
    result = run_main("reconcile", "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "jobs/new.yaml", NEW)
    write(repo, "jobs/done.yaml", DONE.replace("hello", "hello again"))
    write(repo, "jobs/bad.yaml", BAD)
    write(repo, "servers/api.yaml", API_SERVER)  # a new destination: for the reviewer, not a problem
    commit_all(repo, "pull request")
    return repo


def test_pull_request_scenario_json(make_repo: Callable[..., Path]) -> None:
    repo = pull_request(make_repo)
    before = git(repo, "rev-parse", "main", "pr")
    result = run_main("check", "--repo", str(repo), "--base", "main", "--format", "json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["to_run"] == ["new"]
    codes = {(p["path"], p["code"]) for p in data["problems"]}
    assert ("jobs/done.yaml", "MODIFIED") in codes
    assert ("jobs/bad.yaml", "SCHEMA") in codes
    assert all(set(p) == {"path", "line", "message", "code"} for p in data["problems"])
    jobs = {j["job"]: j for j in data["jobs"]}
    assert (jobs["new"]["change"], jobs["new"]["state"], jobs["new"]["runs"]) == ("added", "PENDING", True)
    assert (jobs["done"]["change"], jobs["done"]["state"]) == ("changed", "MODIFIED")
    assert (jobs["bad"]["change"], jobs["bad"]["state"]) == ("added", "INVALID")
    first, second = jobs["new"]["blocks"]
    users = {u["user"]: u for u in first["users"]}
    assert users["u1"]["outcome"] == "deploy" and users["u1"]["broken"] == []
    assert users["u2"]["outcome"] == "SKIPPED"
    assert "config.json is not valid JSON after rendering" in users["u2"]["broken"][0]
    # a secret is something the reconciler will read at run time, not a broken asset
    (u3,) = second["users"]
    assert (u3["outcome"], u3["broken"], u3["secrets"]) == ("plan", [], ["DEPLOY_SECRET_GREETING"])
    assert second["environment"] == "test" and second["organization"] == "test-org"
    # nothing ran, nothing was written
    manifest = repo / ".deployments" / "srv" / "u1" / "app" / ".deployment.json"
    assert json.loads(manifest.read_text("utf-8"))["job"] == "done"
    assert git(repo, "rev-parse", "main", "pr") == before
    assert git(repo, "status", "--porcelain") == ""


def test_pull_request_markdown_matches_golden(make_repo: Callable[..., Path]) -> None:
    repo = pull_request(make_repo)
    result = run_main("check", "--repo", str(repo), "--base", "main", "--head", "pr", "--format", "markdown")
    assert result.returncode == 1, result.stderr
    got = normalise(result.stdout)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got, "utf-8")
    assert got == GOLDEN.read_text("utf-8")


def test_github_annotations(make_repo: Callable[..., Path]) -> None:
    repo = pull_request(make_repo)
    result = run_main("check", "--repo", str(repo), "--base", "main", "--format", "github")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("::error file=jobs/done.yaml,line=6,title=MODIFIED::") for line in lines)
    assert any(line.startswith("::error file=jobs/bad.yaml,line=6,title=SCHEMA::") for line in lines), lines
    assert any(line.startswith("::warning file=jobs/new.yaml,title=broken assets::") and "u2" in line
               for line in lines)
    assert lines[-1].startswith("::notice title=reconciler check::merging would run 1 job(s) for 3 user(s)")
    assert all("\n" not in line for line in lines)


def test_text_format_and_clean_pull_request_passes(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"done": DONE})
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "jobs/next.yaml", DONE.replace("hello", "bonjour"))
    commit_all(repo, "add a job")
    result = run_main("check", "--repo", str(repo), "--base", "main")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "next (added): PENDING, runs on merge" in result.stdout
    assert "done (unchanged): PENDING, runs on merge" in result.stdout  # not run yet on main: merging runs it
    last = result.stdout.splitlines()[-1]
    assert last == "merging would run 2 job(s) for 6 user(s) (0 with broken assets); ok"


def test_ledger_edits_fail_one_problem_per_path(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"done": DONE})
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0
    git(repo, "checkout", "-q", "-b", "pr")
    record = repo / "status" / "done.json"
    record.write_text(record.read_text("utf-8").replace('"SUCCESS"', '"FAILURE"'), "utf-8")
    write(repo, "status/forged.json", "{}\n")
    log = next((repo / "status" / "logs").iterdir())
    log.unlink()
    commit_all(repo, "tamper with the ledger")
    result = run_main("check", "--repo", str(repo), "--base", "main", "--format", "json")
    assert result.returncode == 1
    edits = {p["path"]: p for p in json.loads(result.stdout)["problems"] if p["code"] == "LEDGER_EDIT"}
    assert set(edits) == {"status/done.json", "status/forged.json", f"status/logs/{log.name}"}
    assert "changes status/done.json" in edits["status/done.json"]["message"]
    assert "adds status/forged.json" in edits["status/forged.json"]["message"]
    assert edits[f"status/logs/{log.name}"]["line"] is None


def test_base_moving_on_after_branching_is_not_blamed_on_the_pr(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"done": DONE})
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "jobs/next.yaml", DONE.replace("hello", "hej"))
    commit_all(repo, "add a job")
    git(repo, "checkout", "-q", "main")
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0  # main moves on with status commits
    result = run_main("check", "--repo", str(repo), "--base", "main", "--head", "pr", "--format", "json")
    data = json.loads(result.stdout)
    assert result.returncode == 0, data["problems"]
    assert data["to_run"] == ["next"]  # `done` has a record on the base: not run again


def test_settings_come_from_the_base(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"done": DONE})
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "reconciler.yaml", "ledger_dir: elsewhere\nsecret_prefixes: [ANY_]\n")
    write(repo, "jobs/leak.yaml", DONE.replace("hello", "{secret: ANY_TOKEN}"))
    commit_all(repo, "move the ledger and widen secrets")
    result = run_main("check", "--repo", str(repo), "--base", "main", "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    codes = {(p["path"], p["code"]) for p in data["problems"]}
    assert ("reconciler.yaml", "LEDGER_EDIT") in codes
    assert ("jobs/leak.yaml", "SECRET_PREFIX") in codes
    assert "done" not in data["to_run"]  # judged against the base's ledger in status/
    assert any("base's settings" in note for note in data["notes"])


def test_unknown_base_is_a_usage_error(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    result = run_main("check", "--repo", str(repo), "--base", "origin/nope")
    assert result.returncode == 2
    assert "base 'origin/nope' is not a commit" in result.stderr
    assert "Traceback" not in result.stderr


def test_modified_points_at_the_changed_line_and_servers_need_review(make_repo: Callable[..., Path]) -> None:
    repo = pull_request(make_repo)
    data = json.loads(run_main("check", "--repo", str(repo), "--base", "main", "--format", "json").stdout)
    (modified,) = [p for p in data["problems"] if p["code"] == "MODIFIED"]
    assert modified["line"] == 6  # `content_tokens: {greeting: hello again}`, not line 1
    (server,) = data["needs_review"]["servers"]
    assert (server["path"], server["change"], server["driver"], server["host"], server["secrets"]) == (
        "servers/api.yaml", "added", "http", "deploy.example.com", ["DEPLOY_SECRET_API_TOKEN"])
    users = {u["user"]: u for b in next(j for j in data["jobs"] if j["job"] == "new")["blocks"] for u in b["users"]}
    assert users["u1"]["tokens"] == {"greeting": "hi", "level": 2}
    assert users["u3"]["tokens"] == {"greeting": {"secret": "DEPLOY_SECRET_GREETING"}, "level": 1}
    text = run_main("check", "--repo", str(repo), "--base", "main").stdout
    assert "needs review:\n  server servers/api.yaml (added): driver http, host deploy.example.com, secrets " \
           "DEPLOY_SECRET_API_TOKEN" in text
    assert '    u3 tokens: greeting={secret: DEPLOY_SECRET_GREETING}, level=1' in text
    github = run_main("check", "--repo", str(repo), "--base", "main", "--format", "github").stdout
    assert "::warning file=servers/api.yaml,title=needs review::" in github


def test_a_changed_server_shows_what_it_was(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    write(repo, "servers/api.yaml", API_SERVER)
    commit_all(repo, "an api server")
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "servers/api.yaml", API_SERVER.replace("deploy.example.com", "elsewhere.example.net")
          .replace("DEPLOY_SECRET_API_TOKEN", "DEPLOY_SECRET_OTHER"))
    commit_all(repo, "move the api")
    data = json.loads(run_main("check", "--repo", str(repo), "--base", "main", "--format", "json").stdout)
    (server,) = data["needs_review"]["servers"]
    assert server["change"] == "changed" and server["host"] == "elsewhere.example.net"
    assert server["was"] == {"host": "deploy.example.com", "secrets": ["DEPLOY_SECRET_API_TOKEN"]}
    assert data["valid"] is True and data["ready"] is True


SETTINGS = "branch: main\nsecret_prefixes: [DEPLOY_SECRET_]\n"


def test_settings_change_is_called_out_and_never_ready_to_merge(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    write(repo, "reconciler.yaml", SETTINGS)
    commit_all(repo, "settings")
    git(repo, "checkout", "-q", "-b", "widen")
    write(repo, "reconciler.yaml", SETTINGS.replace("[DEPLOY_SECRET_]", "[DEPLOY_SECRET_, AWS_]"))
    commit_all(repo, "widen the secret prefixes")
    alone = run_main("check", "--repo", str(repo), "--base", "main", "--format", "json")
    data = json.loads(alone.stdout)
    assert alone.returncode == 0 and data["valid"] is True  # nothing else changes: no problem...
    assert data["ready"] is False and data["needs_review"]["settings"] == ["secret_prefixes"]  # ...but a person decides
    markdown = run_main("check", "--repo", str(repo), "--base", "main", "--format", "markdown").stdout
    assert "ready to merge" not in markdown and "needs review: changes secret_prefixes" in markdown
    assert "ready to merge" not in run_main("check", "--repo", str(repo), "--base", "main", "--format",
                                           "github").stdout
    assert "needs review: changes secret_prefixes" in run_main("check", "--repo", str(repo), "--base", "main").stdout

    write(repo, "jobs/sneaky.yaml", DONE)  # the same pull request also adds a job
    commit_all(repo, "and a job")
    mixed = run_main("check", "--repo", str(repo), "--base", "main", "--format", "json")
    problems = json.loads(mixed.stdout)["problems"]
    assert mixed.returncode == 1
    assert [(p["path"], p["line"], p["code"]) for p in problems] == [("reconciler.yaml", 2, "SETTINGS_CHANGE")]

    for key, value in (("branch", "branch: release\n"), ("remote", "remote: upstream\n"),
                       ("commit_author", "commit_author: {name: someone, email: x@example.com}\n")):
        git(repo, "checkout", "-q", "main")
        git(repo, "checkout", "-q", "-b", f"change-{key}")
        write(repo, "reconciler.yaml", SETTINGS + value if key != "branch" else SETTINGS.replace("branch: main\n",
                                                                                                   value))
        write(repo, "jobs/other.yaml", DONE)
        commit_all(repo, f"change {key}")
        codes = [p["code"] for p in json.loads(run_main("check", "--repo", str(repo), "--base", "main", "--format",
                                                      "json").stdout)["problems"]]
        assert "SETTINGS_CHANGE" in codes, key
