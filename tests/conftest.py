"""Shared fixtures: real git repositories in temp dirs and the real `reconciler` CLI in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Human", "GIT_AUTHOR_EMAIL": "human@example.com",
    "GIT_COMMITTER_NAME": "Test Human", "GIT_COMMITTER_EMAIL": "human@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m reconciler ARGS` as a real subprocess (stdout is a pipe, not a terminal)."""
    full_env = {**os.environ, **GIT_ENV, **(env or {})}
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input, check=False)


def write(repo: Path, rel: str, text: str) -> Path:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def commit_all(repo: Path, message: str = "change") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A fresh `reconciler init` repo (the bundled example, committed on main)."""
    repo = tmp_path / "deploy"
    result = run_cli("init", str(repo))
    assert result.returncode == 0, result.stderr
    return repo


SERVER = """\
environment: test
organization: test-org
driver:
  type: local
  path: .deployments/{name}
users:
  - id: u1
  - id: u2
  - id: u3
"""
DEFINITION = """\
module_type: test/content
content: {name}
content_tokens:
  - name: greeting
parameter_tokens:
  - name: level
    type: integer
    default: 1
"""


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """A minimal repo: server `srv` (users u1..u3, local driver), definition `app` with `greeting`."""

    def factory(name: str = "repo", jobs: dict[str, str] | None = None, content: str | None = None) -> Path:
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        write(repo, ".gitignore", ".deployments/\n")
        write(repo, "servers/srv.yaml", SERVER.format(name="srv"))
        write(repo, "definitions/app.yaml", DEFINITION.format(name="app"))
        write(repo, "definitions/app/config.json", content or '{"greeting": "{{ greeting }}"}\n')
        for job, text in (jobs or {}).items():
            write(repo, f"jobs/{job}.yaml", text)
        commit_all(repo, "initial")
        return repo

    return factory


# --- `reconciler serve` as a real subprocess on 127.0.0.1 (tests/test_web_*.py) ---------------------------
WEBHOOK_SECRET = "test-webhook-secret"


class ServeProcess:
    """A running `reconciler serve --port 0`; its structured stderr goes to a file (never a full pipe)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def get(self, path: str, **kwargs: object) -> Any:
        import httpx

        return httpx.get(self.url + path.lstrip("/"), timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> Any:
        import httpx

        return httpx.post(self.url + path.lstrip("/"), timeout=30, **kwargs)  # type: ignore[arg-type]

    def events(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.log.read_text("utf-8").splitlines() if line.startswith("{")]

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """start(repo, *flags, secret=WEBHOOK_SECRET) -> ServeProcess; stopped (SIGTERM) after the test."""
    started: list[ServeProcess] = []

    def start(repo: Path, *flags: str, secret: str | None = WEBHOOK_SECRET) -> ServeProcess:
        import json
        import time

        log = tmp_path / f"serve-{len(started)}.log"
        env = {**os.environ, **GIT_ENV}
        env.pop("RECONCILER_WEBHOOK_SECRET", None)
        if secret is not None:
            env["RECONCILER_WEBHOOK_SECRET"] = secret
        with log.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "reconciler", "serve", "--repo", str(repo),
                                     "--port", "0", *flags], stdout=sink, stderr=sink, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in log.read_text("utf-8").splitlines():
                if '"serve.started"' in line:
                    server = ServeProcess(proc, json.loads(line)["url"], log)
                    started.append(server)
                    return server
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {log.read_text('utf-8')}")
            time.sleep(0.05)
        proc.kill()
        raise AssertionError(f"serve did not start: {log.read_text('utf-8')}")

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()


def github_signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    import hashlib
    import hmac

    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
