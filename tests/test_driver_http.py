"""The `http` driver through the real CLI against the reference target server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_main
from tests.support.driver_repos import (
    BINARY,
    add_job,
    assert_no_secret,
    build_log,
    http_driver,
    job_yaml,
    make_driver_repo,
    reasons_of,
    reconcile,
    record,
    users_of,
)
from tests.support.http_target import Fault, Target

TOKEN = "DEPLOY_SECRET_TOKEN"
TOKEN_VALUE = "bearer-Tok3n/with+chars=&more"


@pytest.fixture
def target() -> Iterator[Target]:
    with Target(token=TOKEN_VALUE) as server:
        yield server


def repo_for(tmp_path: Path, target: Target, jobs: dict[str, str], **driver: object) -> Path:
    settings = {"auth": {"secret": TOKEN}, **driver}
    return make_driver_repo(tmp_path / "deploy", http_driver(target.url, **settings), jobs)


def run(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = reconcile(repo, *args, env={TOKEN: TOKEN_VALUE, **(env or {})})
    return result.returncode, result.stdout + result.stderr


def test_apply_plan_destroy_round_trip(tmp_path: Path, target: Target) -> None:
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(greeting="hi there", params={"api_key": "k1"})})
    code, out = run(repo)
    assert code == 0, out
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED", "u2": "DEPLOYED", "u3": "DEPLOYED"}
    build = record(repo, "deploy")["build_id"]
    stored = target.deployments[("u2", "app")]
    assert stored["assets"]["config.json"] == '{"greeting": "hi there"}\n'
    assert base64.b64decode(stored["binary_assets"]["logo.bin"]) == BINARY
    assert stored["parameters"] == {"mode": "ok", "api_key": "k1"}
    assert stored["build_id"] == build and stored["user"] == "u2"
    assert stored["content_digest"].startswith("sha256:")
    puts = [r for r in target.requests if r.method == "PUT"]
    keys = sorted(r.headers["Idempotency-Key"] for r in puts)
    assert [k.rsplit(":", 1)[0] for k in keys] == [f"{build}:{u}" for u in ("u1", "u2", "u3")]
    assert len(set(keys)) == 3
    assert {r.headers["Authorization"] for r in puts} == {f"Bearer {TOKEN_VALUE}"}
    assert "-> 201 Created" in build_log(repo, "deploy")

    add_job(repo, "again", job_yaml(greeting="hi there", params={"api_key": "k1"}))  # same content
    assert run(repo)[0] == 0
    assert users_of(repo, "again") == {"u1": "UNCHANGED", "u2": "UNCHANGED", "u3": "UNCHANGED"}
    assert target.applies == 3

    before = target.methods()
    add_job(repo, "preview", job_yaml(action="PLAN", greeting="changed", users=["u1"]))
    assert run(repo)[0] == 0
    assert users_of(repo, "preview") == {"u1": "PLANNED"}
    reason = "0 to add, 2 to change, 0 to remove, parameters change (api_key)"
    assert reasons_of(repo, "preview")["u1"] == reason
    after = target.methods()
    assert after["GET"] - before["GET"] == 1 and after["PUT"] == before["PUT"], "PLAN must only read"
    assert "plan u1: would change config.json" in build_log(repo, "preview")

    add_job(repo, "remove", job_yaml(action="DESTROY", users=["u1"]))
    assert run(repo)[0] == 0
    assert users_of(repo, "remove") == {"u1": "DESTROYED"}
    assert ("u1", "app") not in target.deployments and ("u2", "app") in target.deployments
    add_job(repo, "remove-again", job_yaml(action="DESTROY", users=["u1"]))
    assert run(repo)[0] == 0
    assert users_of(repo, "remove-again") == {"u1": "UNCHANGED"}
    assert reasons_of(repo, "remove-again")["u1"] == "nothing was deployed"

    add_job(repo, "preview-new", job_yaml(action="PLAN", users=["u1"]))  # nothing deployed: all to add
    assert run(repo)[0] == 0
    assert reasons_of(repo, "preview-new")["u1"] == "3 to add, 0 to change, 0 to remove"


def test_500_then_success_is_retried(tmp_path: Path, target: Target) -> None:
    target.fail(500, times=2)
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(users=["u1"])})
    code, out = run(repo)
    assert code == 0, out
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED"}
    assert target.count("PUT") == 3
    log = build_log(repo, "deploy")
    assert "-> 500 Internal Server Error" in log and "retry 2 of 2" in log


def test_500_exhausts_retries_and_fails(tmp_path: Path, target: Target) -> None:
    target.fail(503, times=100)
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(users=["u1"])}, retries=1)
    code, _ = run(repo)
    assert code == 1
    assert users_of(repo, "deploy") == {"u1": "FAILED"}
    assert "HTTP 503 Service Unavailable (after 2 attempts)" in reasons_of(repo, "deploy")["u1"]
    assert target.count("PUT") == 2
    assert record(repo, "deploy")["status"] == "FAILURE"


def test_429_honours_retry_after(tmp_path: Path, target: Target) -> None:
    target.fail(429, times=1, retry_after="1")
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(users=["u1"])})
    assert run(repo)[0] == 0
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED"}
    first, second = (r for r in target.requests if r.method == "PUT")
    assert second.at - first.at >= 0.95
    assert "retry 1 of 2 in 1.0 s" in build_log(repo, "deploy")


def test_401_is_not_retried(tmp_path: Path, target: Target) -> None:
    repo = repo_for(tmp_path, target, {"deploy": job_yaml()}, retries=5)
    code, out = run(repo, env={TOKEN: "wrong-token-value"})
    assert code == 1, out
    assert users_of(repo, "deploy") == {"u1": "FAILED", "u2": "FAILED", "u3": "FAILED"}
    assert reasons_of(repo, "deploy")["u1"] == "PUT refused by the target: HTTP 401 Unauthorized"
    assert target.count("PUT") == 3, "a 4xx other than 429 must not be retried"
    assert not target.deployments


def test_timeout_fails_after_retries(tmp_path: Path, target: Target) -> None:
    target.slow(3.0, times=2)
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(users=["u1"])}, timeout=0.5, retries=1)
    started = time.monotonic()
    code, _ = run(repo)
    assert code == 1
    assert time.monotonic() - started < 20
    assert users_of(repo, "deploy") == {"u1": "FAILED"}
    assert "timed out after 0.5 s (after 2 attempts)" in reasons_of(repo, "deploy")["u1"]
    assert target.count("PUT") == 2


def test_dropped_connection_is_retried(tmp_path: Path, target: Target) -> None:
    target.drop(times=1)
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(users=["u1"])})
    assert run(repo)[0] == 0
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED"}
    assert target.count("PUT") == 2
    assert "connection dropped by the target" in build_log(repo, "deploy")


def test_dropped_every_time_fails(tmp_path: Path, target: Target) -> None:
    target.fail_user("u2", Fault("drop"))
    repo = repo_for(tmp_path, target, {"deploy": job_yaml()}, retries=1)
    assert run(repo)[0] == 1
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED", "u2": "FAILED", "u3": "DEPLOYED"}
    assert "connection dropped by the target (after 2 attempts)" in reasons_of(repo, "deploy")["u2"]


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repo = make_driver_repo(tmp_path / "deploy", http_driver(f"http://127.0.0.1:{port}", retries=1),
                            {"deploy": job_yaml(users=["u1"])})
    assert reconcile(repo).returncode == 1
    assert "connection refused (after 2 attempts)" in reasons_of(repo, "deploy")["u1"]


def test_missing_auth_secret_claims_nothing_and_sends_nothing(tmp_path: Path, target: Target) -> None:
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(users=["u1"])})
    result = reconcile(repo)  # DEPLOY_SECRET_TOKEN not in the environment
    assert result.returncode == 1
    assert "SECRET_UNSET" in result.stderr and TOKEN in result.stderr
    assert not (repo / "status").exists()
    assert target.count() == 0


def test_settings_are_validated(tmp_path: Path, target: Target) -> None:
    repo = make_driver_repo(tmp_path / "deploy", http_driver("http://user:pw@127.0.0.1:9/x?a=1",
                                                             auth={"secret": "AWS_TOKEN"}))
    result = run_main("validate", "--repo", str(repo), "--format", "json")
    assert result.returncode == 1
    problems = {(p["code"], p["path"]) for p in json.loads(result.stdout)["problems"]}
    assert problems == {("SECRET_PREFIX", "servers/srv.yaml"), ("SECRET_REQUIRED", "servers/srv.yaml"),
                        ("DRIVER_SETTINGS", "servers/srv.yaml")}


def test_secret_never_leaks_even_when_the_target_echoes_it(tmp_path: Path) -> None:
    secret = "Xq9-S3cr3t/Val+ue=&zz"
    env = {TOKEN: TOKEN_VALUE, "DEPLOY_SECRET_DB": secret}
    with Target(token=TOKEN_VALUE, echo=True) as echoing:
        params = {"api_key": {"secret": "DEPLOY_SECRET_DB"}}
        repo = repo_for(tmp_path, echoing, {"deploy": job_yaml(greeting={"secret": "DEPLOY_SECRET_DB"},
                                                               params=params)})
        result = reconcile(repo, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        stored = echoing.deployments[("u1", "app")]
        assert stored["parameters"]["api_key"] == secret  # the target does get it
        assert stored["assets"]["config.json"] == json.dumps({"greeting": secret}) + "\n"
        echoing.fail(500, times=1, body=json.dumps({"error": f"bad key {secret}"}))
        preview = job_yaml(action="PLAN", greeting={"secret": "DEPLOY_SECRET_DB"}, params=params)
        add_job(repo, "preview", preview)
        planned = reconcile(repo, env=env)
    log = build_log(repo, "deploy")
    assert "[REDACTED]" in log and '"echo"' in log  # the echo was logged, masked
    logs = run_main("logs", "--repo", str(repo), record(repo, "deploy")["build_id"])
    for secret_value in (secret, TOKEN_VALUE):
        assert_no_secret(repo, secret_value, result.stdout, result.stderr, planned.stdout, planned.stderr,
                         logs.stdout, logs.stderr)


def test_shell_metacharacters_stay_text(tmp_path: Path, target: Target) -> None:
    canary = tmp_path / "pwned"
    nasty = f"$(touch {canary}); rm -rf / `touch {canary}` | tee {canary} && echo > {canary}"
    repo = repo_for(tmp_path, target, {"deploy": job_yaml(greeting=nasty, users=["u1"],
                                                          params={"api_key": nasty, "mode": "; ls"})})
    assert run(repo)[0] == 0
    stored = target.deployments[("u1", "app")]
    assert stored["assets"]["config.json"] == json.dumps({"greeting": nasty}) + "\n"
    assert stored["parameters"] == {"api_key": nasty, "mode": "; ls"}
    assert not canary.exists()
