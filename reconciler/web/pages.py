"""Server-rendered pages: the jobs list, one job, one build's log. Everything shown is autoescaped."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from reconciler.web.app import Ctx, ServeContext
from reconciler.web.metrics import LISTING_STATES

router = APIRouter(tags=["pages"])
RUNNING = ("IN-PROGRESS", "WORKING")
_BUILD = re.compile(r"^[0-9]{8}T[0-9]{6}Z-(?P<job>.+)-[0-9a-f]{6}$")
_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}


@cache
def _templates() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("reconciler.web", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    return env


def render(name: str, **values: Any) -> str:
    text: str = _templates().get_template(name).render(running=RUNNING, **values)
    return text


def when(iso: str | None) -> str:
    """2026-11-21T12:15:22Z -> 2026-11-21 12:15 (UTC; the full value is in the title)."""
    return iso[:16].replace("T", " ") if iso else "—"


def table_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per job block (a job without readable blocks still gets one row)."""
    rows = []
    for job in jobs:
        for block in job["blocks"] or [{}]:
            rows.append({"job": job["job"], "build_id": job["build_id"], "status": job["status"],
                         "reason": job.get("reason"),
                         "created_at": job["created_at"], "last_run_at": job["last_run_at"],
                         "environment": block.get("environment"), "organization": block.get("organization"),
                         "module_type": block.get("module_type"), "definition": block.get("definition"),
                         "action": block.get("action")})
    return rows


def _choices(rows: list[dict[str, Any]], key: str, selected: str | None) -> list[str]:
    values = {str(r[key]) for r in rows if r[key] is not None}
    return sorted(values | ({selected} if selected else set()))


@router.get("/", response_class=HTMLResponse, responses={200: _HTML}, summary="The jobs page")
def jobs_page(ctx: Ctx, status: str | None = None, environment: str | None = None,
              organization: str | None = None) -> HTMLResponse:
    jobs = ctx.cache.rows()
    rows = table_rows(jobs)
    shown = [r for r in rows if (not status or r["status"] == status)
             and (not environment or r["environment"] == environment)
             and (not organization or r["organization"] == organization)]
    filters = {"status": status or "", "environment": environment or "", "organization": organization or ""}
    return HTMLResponse(render(
        "jobs.html", branch=ctx.cache.branch, jobs=jobs, rows=shown, filters=filters,
        pass_busy=any(ctx.runner.busy.values()),
        statuses=sorted(set(LISTING_STATES) | ({status} if status else set())),
        environments=_choices(rows, "environment", environment),
        organizations=_choices(rows, "organization", organization)))


@router.get("/jobs/{job}", response_class=HTMLResponse, responses={200: _HTML, 404: _HTML}, summary="One job")
def job_page(job: str, ctx: Ctx) -> HTMLResponse:
    detail = ctx.cache.detail(job)
    if detail is None:
        return not_found(ctx, f"No job {job!r} on the deployment branch.")
    raw = ctx.cache.read(detail["path"]) if detail.get("path") else None
    yaml_text = raw.decode("utf-8", "replace") if raw is not None else None
    return HTMLResponse(render("job.html", branch=ctx.cache.branch, d=detail, yaml_text=yaml_text))


@router.get("/builds/{build_id}", response_class=HTMLResponse, responses={200: _HTML, 404: _HTML},
            summary="One build's log (follows a running build)")
def build_page(build_id: str, ctx: Ctx) -> HTMLResponse:
    text = ctx.cache.log(build_id)
    match = _BUILD.match(build_id)
    if text is None or match is None:
        return not_found(ctx, f"No build {build_id!r} on the deployment branch.")
    job = match.group("job")
    detail = ctx.cache.detail(job)
    status = detail["status"] if detail and detail["build_id"] == build_id else None
    return HTMLResponse(render("build.html", branch=ctx.cache.branch, build_id=build_id, job=job,
                               status=status, log=text))


def not_found(ctx: ServeContext, what: str) -> HTMLResponse:
    return HTMLResponse(render("not_found.html", branch=ctx.cache.branch, what=what), status_code=404)
