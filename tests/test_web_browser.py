"""The jobs page in a real browser: Playwright driving Debian's Chromium against a real `reconciler serve`.

Set RECONCILER_UPDATE_SCREENSHOT=1 to refresh docs/jobs-page.png (the README's screenshot).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.browser import ARGS, CHROMIUM
from tests.support.cli import run_main
from tests.support.repos import ROOT, commit_all, write
from tests.support.serve import ServeProcess, github_signature

HEADERS = ["Build ID", "Job", "Environment", "Organization", "Module Type", "Module Name", "Action", "Status",
           "Created", "Last Run"]
NEW_JOB = """\
description: Publish the runbook to staging <now>
blocks:
  - definition: ops-runbook
    server: staging-us
    users: [dave, erin]
    content_tokens: {team: Platform}
"""


def test_jobs_page_refresh_build_log_and_screenshot(example_repo: Path, serve: Callable[..., ServeProcess],
                                                     tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert run_main("reconcile", "--repo", str(example_repo)).returncode == 0
    server = serve(example_repo)
    done = next(j for j in server.get("/api/jobs").json() if j["job"] == "2026-11-01-sales-dashboard-rollout")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 720})
            page.goto(server.url)
            assert [h.strip() for h in page.locator("#jobs thead th").all_text_contents()] == HEADERS
            assert page.locator("#jobs tbody tr").count() == 5

            # a Build ID (its short form; the full id is the link's title) opens the build's log
            page.get_by_title(done["build_id"]).first.click()
            page.wait_for_url(f"**/builds/{done['build_id']}")
            expect(page.locator("#log")).to_contain_text(f"as build {done['build_id']}")
            assert "DEPLOYED" in page.locator("#log").inner_text()
            page.go_back()

            # filters are applied by the server (the list is paginated): the URL keeps them
            page.select_option("select[name=status]", "SUCCESS")
            page.wait_for_url("**/?status=SUCCESS")
            expect(page.locator("#jobs tbody tr")).to_have_count(3)
            expect(page.locator("#updated")).to_contain_text("2 of 4 job(s) match")
            page.select_option("select[name=status]", "")
            page.wait_for_url(server.url)
            page.fill("input[name=q]", "RUNBOOK")  # a search by job name, any case
            page.press("input[name=q]", "Enter")
            page.wait_for_url("**/?q=RUNBOOK")
            expect(page.locator("#jobs tbody tr")).to_have_count(1)
            expect(page.locator("#jobs tbody tr")).to_have_attribute("data-job", "2026-11-02-runbook-plan")
            page.goto(server.url)

            # a new job is pushed, the webhook starts a pass, REFRESH shows it reach SUCCESS
            write(example_repo, "jobs/2026-11-03-runbook-publish.yaml", NEW_JOB)
            commit_all(example_repo, "publish the runbook")
            body = json.dumps({"ref": "refs/heads/main", "commits": [{"message": "publish the runbook"}]}).encode()
            answer = server.post("/webhooks/github", content=body, headers={
                "X-GitHub-Event": "push", "X-GitHub-Delivery": "browser-1",
                "X-Hub-Signature-256": github_signature(body), "Content-Type": "application/json"})
            assert answer.status_code == 202
            status = page.locator("tr[data-job='2026-11-03-runbook-publish'] .status")
            deadline = time.monotonic() + 60
            seen = []
            while time.monotonic() < deadline:
                page.get_by_role("button", name="REFRESH").click()
                expect(page.locator("#updated")).to_contain_text("updated")
                seen.append(status.text_content() if status.count() else None)
                if seen[-1] == "SUCCESS":
                    break
                time.sleep(0.5)
            assert seen[-1] == "SUCCESS", seen
            row = page.locator("tr[data-job='2026-11-03-runbook-publish']")
            expect(row.locator("td[data-label='Build ID'] a")).to_have_attribute(
                "title", server.get("/api/jobs/2026-11-03-runbook-publish").json()["build_id"])
            assert page.locator("#jobs tbody tr").count() == 6

            shot = tmp_path / "jobs-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("RECONCILER_UPDATE_SCREENSHOT") == "1":
                (ROOT / "docs").mkdir(exist_ok=True)
                shutil.copyfile(shot, ROOT / "docs" / "jobs-page.png")

            # readable on a phone: rows become cards, nothing scrolls sideways
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(server.url)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            expect(phone.locator("#jobs thead")).to_be_hidden()
            phone.screenshot(path=str(tmp_path / "jobs-page-phone.png"), full_page=True)
        finally:
            browser.close()
    assert server.stop() == 0
