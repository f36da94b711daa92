"""Rollout control end to end through the real CLI (real git repos, real `reconciler` processes):
a chain of three jobs, a failure in the middle blocking the last, a freeze window now and then moved
to the past, a weekly window, and what plan, check, status and the page say about them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from reconciler.core.freeze import DAYS
from reconciler.core.timeutil import iso, utcnow
from tests.support.cli import run_main
from tests.support.repos import commit_all, git, write

BLOCK = ("blocks:\n  - definition: app\n    server: srv\n    users: all\n"
         "    content_tokens: {{greeting: {greeting}}}\n")


def job(after: list[str] | None = None, greeting: str = "hi") -> str:
    head = f"after: [{', '.join(after)}]\n" if after else ""
    return head + BLOCK.format(greeting=greeting)


def status(repo: Path, name: str | None = None) -> Any:
    result = run_main("status", *([name] if name else []), "--format", "json", "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def states(repo: Path) -> dict[str, tuple[str, str | None]]:
    return {row["job"]: (row["status"], row["reason"]) for row in status(repo)}


def reconcile(repo: Path) -> Any:
    return run_main("reconcile", "--repo", str(repo))


def test_a_chain_of_three_jobs_runs_in_one_pass(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"a": job(), "b": job(["a"]), "c": job(["b"])})
    plan = json.loads(run_main("plan", "--format", "json", "--repo", str(repo)).stdout)
    assert plan["to_run"] == ["a"] and plan["waiting"] == ["b", "c"] and plan["valid"]
    assert plan["reasons"] == {"b": "waiting for a (PENDING)", "c": "waiting for b (WAITING)"}
    result = reconcile(repo)  # link after link: the pass plans again when a build releases a waiting job
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["a", "b", "c"]
    assert states(repo) == {"a": ("SUCCESS", None), "b": ("SUCCESS", None), "c": ("SUCCESS", None)}
    started = {name: status(repo, name)["last_run_at"] for name in "abc"}
    assert started["a"] <= started["b"] <= started["c"]
    finished_a = status(repo, "a")["finished_at"]
    assert finished_a <= started["b"]  # b was claimed only after a's SUCCESS record


def test_a_failure_in_the_middle_blocks_the_last(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"a": job(), "b": job(["a"], greeting="'say \"hi'"), "c": job(["b"])})
    first = reconcile(repo)  # b renders broken JSON for every user: SKIPPED, so FAILURE; c is then blocked
    assert first.returncode == 1
    assert {name: state for name, (state, _) in states(repo).items()} == {"a": "SUCCESS", "b": "FAILURE",
                                                                           "c": "BLOCKED"}
    assert "c: BLOCKED, blocked: job b ended FAILURE" in first.stdout
    again = reconcile(repo)
    assert again.returncode == 1  # a problem: c can never run
    assert "jobs/c.yaml:1: job 'c' will not run: job b ended FAILURE" in again.stderr
    assert states(repo)["c"] == ("BLOCKED", "blocked: job b ended FAILURE")
    detail = status(repo, "c")
    assert detail["status"] == "BLOCKED" and detail["build_id"] is None
    assert [p["code"] for p in detail["problems"]] == ["AFTER_BLOCKED"]
    text = run_main("status", "c", "--repo", str(repo)).stdout
    assert "reason:      blocked: job b ended FAILURE" in text
    # pointing c at a retry of b unblocks it: the retry runs, then c, in one pass
    write(repo, "jobs/b2.yaml", job(["a"]))
    write(repo, "jobs/c.yaml", job(["b2"]))
    commit_all(repo, "retry b as b2")
    assert states(repo)["c"] == ("WAITING", "waiting for b2 (PENDING)")
    assert reconcile(repo).returncode == 0
    assert states(repo)["c"] == ("SUCCESS", None)


def _freeze(repo: Path, text: str) -> None:
    write(repo, "reconciler.yaml", text)
    commit_all(repo, "freeze")


def test_a_freeze_window_now_then_moved_to_the_past(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"j": job()})
    now = utcnow()
    start, end = iso(now - timedelta(hours=1)), iso(now + timedelta(hours=1))
    _freeze(repo, f"freeze:\n  - from: {start}\n    to: {end}\n    environments: [test]\n    reason: release freeze\n")
    plan = run_main("plan", "--repo", str(repo))
    assert f"frozen j: frozen until {end} on test: release freeze" in plan.stdout
    result = reconcile(repo)
    assert result.returncode == 0, result.stderr
    assert f"j: FROZEN, frozen until {end} on test: release freeze" in result.stdout
    assert not (repo / "status" / "j.json").exists()
    assert states(repo) == {"j": ("FROZEN", f"frozen until {end} on test: release freeze")}
    assert status(repo, "j")["runs_at"] == end
    _freeze(repo, f"freeze:\n  - from: {iso(now - timedelta(days=2))}\n    to: {iso(now - timedelta(days=1))}\n")
    assert reconcile(repo).returncode == 0
    assert states(repo) == {"j": ("SUCCESS", None)}


def test_a_weekly_window_holds_only_its_environment(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"j": job(), "other": BLOCK.format(greeting="hi").replace("srv", "lab")})
    write(repo, "servers/lab.yaml", (repo / "servers/srv.yaml").read_text().replace("test", "lab")
          .replace(".deployments/srv", ".deployments/lab"))
    began = utcnow() - timedelta(hours=1)
    _freeze(repo, f"freeze:\n  - weekly: {{day: {DAYS[began.weekday()]}, at: '{began:%H:%M}', for: 3h}}\n"
                  "    environments: [test]\n    reason: weekend\n")
    assert reconcile(repo).returncode == 0
    found = states(repo)
    assert found["other"] == ("SUCCESS", None)
    assert found["j"][0] == "FROZEN" and found["j"][1].endswith("on test: weekend")  # type: ignore[union-attr]


def test_check_shows_waiting_frozen_and_the_waves(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"base": job()})
    assert reconcile(repo).returncode == 0
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "jobs/first.yaml", job())
    write(repo, "jobs/second.yaml", job(["first"]) + "    rollout: {waves: [1, '50%'], max_failures: 1}\n")
    commit_all(repo, "two jobs, one after the other")
    result = run_main("check", "--base", "main", "--repo", str(repo))
    assert result.returncode == 0, result.stdout
    assert "second (added): WAITING, waiting for first (PENDING)" in result.stdout
    assert "rollout: 3 wave(s): 1, 1, 1 user(s) (max_failures 1)" in result.stdout
    data = json.loads(run_main("check", "--base", "main", "--format", "json", "--repo", str(repo)).stdout)
    second = next(j for j in data["jobs"] if j["job"] == "second")
    assert second["reason"] == "waiting for first (PENDING)"
    assert second["blocks"][0]["rollout"]["waves"] == [1, 1, 1]
    markdown = run_main("check", "--base", "main", "--format", "markdown", "--repo", str(repo)).stdout
    assert "Rollout: 3 wave(s): 1, 1, 1 user(s) (max_failures 1)" in markdown


def test_the_page_shows_the_reason(make_repo: Callable[..., Path], serve: Callable[..., Any]) -> None:
    repo = make_repo(jobs={"a": job(["ghost"]), "b": job(["a"])})
    server = serve(repo)
    page = server.get("/").text
    assert 'class="status s-blocked"' in page
    assert "blocked: job ghost does not exist (no job file and no ledger record)" in page
    api = {row["job"]: row for row in server.get("/api/jobs").json()}
    assert api["b"]["status"] == "BLOCKED" and api["b"]["reason"].startswith("blocked: job a is blocked")
    detail = server.get("/jobs/b").text
    assert "<dt>Why</dt>" in detail and "job a is blocked" in detail
    metrics = server.get("/metrics").text
    assert 'reconciler_jobs{status="BLOCKED"} 2.0' in metrics
    assert 'reconciler_notifications_total{event="job.failed",format="json",outcome="delivered"} 0.0' in metrics


def test_a_frozen_job_runs_on_the_first_pass_after_the_window_at_the_same_tip(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={"j": job()})
    end = utcnow().replace(microsecond=0) + timedelta(seconds=4)
    _freeze(repo, f"freeze:\n  - {{from: {iso(end - timedelta(hours=1))}, to: {iso(end)}}}\n")
    assert reconcile(repo).returncode == 0
    assert states(repo)["j"][0] == "FROZEN"
    while utcnow() < end:  # waiting for the window to end (the wall clock is the input here, not a timing guess)
        time.sleep(0.2)
    assert reconcile(repo).returncode == 0
    assert states(repo)["j"] == ("SUCCESS", None)


def test_the_page_keeps_the_reason_after_a_refresh_in_a_browser(make_repo: Callable[..., Path],
                                                                serve: Callable[..., Any]) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.support.browser import ARGS, CHROMIUM

    repo = make_repo(jobs={"a": job(), "b": job(["a"])})
    server = serve(repo)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url)
            row = page.locator("tr[data-job='b']")
            expect(row.locator(".reason")).to_have_text("waiting for a (PENDING)")
            page.get_by_role("button", name="REFRESH").click()  # rows rebuilt by the page's script
            expect(page.locator("#updated")).to_contain_text("updated")
            expect(row.locator(".status")).to_have_text("WAITING")
            expect(row.locator(".reason")).to_have_text("waiting for a (PENDING)")
            assert row.locator(".status").get_attribute("title") == "waiting for a (PENDING)"
            expect(page.locator("tr[data-job='a'] .reason")).to_have_count(0)
        finally:
            browser.close()
