"""Schemathesis against the live server's OpenAPI document: no 500s, responses match their schemas."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import run_main
from tests.support.serve import WEBHOOK_SECRET, ServeProcess

CLI = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


def test_openapi_document_holds_under_schemathesis(example_repo: Path, serve: Callable[..., ServeProcess],
                                                   tmp_path: Path) -> None:
    assert run_main("reconcile", "--repo", str(example_repo)).returncode == 0
    server = serve(example_repo)
    before = server.get("/api/jobs").json()
    document = server.get("/openapi.json").json()
    assert {"/", "/jobs/{job}", "/builds/{build_id}", "/api/jobs", "/api/jobs/{job}", "/api/builds/{build_id}/log",
            "/metrics", "/healthz", "/webhooks/github", "/webhooks/gitlab"} == set(document["paths"])

    # Every route, all checks. The GitLab token is sent, so fuzzed bodies reach its handler (GitHub's
    # signature cannot be guessed: that route must answer 401, never 500).
    work = tmp_path / "schemathesis"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", CLI, "run", f"{server.url}openapi.json", "--checks", "all",
         "--phases", "coverage,fuzzing", "--max-examples", "15", "--generation-database", "none",
         "--request-timeout", "30", "--workers", "1", "-H", f"X-Gitlab-Token: {WEBHOOK_SECRET}"],
        cwd=work, capture_output=True, text=True, timeout=280, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "10 selected" in output
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) > 100, output[-3000:]

    assert server.get("/api/jobs").json() == before  # read-only: nothing it sent changed or ran anything
    assert not [e for e in server.events() if e["event"].startswith("pass.")]
    assert "Traceback" not in server.log.read_text("utf-8")
    assert server.stop() == 0
