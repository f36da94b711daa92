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
            short = job["build_id"].rsplit("-", 1)[1]  # the full id is the title: it no longer wraps the column
            assert f'<a href="/builds/{job["build_id"]}" title="{job["build_id"]}">{short}</a>' in html

    for params in ({"status": "SUCCESS"}, {"environment": "staging"}, {"organization": "acme-europe"},
                   {"status": "SUCCESS", "environment": "production"}, {"status": "FAILURE"}):
        filtered = server.get("/", params=params).text
        assert filtered.count("<tr data-job=") == block_rows(jobs, **params), params
    assert block_rows(jobs, status="SUCCESS") == 3 and block_rows(jobs, status="FAILURE") == 0

    done = next(j for j in jobs if j["job"] == "2026-11-01-sales-dashboard-rollout")
    job_page = server.get(f"/jobs/{done['job']}").text
    assert "Sales dashboard rollout, Q4" in job_page
    assert re.search(r'data-label="User"><a href="\?user=alice#details">alice</a></td><td data-label="Result" '
                     r'class="u-deployed">DEPLOYED</td>', job_page)
    assert "Alice&#39;s sales board" in job_page  # the YAML as committed, escaped
    assert f'href="/builds/{done["build_id"]}"' in job_page

    build_page = server.get(f"/builds/{done['build_id']}").text
    assert f"as build {done['build_id']}" in build_page and "<pre id=\"log\">" in build_page
    pending = server.get("/jobs/draft-retire-staging-dashboard").text
    assert "SUSPENDED" in pending and 'Not run yet; would deploy to: <a href="?user=dave#details">dave</a>' in pending

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


ABORTS_FOR_U2 = """\
on_failure: abort
blocks:
  - definition: app
    server: srv
    users: [u1, u2]
    content_tokens: {greeting: hi}
    user_tokens:
      u2: {content_tokens: {greeting: 'say "hi"'}}
"""


def test_page_paginates_sorts_searches_and_counts_what_it_filters(
        make_repo: Callable[..., Path], serve: Callable[..., ServeProcess]) -> None:
    jobs = {f"ok-{i}": flow_job("[u1]") for i in range(5)}
    repo = make_repo(jobs={**jobs, "broken": ABORTS_FOR_U2})
    reconciled(repo)
    server = serve(repo)
    rows = status_json(repo)
    assert server.get("/api/jobs").text.strip() and server.get("/api/jobs").json() == rows  # plain: unchanged

    first = server.get("/").text
    assert re.findall(r'<tr data-job="([^"]+)"', first)[0] == "broken"  # needing attention first
    assert "6 job(s)" in first and "page 1 of 1" in first

    failed = server.get("/", params={"status": "FAILURE"}).text
    assert failed.count("<tr data-job=") == 1 and "1 of 6 job(s) match" in failed  # the count of what is shown

    paged = server.get("/", params={"per_page": 2, "sort": "name"}).text
    assert re.findall(r'<tr data-job="([^"]+)"', paged) == ["broken", "ok-0"] and "page 1 of 3" in paged
    assert 'href="/?per_page=2&amp;sort=name&amp;page=2" rel="next"' in paged
    third = server.get("/", params={"per_page": 2, "sort": "name", "page": 3}).text
    assert re.findall(r'<tr data-job="([^"]+)"', third) == ["ok-3", "ok-4"] and 'rel="prev"' in third
    assert 'rel="next"' not in third

    found = server.get("/", params={"q": "OK-2"}).text
    assert re.findall(r'<tr data-job="([^"]+)"', found) == ["ok-2"] and 'value="OK-2"' in found

    api = server.get("/api/jobs", params={"page": 2, "per_page": 2, "sort": "name"})
    assert api.status_code == 200 and api.headers["content-type"] == "application/json"
    by_name = {row["job"]: row for row in rows}
    assert api.json() == [by_name["ok-1"], by_name["ok-2"]]  # the same rows as status, one page of them
    assert api.headers["x-total-count"] == "6" and api.headers["x-pages"] == "3"
    assert 'page=3' in api.headers["link"] and 'rel="next"' in api.headers["link"]
    assert server.get("/api/jobs", params={"status": "FAILURE"}).json() == [by_name["broken"]]
    assert server.get("/api/jobs", params={"per_page": 0}).status_code == 422

    # the page embeds (and REFRESH fetches) only the page's own jobs, not every job
    assert '"ok-4"' not in paged.split('id="initial">')[1].split("</script>")[0]


def test_job_and_retry_link_each_other_blocks_count_from_zero_and_failures_stand_out(
        make_repo: Callable[..., Path], serve: Callable[..., ServeProcess]) -> None:
    repo = make_repo(jobs={"broken": ABORTS_FOR_U2})
    reconciled(repo)
    write(repo, "jobs/other.yaml", flow_job("[u3]"))
    commit_all(repo, "another job")
    retry = run_main("retry", "broken", "--commit", "--repo", str(repo))
    assert retry.returncode == 0, retry.stderr
    server = serve(repo)
    original = server.get("/jobs/broken").text
    assert '<dt>Retried by</dt><dd><a href="/jobs/broken-retry-1">broken-retry-1</a>' in original
    assert "<h3>Block 0:" in original and "<h3>Block 1:" not in original  # 0-based, like the ledger
    again = server.get("/jobs/broken-retry-1").text
    assert '<dt>Retry of</dt><dd><a href="/jobs/broken" rel="up">broken</a>' in again
    assert "Retried by" not in server.get("/jobs/other").text
    detail = server.get("/api/jobs/broken").json()
    assert (detail["retried_by"], detail["retry_of"]) == (["broken-retry-1"], None)
    assert server.get("/api/jobs/broken-retry-1").json()["retry_of"] == "broken"
    text = run_main("status", "broken", "--repo", str(repo)).stdout
    assert "retried by:  broken-retry-1" in text
    assert "retry of:    broken" in run_main("status", "broken-retry-1", "--repo", str(repo)).stdout

    user = server.get("/jobs/broken", params={"user": "u2"}).text  # per-user details
    assert 'id="details"' in user and "<code>greeting</code>" in user and "&#34;say \\&#34;hi\\&#34;&#34;" in user
    assert 'class="u-failed">FAILED</dd>' in user and re.search(r"sha256:[0-9a-f]{64}", user)
    api_user = server.get("/api/jobs/broken", params={"user": "u2"}).json()["user_details"]
    assert api_user[0]["tokens"]["greeting"] == 'say "hi"' and api_user[0]["status"] == "FAILED"
    assert "not a recipient" in server.get("/jobs/broken", params={"user": "u3"}).text

    build = detail["build_id"]
    log = server.get(f"/builds/{build}").text
    assert re.search(r'<span class="failed">[^<]*u2: FAILED, broken assets', log)
    assert re.search(r'<span class="failed">[^<]*finished: FAILURE', log)
    assert not re.search(r'<span class="[a-z]+">[^<]*claimed by', log)  # ordinary lines stay plain
    for page in (original, server.get("/").text):  # one time format everywhere on the pages
        assert not re.search(r">\d{4}-\d\d-\d\dT\d\d:\d\d", page)
        assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d UTC<", page)
