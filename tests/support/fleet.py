"""Fleet-mode test plumbing: a real `redis-server` on a free 127.0.0.1 port (AOF, fsync always) in a temp
folder, real `reconciler worker` processes, and deployment repos pushed to a real bare remote whose command
driver writes one line per effect, so every effect can be counted."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.repos import GIT_ENV, commit_all, git, write

EFFECT = Path(__file__).resolve().parent / "fleet_effect.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition", every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class RedisServer:
    """`redis-server` with its data (the AOF) in `folder`; stop() and start() again keep the data."""

    def __init__(self, folder: Path, port: int | None = None, fsync: str = "always") -> None:
        if shutil.which("redis-server") is None:
            raise AssertionError("redis-server is not installed (apt-get install redis-server)")
        self.folder = folder
        self.port = port or free_port()
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                 "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "", "--daemonize", "no",
                 "--maxmemory-policy", "noeviction", "--protected-mode", "yes"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_for(self.ping, 30, "redis-server to answer")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=10)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text("utf-8", "replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def kill(self) -> None:
        """SIGKILL, as a crashed host would: the process and its thread pool die at once."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


class Fleet:
    """Starts `reconciler worker` processes against one broker; stops them all at the end."""

    def __init__(self, folder: Path, broker: str) -> None:
        self.folder, self.broker = folder, broker
        self.workers: list[Worker] = []

    def start(self, *flags: str, env: dict[str, str] | None = None, concurrency: int = 2,
              visibility_timeout: int = 5, heartbeat_ttl: float = 2.0, wait: bool = True) -> Worker:
        index = len(self.workers)
        log = self.folder / f"worker-{index}.log"
        full_env = {**os.environ, **GIT_ENV, **(env or {})}
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "worker", "--broker", self.broker,
                 "--concurrency", str(concurrency), "--state-dir", str(self.folder / f"state-{index}"),
                 "--visibility-timeout", str(visibility_timeout), "--heartbeat-ttl", str(heartbeat_ttl),
                 "--name", f"w{index}", *flags],
                stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, env=full_env)
        worker = Worker(proc, log)
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout: float = 90) -> None:
        def ready() -> bool:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker exited {worker.proc.returncode}: {worker.log.read_text()[-3000:]}")
            return any(e.get("event") == "worker.ready" for e in worker.events())

        wait_for(ready, timeout, "the worker to start consuming")

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.stop()


@contextlib.contextmanager
def running_fleet(folder: Path, broker: str) -> Iterator[Fleet]:
    fleet = Fleet(folder, broker)
    try:
        yield fleet
    finally:
        fleet.stop_all()


# -- deployment repos whose effects can be counted -----------------------------------------------------

DEFINITION = """\
module_type: test/fleet
content: app
content_tokens:
  - name: greeting
parameter_tokens:
  - name: api_key
    type: string
    default: none
"""


def effect_driver(effects: Path, seconds: float = 0.0) -> dict[str, Any]:
    argv = [sys.executable, str(EFFECT), str(effects), str(seconds)]
    return {"type": "command", "commands": {"PLAN": argv, "APPLY-AUTO": argv, "DESTROY": argv}, "timeout": 120}


def server_yaml(driver: dict[str, Any], users: list[str]) -> str:
    return yaml.safe_dump({"environment": "fleet-env", "organization": "fleet-org", "driver": driver,
                           "users": [{"id": u} for u in users]}, sort_keys=False)


def job_yaml(blocks: list[dict[str, Any]], on_failure: str = "skip") -> str:
    return yaml.safe_dump({"on_failure": on_failure, "blocks": blocks}, sort_keys=False)


def block(server: str, greeting: Any = "hello", **extra: Any) -> dict[str, Any]:
    return {"definition": "app", "server": server, "users": "all", "content_tokens": {"greeting": greeting},
            **extra}


def fleet_repo(root: Path, servers: dict[str, tuple[dict[str, Any], list[str]]],
               jobs: dict[str, str] | None = None, settings: str | None = None) -> tuple[Path, Path]:
    """A clone at root/deploy pushed to a bare remote root/remote.git (workers fetch from the remote)."""
    remote = root / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    repo = root / "deploy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, ".gitignore", ".deployments/\n")
    for name, (driver, users) in servers.items():
        write(repo, f"servers/{name}.yaml", server_yaml(driver, users))
    write(repo, "definitions/app.yaml", DEFINITION)
    write(repo, "definitions/app/config.json", '{"greeting": "{{ greeting }}"}\n')
    for job, text in (jobs or {}).items():
        write(repo, f"jobs/{job}.yaml", text)
    if settings is not None:
        write(repo, "reconciler.yaml", settings)
    commit_all(repo, "initial")
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "-u", "origin", "main")
    return repo, remote


def effects(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def effect_counts(path: Path, kind: str = "effect") -> Counter[tuple[str, str]]:
    """(build id, user) -> how many times the command's effect happened."""
    return Counter((e["build"], e["user"]) for e in effects(path) if e["kind"] == kind)
