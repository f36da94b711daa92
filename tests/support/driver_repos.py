"""Deployment repos for the driver tests: one server per driver type, definition `app`, job helpers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.cli import MainResult, run_cli, run_main
from tests.support.repos import commit_all, git, write
from tests.support.secrets import assert_no_form_of

FAKE_TF = Path(__file__).resolve().parent / "fake_tf.py"
USERS = ("u1", "u2", "u3")
DEFINITION = """\
module_type: terraform/fake
content: app
content_tokens:
  - name: greeting
parameter_tokens:
  - name: mode
    type: string
    default: ok
  - name: api_key
    type: string
    default: none
"""
CONTENT = {
    "app/main.tf": 'resource "greeting" "this" {\n  text = "{{ greeting }}"\n}\n',
    "app/config.json": '{"greeting": "{{ greeting }}"}\n',
}
BINARY = bytes(range(256))  # app/logo.bin: not text, copied untouched (base64 over HTTP)


def server_yaml(driver: dict[str, Any], users: tuple[str, ...] = USERS) -> str:
    return yaml.safe_dump({"environment": "test-env", "organization": "test-org", "driver": driver,
                           "users": [{"id": u} for u in users]}, sort_keys=False)


def http_driver(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "url": url, "timeout": 5, "retries": 2, **extra}


def command_driver(state: Path, **extra: Any) -> dict[str, Any]:
    def argv(action: str) -> list[str]:
        return [sys.executable, str(FAKE_TF), action, "--state", str(state)]

    return {"type": "command", "commands": {"PLAN": argv("plan"), "APPLY-AUTO": argv("apply"),
                                            "DESTROY": argv("destroy")}, "timeout": 30, **extra}


def local_driver() -> dict[str, Any]:
    return {"type": "local", "path": ".deployments/srv"}


def job_yaml(action: str = "APPLY-AUTO", on_failure: str = "skip", users: Any = "all",
             greeting: Any = "hello", params: dict[str, Any] | None = None,
             user_tokens: dict[str, Any] | None = None, blocks: int = 1) -> str:
    block: dict[str, Any] = {"definition": "app", "server": "srv", "action": action, "users": users,
                             "content_tokens": {"greeting": greeting}}
    if params:
        block["parameter_tokens"] = params
    if user_tokens:
        block["user_tokens"] = user_tokens
    more = [{**block, "content_tokens": {"greeting": f"{greeting} (block {i})"}} for i in range(1, blocks)]
    return yaml.safe_dump({"on_failure": on_failure, "blocks": [block, *more]}, sort_keys=False)


def make_driver_repo(path: Path, driver: dict[str, Any], jobs: dict[str, str] | None = None,
                     content: dict[str, str] | None = None, users: tuple[str, ...] = USERS) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write(path, ".gitignore", ".deployments/\n")
    write(path, "servers/srv.yaml", server_yaml(driver, users))
    write(path, "definitions/app.yaml", DEFINITION)
    for rel, text in (content or CONTENT).items():
        write(path, f"definitions/{rel}", text)
    (path / "definitions/app/logo.bin").write_bytes(BINARY)
    for job, text in (jobs or {}).items():
        write(path, f"jobs/{job}.yaml", text)
    commit_all(path, "initial")
    return path


def add_job(repo: Path, name: str, text: str) -> None:
    write(repo, f"jobs/{name}.yaml", text)
    commit_all(repo, f"add job {name}")


def reconcile(repo: Path, *args: str, env: dict[str, str] | None = None) -> MainResult:
    """One pass in this process (the drivers' own processes and servers are real)."""
    return run_main("reconcile", "--repo", str(repo), *args, env=env)


def reconcile_in_a_process(repo: Path, *args: str, env: dict[str, str] | None = None,
                           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One pass as `python -m reconciler` (e.g. with a plugin on PYTHONPATH, found through entry points)."""
    return run_cli("reconcile", "--repo", str(repo), *args, env=env, timeout=timeout)


def record(repo: Path, job: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repo / "status" / f"{job}.json").read_text("utf-8"))
    return data


def users_of(repo: Path, job: str, block: int = 0) -> dict[str, str]:
    return {u: r["status"] for u, r in record(repo, job)["blocks"][block]["users"].items()}


def reasons_of(repo: Path, job: str, block: int = 0) -> dict[str, str]:
    return {u: r["reason"] for u, r in record(repo, job)["blocks"][block]["users"].items()}


def build_log(repo: Path, job: str) -> str:
    return (repo / record(repo, job)["log"]).read_text("utf-8")


def assert_no_secret(repo: Path, secret: str, *outputs: str) -> None:
    """Every record, log, commit (git log -p) and given output is free of the secret in any common form."""
    texts = {f"output {i}": text for i, text in enumerate(outputs)}
    texts["git log -p"] = git(repo, "log", "-p", "--all", "--format=%H %s%n%b")
    for path in sorted((repo / "status").rglob("*")):
        if path.is_file():
            texts[str(path.relative_to(repo))] = path.read_text("utf-8")
    texts["status --format json"] = run_main("status", "--repo", str(repo), "--format", "json").stdout
    assert any("status/logs/" in name for name in texts), "no build log was written"
    for name, text in texts.items():
        assert_no_form_of(secret, name, text)
