"""SPEC 9.1 rule 11, redaction is total: every form, whole before cut, multi-line, and no leftovers.

The unit tests attack the redactor directly; the end-to-end tests make real tools and a real HTTP target
print secrets the way careless software does (at a truncation boundary, line by line, escaped) and
kill a real pass mid-user to leave rendered content behind.
"""

from __future__ import annotations

import base64
import html
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import yaml

from tests.support.cli import run_main
from tests.support.http_target import Target
from tests.support.repos import GIT_ENV, commit_all, git, write

SECRET = "Zq8/sEcr3t+v4lue=&<x>'q\"end"
MULTI = "-----BEGIN KEY-----\nMIIEfirstLineOfTheKey0123\nsecondLineOfTheKey4567==\n-----END KEY-----"


def redactor(*secrets: str):  # type: ignore[no-untyped-def]
    from reconciler.core.redact import Redactor

    r = Redactor()
    for s in secrets:
        r.add(s)
    return r


def escaped_forms(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "raw": secret,
        "json": json.dumps(secret)[1:-1],
        "json-slash": json.dumps(secret)[1:-1].replace("/", "\\/"),
        "json-utf8-slash": json.dumps(secret, ensure_ascii=False)[1:-1].replace("/", "\\/"),
        "url": urllib.parse.quote(secret, safe=""),
        "url-keep-slash": urllib.parse.quote(secret),
        "url-plus": urllib.parse.quote_plus(secret),
        "base64": base64.b64encode(raw).decode(),
        "base64url-unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "html": html.escape(secret),
        "html-no-quotes": html.escape(secret, quote=False),
        "html-numeric-apos": html.escape(secret).replace("&#x27;", "&#39;"),
        "html-apos-entity": html.escape(secret).replace("&#x27;", "&apos;"),
    }


def test_every_escaped_form_is_masked() -> None:
    r = redactor(SECRET)
    for kind, form in escaped_forms(SECRET).items():
        text = f"before {form} after"
        assert form not in r(text), kind
        assert r(text).startswith("before ") and r(text).endswith(" after"), kind


def test_base64_inside_longer_text_is_masked() -> None:
    r = redactor(SECRET)
    for prefix in (b"", b"d", b"de", b"deploy:"):
        encoded = base64.b64encode(prefix + SECRET.encode()).decode()
        masked = r(f"Authorization: Basic {encoded}")
        assert encoded not in masked and "[REDACTED]" in masked


def test_a_multi_line_secret_is_masked_whole_and_line_by_line() -> None:
    r = redactor(MULTI)
    assert MULTI not in r(f"key:\n{MULTI}\nend")
    assert r(f"key:\n{MULTI}\nend") == "key:\n[REDACTED]\nend"
    for line in MULTI.splitlines():  # a tool printing it a line at a time, each line logged on its own
        masked = r(f"u1 stdout: {line}")
        assert line not in masked, line
    assert json.dumps(MULTI)[1:-1] not in r(json.dumps({"key": MULTI}))
    # CRLF line endings
    assert "MIIEfirstLineOfTheKey0123" not in r(MULTI.replace("\n", "\r\n"))


def test_masking_happens_before_the_cut_and_leaves_no_prefix() -> None:
    r = redactor(SECRET)
    for at in range(1, len(SECRET)):
        text = "x" * (100 - at) + SECRET + " and more text" + "y" * 100
        clipped = r.clip(text, 100)
        assert SECRET[:at] not in clipped, at
        assert clipped.endswith("...")
    partial = "x" * 90 + SECRET[:10]  # the source was already cut inside the secret
    assert SECRET[:10] not in r.clip(partial + "y" * 50, 100)
    assert r.clip("short text", 100) == "short text"


def test_a_short_secret_that_reaches_the_redactor_is_still_masked() -> None:
    """Rule 10 refuses values under 8 characters before claims; one that gets here anyway is masked."""
    r = redactor("pw")
    assert "pw" not in r("login pw ok")


# ------------------------------------------------------------------------------- end to end
TOOL = '''\
import html, json, os, sys
secret = os.environ["RECONCILER_TOKEN_KEY"]
multi = os.environ["RECONCILER_TOKEN_CERT"]
for line in multi.splitlines():
    print(line, flush=True)
print(json.dumps({"key": secret}).replace("/", "\\\\/"), flush=True)
print(html.escape(secret), flush=True)
# the last stderr line: the secret straddles the 300-character tail kept in the reason
print("E" * (300 - 6) + secret + " rejected", file=sys.stderr, flush=True)
sys.exit(2)
'''


def command_repo(tmp_path: Path, tool: str, *, sleep_tool: bool = False) -> Path:
    repo = tmp_path / "deploy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (tmp_path / "tool.py").write_text(tool, "utf-8")
    write(repo, "servers/cmd.yaml", yaml.safe_dump({
        "environment": "e", "organization": "o", "users": [{"id": "u1"}],
        "driver": {"type": "command", "commands": {"APPLY-AUTO": [sys.executable, str(tmp_path / "tool.py")]},
                   "timeout": 60}}))
    write(repo, "definitions/app.yaml", "module_type: t/x\ncontent: app\ncontent_tokens: [{name: cert}]\n"
          "parameter_tokens: [{name: key, type: string, secret: true}]\n")
    write(repo, "definitions/app/cert.pem", "{{ cert }}\n")
    block = {"definition": "app", "server": "cmd", "users": "all",
             "content_tokens": {"cert": {"secret": "DEPLOY_SECRET_CERT"}},
             "parameter_tokens": {"key": {"secret": "DEPLOY_SECRET_KEY"}}}
    write(repo, "jobs/j.yaml", yaml.safe_dump({"blocks": [block]}))
    commit_all(repo, "a command job")
    return repo


ENV = {"DEPLOY_SECRET_KEY": SECRET, "DEPLOY_SECRET_CERT": MULTI}


def test_a_tool_printing_secrets_carelessly_leaks_nothing(tmp_path: Path) -> None:
    repo = command_repo(tmp_path, TOOL)
    result = run_main("reconcile", "--repo", str(repo), env=ENV)
    assert result.returncode == 1, result.stdout + result.stderr
    record = json.loads((repo / "status/j.json").read_text("utf-8"))
    reason = record["blocks"][0]["users"]["u1"]["reason"]
    assert reason.startswith("python") or "exited with code 2" in reason
    log = (repo / record["log"]).read_text("utf-8")
    assert "[REDACTED]" in log and "EEEE" in log  # the tool's output reached the log
    texts = {"reason": reason, "log": log, "output": result.stdout + result.stderr,
             "git": git(repo, "log", "-p", "--all", "--format=%H%n%B")}
    for name, text in texts.items():
        for kind, form in escaped_forms(SECRET).items():
            assert form not in text, f"{name} shows {kind}"
        assert SECRET[:6] not in text, f"{name} shows the start of the secret"
        for line in MULTI.splitlines():
            if len(line) >= 8:
                assert line not in text, f"{name} shows a line of the multi-line secret"


def test_http_response_body_is_masked_before_it_is_cut(tmp_path: Path) -> None:
    from tests.support.driver_repos import http_driver, job_yaml, make_driver_repo

    body = "B" * (2000 - 7) + SECRET + " was rejected"
    with Target() as target:
        target.fail(status=400, body=body)
        repo = make_driver_repo(tmp_path / "deploy", http_driver(target.url, retries=0),
                                {"deploy": job_yaml(users=["u1"],
                                                    params={"api_key": {"secret": "DEPLOY_SECRET_KEY"}})})
        result = run_main("reconcile", "--repo", str(repo), env={"DEPLOY_SECRET_KEY": SECRET})
    assert result.returncode == 1, result.stdout + result.stderr
    record = json.loads((repo / "status/deploy.json").read_text("utf-8"))
    log = (repo / record["log"]).read_text("utf-8")
    assert "BBBB" in log  # the body was logged
    assert SECRET[:5] not in log, "the log keeps the start of the secret at the cut"


def test_rendered_content_left_by_a_killed_pass_is_removed_by_the_next(tmp_path: Path) -> None:
    marker = tmp_path / "running"
    tool = f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(60)\n"
    repo = command_repo(tmp_path, tool)
    env = {**os.environ, **GIT_ENV, **ENV}
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "reconcile", "--repo", str(repo)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the tool never started"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    work = repo / ".git/reconciler/work"
    left = [p for p in work.rglob("cert.pem")]
    assert left and "MIIEfirstLineOfTheKey0123" in left[0].read_text("utf-8")  # the kill left it behind
    result = run_main("reconcile", "--repo", str(repo), env=ENV)
    assert "Traceback" not in result.stderr
    assert not list(work.rglob("*")), "rendered content survived the next pass"
