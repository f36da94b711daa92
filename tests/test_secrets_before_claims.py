"""SPEC 9.1 rule 10, secrets before claims: a job whose secrets are not all usable is never claimed.

A run-once job must not be spent because the reconciler's environment lacks a variable: the job stays
PENDING (no record, no commit), `plan`, `check` and `reconcile` name the job, the block and the
variable (never a value), and the next pass with the variable set runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.support.repos import GIT_ENV, commit_all, git, write

MakeRepo = Callable[..., Path]
GOOD = "a-long-enough-secret-value"
SHORT = "abc1"


def clean_env(**secrets: str) -> dict[str, str]:
    """The test's environment without any DEPLOY_SECRET_ variable, plus `secrets`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_SECRET_")}
    return {**env, **secrets}


def run(*args: str, repo: Path, env: dict[str, str]) -> tuple[int, str, str]:
    # not run_cli: it merges over os.environ, and this environment must be exactly `env`
    proc = subprocess.run([sys.executable, "-m", "reconciler", *args, "--repo", str(repo)],
                          env={**env, **GIT_ENV}, capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def secret_job(make_repo: MakeRepo) -> Path:
    """Block 0 reads DEPLOY_SECRET_GREETING (content token); block 1 reads DEPLOY_SECRET_U2 only in
    u2's override (parameter token)."""
    job = {"blocks": [
        {"definition": "app", "server": "srv", "users": "all",
         "content_tokens": {"greeting": {"secret": "DEPLOY_SECRET_GREETING"}}},
        {"definition": "app", "server": "srv", "users": ["u1", "u2"], "content_tokens": {"greeting": "hi"},
         "user_tokens": {"u2": {"parameter_tokens": {"level": {"secret": "DEPLOY_SECRET_U2"}}}}},
    ]}
    repo = make_repo(jobs={"needs-secrets": yaml.safe_dump(job)})
    write(repo, "definitions/app.yaml", "module_type: test/content\ncontent: app\ncontent_tokens:\n"
          "  - name: greeting\nparameter_tokens:\n  - name: level\n    type: string\n    default: '1'\n")
    commit_all(repo, "level as a string")
    return repo


def test_an_unset_secret_keeps_the_job_pending_and_unclaimed(make_repo: MakeRepo) -> None:
    repo = secret_job(make_repo)
    commits = git(repo, "rev-list", "--count", "HEAD")
    env = clean_env(DEPLOY_SECRET_GREETING=GOOD)  # DEPLOY_SECRET_U2 is missing

    code, out, _ = run("plan", "--format", "json", repo=repo, env=env)
    plan = json.loads(out)
    assert code == 1
    assert plan["to_run"] == [] and plan["needs_secrets"] == ["needs-secrets"]
    assert plan["states"]["needs-secrets"] == "PENDING"
    [problem] = [p for p in plan["problems"] if p["code"] == "SECRET_UNSET"]
    assert problem["path"] == "jobs/needs-secrets.yaml"
    for named in ("needs-secrets", "blocks[1]", "DEPLOY_SECRET_U2", "u2", "must be set on the reconciler"):
        assert named in problem["message"]

    code, out, err = run("reconcile", repo=repo, env=env)
    assert code == 1, out + err
    assert "SECRET_UNSET" in err and "DEPLOY_SECRET_U2" in err
    assert not (repo / "status").exists()  # never claimed: no record, no commit, nothing deployed
    assert git(repo, "rev-list", "--count", "HEAD") == commits
    assert not (repo / ".deployments").exists()
    code, out, _ = run("status", "--format", "json", repo=repo, env=env)
    assert [(j["job"], j["status"]) for j in json.loads(out)] == [("needs-secrets", "PENDING")]

    code, out, err = run("reconcile", repo=repo, env={**env, "DEPLOY_SECRET_U2": "twelve-chars"})
    assert code == 0, out + err  # once set, the job runs: it was not spent
    record = json.loads((repo / "status/needs-secrets.json").read_text("utf-8"))
    assert record["status"] == "SUCCESS"
    # u3 is only in block 0 (u1 and u2 get block 1's greeting last)
    assert json.loads((repo / ".deployments/srv/u3/app/config.json").read_text("utf-8")) == {"greeting": GOOD}


def test_a_short_secret_is_refused_without_showing_it(make_repo: MakeRepo) -> None:
    repo = secret_job(make_repo)
    env = clean_env(DEPLOY_SECRET_GREETING=SHORT, DEPLOY_SECRET_U2="long-enough-value")
    code, out, _ = run("plan", "--format", "json", repo=repo, env=env)
    plan = json.loads(out)
    assert code == 1 and plan["to_run"] == []
    [problem] = plan["problems"]
    assert problem["code"] == "SECRET_TOO_SHORT"
    assert "DEPLOY_SECRET_GREETING" in problem["message"] and "blocks[0]" in problem["message"]
    code, out, err = run("reconcile", repo=repo, env=env)
    assert code == 1 and "SECRET_TOO_SHORT" in err
    assert SHORT not in out + err
    assert not (repo / "status").exists()


def test_a_driver_setting_secret_is_checked_too(make_repo: MakeRepo, tmp_path: Path) -> None:
    """The http driver's `auth: {secret: ENV}`: nothing is claimed, no request is made."""
    repo = make_repo(jobs={"web": "blocks:\n  - {definition: app, server: web, users: all, "
                                  "content_tokens: {greeting: hi}}\n"})
    write(repo, "servers/web.yaml", yaml.safe_dump({
        "environment": "e", "organization": "o", "users": [{"id": "u1"}],
        "driver": {"type": "http", "url": "http://127.0.0.1:9/api", "auth": {"secret": "DEPLOY_SECRET_AUTH"},
                   "retries": 0}}))
    commit_all(repo, "an http server")
    code, _out, err = run("reconcile", repo=repo, env=clean_env())
    assert code == 1
    assert "SECRET_UNSET" in err and "DEPLOY_SECRET_AUTH" in err and "auth" in err
    assert not (repo / "status").exists()


def test_check_shows_unset_secrets_for_reviewers_without_failing(make_repo: MakeRepo) -> None:
    repo = make_repo()
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "jobs/new.yaml", "blocks:\n  - definition: app\n    server: srv\n    users: all\n"
          "    content_tokens: {greeting: {secret: DEPLOY_SECRET_GREETING}}\n")
    commit_all(repo, "a job reading a secret")
    code, out, err = run("check", "--base", "main", "--head", "pr", "--format", "json", repo=repo,
                         env=clean_env(DEPLOY_SECRET_GREETING=GOOD))
    result = json.loads(out)
    assert code == 0, out + err
    assert result["valid"] is True and result["to_run"] == ["new"]
    assert any("DEPLOY_SECRET_GREETING" in n and "must be set on the reconciler" in n for n in result["notes"])
    assert GOOD not in out + err


def test_secret_env_holds_lengths_never_values() -> None:
    from reconciler.core.secrets import SecretEnv

    env = SecretEnv.of({"DEPLOY_SECRET_A": GOOD, "DEPLOY_SECRET_B": SHORT})
    assert GOOD not in repr(env) and SHORT not in repr(env)
    assert env.problem("DEPLOY_SECRET_A") is None
    assert env.problem("DEPLOY_SECRET_B") is not None and env.problem("DEPLOY_SECRET_B")[0] == "SECRET_TOO_SHORT"
    assert env.problem("DEPLOY_SECRET_C") is not None and env.problem("DEPLOY_SECRET_C")[0] == "SECRET_UNSET"
