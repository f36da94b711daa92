"""`reconciler serve`: the JSON API and pages against a real server process and a real git repo."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.cli import run_main
from tests.support.repos import commit_all, flow_job, write
from tests.support.serve import ServeProcess

HEADERS = ("Build ID", "Job", "Environment", "Organization", "Module Type", "Module Name", "Action", "Status",
           "Created", "Last Run")


def status_json(repo: Path, *job: str) -> Any:
    result = run_main("status", *job, "--repo", str(repo), "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def reconciled(repo: Path) -> None:
    result = run_main("reconcile", "--repo", str(repo))
    assert result.returncode in (0, 1), result.stderr


def block_rows(jobs: list[dict[str, Any]], **want: str) -> int:
    """How many table rows (one per job block) match the filters."""
    count = 0
    for job in jobs:
        for block in job["blocks"] or [{}]:
            if want.get("status", job["status"]) == job["status"] and all(
                    block.get(k) == v for k, v in want.items() if k != "status"):
                count += 1
    return count


def test_api_is_exactly_status_json_and_logs(example_repo: Path, serve: Callable[..., ServeProcess]) -> None:
    reconciled(example_repo)
    server = serve(example_repo)
    expected = status_json(example_repo)
    assert {row["status"] for row in expected} >= {"SUCCESS", "SCHEDULED", "SUSPENDED"}

    api = server.get("/api/jobs")
    assert api.status_code == 200
    assert api.headers["content-type"] == "application/json"
    assert api.json() == expected
    for row in expected:
        detail = server.get(f"/api/jobs/{row['job']}")
        assert detail.status_code == 200
        assert detail.json() == status_json(example_repo, row["job"])
        if row["build_id"]:
            log = server.get(f"/api/builds/{row['build_id']}/log")
            assert log.status_code == 200
            assert log.headers["content-type"].startswith("text/plain")
            assert log.text == run_main("logs", row["build_id"], "--repo", str(example_repo)).stdout
            assert f"as build {row['build_id']}" in log.text
    assert server.get("/api/jobs/no-such-job").status_code == 404
    assert server.get("/api/builds/20260101T000000Z-no-such-job-abcdef/log").status_code == 404
    assert server.get("/api/builds/not-a-build/log").status_code == 404

    health = server.get("/healthz").json()
    assert health["status"] == "ok" and health["branch"] == "main" and health["webhooks_enabled"] is True
    assert re.fullmatch(r"[0-9a-f]{40}", health["tip"])
    assert server.stop() == 0
    assert [e["event"] for e in server.events()][-2:] == ["serve.stopping", "serve.stopped"]


def test_a_new_commit_is_seen_without_restart(make_repo: Callable[..., Path],
                                              serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo()
    server = serve(repo)
    assert server.get("/api/jobs").json() == []
    write(repo, "jobs/later.yaml", flow_job("[u1]"))
    commit_all(repo, "add a job")
    rows = server.get("/api/jobs").json()
    assert [(r["job"], r["status"]) for r in rows] == [("later", "PENDING")]
    passes = server.get("/healthz").json()["passes"]
    assert passes == {"running": False, "queued": False, "last_outcome": None, "last_finished_at": None}


def test_pages_rows_filters_links_and_404s(example_repo: Path, serve: Callable[..., ServeProcess]) -> None:
    reconciled(example_repo)
    server = serve(example_repo)
    jobs = status_json(example_repo)
    page = server.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert re.findall(r"<th>([^<]+)</th>", html) == list(HEADERS)
    assert html.count("<tr data-job=") == block_rows(jobs) == 5  # one row per job block
    assert "REFRESH" in html and 'name="viewport"' in html
    for job in jobs:
        assert f'href="/jobs/{job["job"]}"' in html
        if job["build_id"]:
            assert f'<a href="/builds/{job["build_id"]}">{job["build_id"]}</a>' in html

    for params in ({"status": "SUCCESS"}, {"environment": "staging"}, {"organization": "acme-europe"},
                   {"status": "SUCCESS", "environment": "production"}, {"status": "FAILURE"}):
        filtered = server.get("/", params=params).text
        assert filtered.count("<tr data-job=") == block_rows(jobs, **params), params
    assert block_rows(jobs, status="SUCCESS") == 3 and block_rows(jobs, status="FAILURE") == 0

    done = next(j for j in jobs if j["job"] == "2026-11-01-sales-dashboard-rollout")
    job_page = server.get(f"/jobs/{done['job']}").text
    assert "Sales dashboard rollout, Q4" in job_page
    assert re.search(r'data-label="User">alice</td><td data-label="Result" class="u-deployed">DEPLOYED</td>',
                     job_page)
    assert "Alice&#39;s sales board" in job_page  # the YAML as committed, escaped
    assert f'href="/builds/{done["build_id"]}"' in job_page

    build_page = server.get(f"/builds/{done['build_id']}").text
    assert f"as build {done['build_id']}" in build_page and "<pre id=\"log\">" in build_page
    pending = server.get("/jobs/draft-retire-staging-dashboard").text
    assert "SUSPENDED" in pending and "Not run yet; would deploy to: dave" in pending

    for missing in ("/jobs/no-such-job", "/builds/no-such", "/builds/20260101T000000Z-no-such-job-abcdef"):
        answer = server.get(missing)
        assert answer.status_code == 404 and "Not found" in answer.text, missing
    assert server.get("/nowhere", headers={"accept": "text/html"}).status_code == 404
    for path in ("/", f"/jobs/{done['job']}", f"/builds/{done['build_id']}", "/jobs/nope"):
        text = server.get(path).text
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), f"external asset on {path}"


HOSTILE = """\
# </pre><script>alert("comment")</script>
description: "<script>alert('description')</script> & <b>bold</b>"
blocks:
  - definition: app
    server: srv
    users: [u1]
    content_tokens: {greeting: "<img src=x onerror=alert(1)>"}
"""


def test_html_in_jobs_renders_as_text(make_repo: Callable[..., Path],
                                      serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo(jobs={"hostile": HOSTILE, "broken": "description: <i>broken</i>\nblocks: 5\n"})
    reconciled(repo)
    server = serve(repo)
    jobs = {j["job"]: j for j in server.get("/api/jobs").json()}
    assert jobs["hostile"]["status"] == "SUCCESS" and jobs["broken"]["status"] == "INVALID"
    assert jobs["hostile"]["description"].startswith("<script>alert('description')")  # JSON keeps the text
    paths = ("/", "/jobs/hostile", "/jobs/broken", f"/builds/{jobs['hostile']['build_id']}")
    pages = [server.get(path).text for path in paths]
    for text in pages:
        for raw in ("<script>alert", "<img src=x", "<b>bold", "<i>broken"):
            assert raw not in text
    assert "&lt;script&gt;alert(&#39;description&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold" in pages[1]
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#34;comment&#34;)" in pages[1]  # the YAML comment, escaped
    assert "&lt;i&gt;broken&lt;/i&gt;" in pages[2]
    assert "\\u003cscript\\u003e" in pages[0]  # the jobs page's embedded JSON for REFRESH


def test_invalid_job_files_keep_the_api_shape(make_repo: Callable[..., Path],
                                              serve: Callable[..., ServeProcess]) -> None:
    weird = "description: [1, 2]\nblocks:\n  - {definition: 5, server: [srv], action: {a: 1}}\n  - 7\n"
    repo = make_repo(jobs={"weird": weird, "odd": "description: 5\nblocks: {}\n"})
    server = serve(repo)
    api = server.get("/api/jobs")
    assert api.status_code == 200
    assert api.json() == status_json(repo)
    rows = {row["job"]: row for row in api.json()}
    assert rows["weird"]["status"] == "INVALID" and rows["weird"]["description"] == ""
    assert rows["weird"]["blocks"][0] | {"users": {}} == {
        "definition": "5", "module_type": None, "server": None, "environment": None, "organization": None,
        "action": None, "users": {}}
    assert rows["odd"]["description"] == "5" and rows["odd"]["blocks"] == []
    for path in ("/", "/jobs/weird", "/jobs/odd", "/api/jobs/weird", "/api/jobs/odd"):
        assert server.get(path).status_code == 200, path
    assert server.get("/api/jobs/weird").json()["problems"]
