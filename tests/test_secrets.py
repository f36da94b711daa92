"""One secret used in every place a value can go, through every driver, never shown anywhere.

The job deploys a content token and a parameter token read from `DEPLOY_SECRET_KEY` with the
local driver, the http driver (which also authenticates with it; the target echoes requests back
and fails one user with the secret in its error body) and the command driver (whose tool prints
it raw, base64-, URL- and JSON-encoded, inside Basic credentials, then fails one user quoting it),
plus a definition whose asset breaks after rendering. The secret must not appear in any form in
status/, logs, git history, any command's output, or the local driver's manifests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.cli import run_main
from tests.support.http_target import Target
from tests.support.repos import commit_all, git, write
from tests.support.secrets import assert_no_form_of

SECRET = "Sup3r/S3cr3t+Kéy=&x y'q"
ENV = {"DEPLOY_SECRET_KEY": SECRET, "DEPLOY_SECRET_AUTH": SECRET}
TOOL = '''\
import base64, json, os, sys, urllib.parse
value = os.environ["RECONCILER_TOKEN_API_KEY"]
greeting = os.environ["RECONCILER_TOKEN_GREETING"]
raw = value.encode()
for out in (sys.stdout, sys.stderr):
    print("raw", value, "greeting", greeting, file=out)
    print("b64", base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), file=out)
    print("url", urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), file=out)
    print("json", json.dumps({"key": value}), file=out)
    print("basic", base64.b64encode(b"deploy:" + raw).decode(), file=out)
    out.flush()
if os.environ["RECONCILER_USER"] == "u2":
    print(f"error: login rejected for key {value}", file=sys.stderr)
    sys.exit(3)
'''


def assert_clean(name: str, text: str) -> None:
    assert_no_form_of(SECRET, name, text)


@pytest.fixture
def target() -> Target:
    with Target(token=SECRET, echo=True) as server:
        server.fail_user("u2", _fault(SECRET))
        yield server


def _fault(secret: str) -> object:
    from tests.support.http_target import Fault

    return Fault(kind="status", status=400, body=json.dumps({"error": f"bad key {secret}",
                                                              "auth": f"Bearer {secret}"}).encode())


def make_repo(root: Path, url: str, on_failure: str = "force") -> Path:
    repo = root / "deploy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, ".gitignore", ".deployments/\n")
    users = [{"id": "u1"}, {"id": "u2"}]
    servers = {
        "local": {"type": "local", "path": ".deployments/local"},
        "web": {"type": "http", "url": url, "auth": {"secret": "DEPLOY_SECRET_AUTH"}, "timeout": 5, "retries": 0},
        "cmd": {"type": "command", "commands": {"APPLY-AUTO": [sys.executable, str(root / "tool.py")]},
                "timeout": 30},
    }
    for name, driver in servers.items():
        write(repo, f"servers/{name}.yaml", yaml.safe_dump({"environment": name, "organization": "org",
                                                            "driver": driver, "users": users}))
    write(repo, "definitions/app.yaml", "module_type: test/secret\ncontent: app\ncontent_tokens: [{name: greeting}]\n"
          "parameter_tokens: [{name: api_key, type: string, secret: true}]\n")
    write(repo, "definitions/app/config.json", '{"greeting": "{{ greeting }}"}\n')
    write(repo, "definitions/app/note.txt", "key={{ greeting }}\n")
    write(repo, "definitions/broken.yaml", "module_type: test/broken\ncontent: broken\n"
          "content_tokens: [{name: greeting}]\n")
    write(repo, "definitions/broken/config.json", '{"greeting": {{ greeting }}}\n')
    write(repo, "definitions/broken/config.yaml", "greeting: [{{ greeting }}\n")
    (root / "tool.py").write_text(TOOL, "utf-8")
    secret = {"secret": "DEPLOY_SECRET_KEY"}
    blocks = [{"definition": "app", "server": server, "users": "all", "content_tokens": {"greeting": secret},
               "parameter_tokens": {"api_key": secret}} for server in servers]
    blocks.append({"definition": "broken", "server": "local", "users": ["u1"],
                   "content_tokens": {"greeting": secret}})
    write(repo, "jobs/everywhere.yaml", yaml.safe_dump({"on_failure": on_failure, "blocks": blocks}))
    commit_all(repo, "a job that uses one secret everywhere")
    return repo


def test_a_secret_used_everywhere_is_shown_nowhere(tmp_path: Path, target: Target) -> None:
    repo = make_repo(tmp_path, target.url)
    outputs = {}
    result = run_main("reconcile", "--repo", str(repo), env=ENV)
    outputs["reconcile"] = result.stdout + result.stderr
    assert result.returncode == 1, outputs["reconcile"]  # u2 fails on http and command: FAILURE

    record = json.loads((repo / "status/everywhere.json").read_text("utf-8"))
    users = [{u: r["status"] for u, r in b["users"].items()} for b in record["blocks"]]
    assert users == [{"u1": "DEPLOYED", "u2": "DEPLOYED"}, {"u1": "DEPLOYED", "u2": "FAILED"},
                     {"u1": "DEPLOYED", "u2": "FAILED"}, {"u1": "FORCED"}]
    # the secret did reach its destinations, so the checks below are not vacuous
    deployed = repo / ".deployments/local/u1/app/config.json"
    assert json.loads(deployed.read_text("utf-8")) == {"greeting": SECRET}
    assert any(SECRET in d["assets"]["config.json"] for d in target.deployments.values())
    assert target.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    log = (repo / record["log"]).read_text("utf-8")
    assert "b64" in log and "basic" in log and "[REDACTED]" in log  # the tool's output is in the log, masked
    assert "broken" in json.dumps(record["blocks"][3]) and "not valid JSON" in log

    for args in (["status"], ["status", "everywhere"], ["status", "--format", "json"],
                 ["status", "everywhere", "--format", "json"], ["logs", record["build_id"]],
                 ["plan", "--format", "json"], ["validate", "--format", "json"], ["reconcile"]):
        run = run_main(*args, "--repo", str(repo), env=ENV)
        assert "Traceback" not in run.stderr
        outputs[" ".join(args)] = run.stdout + run.stderr
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "jobs/again.yaml", (repo / "jobs/everywhere.yaml").read_text("utf-8"))
    commit_all(repo, "a pull request using the secret")
    check = run_main("check", "--repo", str(repo), "--base", "main", "--head", "pr", env=ENV)
    outputs["check"] = check.stdout + check.stderr
    assert "again" in outputs["check"]

    outputs["git log -p --all"] = git(repo, "log", "-p", "--all", "--format=%H%n%B")
    for path in sorted(repo.rglob("*")):  # deployed assets hold the secret by design; their manifests must not
        if path.is_file() and ".git" not in path.parts and (
                ".deployments" not in path.parts or path.name == ".deployment.json"):
            outputs[str(path.relative_to(repo))] = path.read_text("utf-8", "replace")
    assert any(name.startswith("status/logs/") for name in outputs)
    assert ".deployments/local/u1/app/.deployment.json" in outputs
    for name, text in outputs.items():
        assert_clean(name, text)


def test_a_missing_secret_is_named_never_guessed(tmp_path: Path, target: Target) -> None:
    """Without the variable the job is not claimed (SPEC 9.1 rule 10): the problem names the variable and
    the job stays PENDING; nothing is deployed."""
    repo = make_repo(tmp_path, target.url, on_failure="skip")
    result = run_main("reconcile", "--repo", str(repo), env={"DEPLOY_SECRET_AUTH": SECRET})
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert "SECRET_UNSET" in result.stderr and "DEPLOY_SECRET_KEY" in result.stderr
    assert not (repo / "status/everywhere.json").exists()
    assert not (repo / ".deployments/local/u1/app").exists()
    assert target.deployments == {}


def test_a_tool_printing_the_secret_as_json_is_masked(tmp_path: Path) -> None:
    """Only the command driver sees this secret (no other driver registers extra forms of it): quotes,
    a backslash and non-ASCII make its JSON-escaped forms differ from the raw value."""
    secret = 'q"uo\\te-é-s3cret'
    repo = tmp_path / "deploy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    tool = ("import json, os; v = os.environ['RECONCILER_TOKEN_API_KEY']; "
            "print(json.dumps({'key': v})); print(json.dumps({'key': v}, ensure_ascii=False))")
    write(repo, "servers/cmd.yaml", yaml.safe_dump({
        "environment": "e", "organization": "o", "users": [{"id": "u1"}],
        "driver": {"type": "command", "commands": {"APPLY-AUTO": [sys.executable, "-c", tool]}}}))
    write(repo, "definitions/app.yaml", "module_type: t/x\nparameter_tokens: [{name: api_key, type: string, "
          "secret: true}]\n")
    block = {"definition": "app", "server": "cmd", "users": "all",
             "parameter_tokens": {"api_key": {"secret": "DEPLOY_SECRET_J"}}}
    write(repo, "jobs/json.yaml", yaml.safe_dump({"blocks": [block]}))
    commit_all(repo, "a tool that prints JSON")
    result = run_main("reconcile", "--repo", str(repo), env={"DEPLOY_SECRET_J": secret})
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((repo / "status/json.json").read_text("utf-8"))
    log = (repo / record["log"]).read_text("utf-8")
    assert log.count('{"key": "[REDACTED]"}') == 2, log
    texts = {"log": log, "output": result.stdout + result.stderr,
             "git": git(repo, "log", "-p", "--all", "--format=%H%n%B")}
    for name, text in texts.items():
        for form in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], secret):
            assert form not in text, f"{name} shows {form!r}"
