"""Real git repositories in temp dirs: git with a fixed identity, files, commits, the standard test repo."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout under test
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Human", "GIT_AUTHOR_EMAIL": "human@example.com",
    "GIT_COMMITTER_NAME": "Test Human", "GIT_COMMITTER_EMAIL": "human@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

# The standard repo (`make_repo`): server `srv` with users u1..u3 on the local driver at .deployments/srv,
# definition `app` with content token `greeting` and parameter token `level` (default 1), file config.json.
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
CONTENT = '{"greeting": "{{ greeting }}"}\n'
# A one-block job of `app` on `srv`; `%s` is the greeting (the daemon tests push one job per name).
GREETING_JOB = """\
blocks:
  - definition: app
    server: srv
    users: all
    content_tokens: {greeting: "%s"}
"""

# A job of `app` on `srv` for every user; one whose rendered content breaks for u2 (a quote in JSON).
OK_JOB = "blocks:\n  - {definition: app, server: srv, users: all, content_tokens: {greeting: hi}}\n"
BROKEN_FOR_U2 = """\
blocks:
  - definition: app
    server: srv
    users: [u1, u2]
    content_tokens: {greeting: hi}
    user_tokens:
      u2: {content_tokens: {greeting: 'say "hi"'}}
"""


def flow_job(users: str = "[u1]", greeting: str = "hi") -> str:
    """A one-block job of `app` on `srv` in one line of flow style, e.g. for `users` "[u1, u2]" or "all"."""
    return f"blocks:\n  - {{definition: app, server: srv, users: {users}, content_tokens: {{greeting: {greeting}}}}}\n"


def git(repo: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def write(repo: Path, rel: str, text: str) -> Path:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def commit_all(repo: Path, message: str = "change") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def new_repo(repo: Path, jobs: dict[str, str] | None = None, content: str | None = None) -> Path:
    """The standard repo at `repo` (see SERVER and DEFINITION), with `jobs`, committed on main."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, ".gitignore", ".deployments/\n")
    write(repo, "servers/srv.yaml", SERVER.format(name="srv"))
    write(repo, "definitions/app.yaml", DEFINITION.format(name="app"))
    write(repo, "definitions/app/config.json", content or CONTENT)
    for job, text in (jobs or {}).items():
        write(repo, f"jobs/{job}.yaml", text)
    commit_all(repo, "initial")
    return repo


def committed_record(repo: Path, job: str, ref: str = "main") -> dict[str, Any] | None:
    """The ledger record of `job` committed on `ref` (a clone or a bare repository), None when there is none."""
    proc = subprocess.run(["git", "show", f"{ref}:status/{job}.json"], cwd=repo, capture_output=True, text=True,
                          check=False)
    data: dict[str, Any] | None = json.loads(proc.stdout) if proc.returncode == 0 else None
    return data


def wait_for(condition: Callable[[], object], timeout: float = 90, what: str | Callable[[], str] = "it",
             alive: Callable[[], None] | None = None) -> None:
    """Poll `condition` until it holds (a deadline, never a fixed sleep); `alive` may fail early (a daemon
    that died); `what` names what was awaited, or gives the state to show when the deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None:
            alive()
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.05)
