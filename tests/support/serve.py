"""`reconciler serve` as a real subprocess on 127.0.0.1 (tests/test_web_*.py), and GitHub's signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.repos import GIT_ENV

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
        return [json.loads(line) for line in self.log.read_text("utf-8").splitlines() if line.startswith("{")]

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def start_serve(repo: Path, log: Path, *flags: str, secret: str | None = WEBHOOK_SECRET) -> ServeProcess:
    """Start `reconciler serve --repo REPO --port 0 FLAGS` and wait for its `serve.started` line."""
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
                return ServeProcess(proc, json.loads(line)["url"], log)
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {log.read_text('utf-8')}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"serve did not start: {log.read_text('utf-8')}")


def github_signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
