"""Server-rendered pages: the jobs list, one job, one build's log. Everything shown is autoescaped."""

from __future__ import annotations

import json
import re
import urllib.parse
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Query as Param
from fastapi.responses import HTMLResponse

from reconciler.core.listing import SORTS, Query
from reconciler.core.shown import short_build_id, shown_time
from reconciler.web.app import Ctx, ServeContext
from reconciler.web.metrics import LISTING_STATES
from reconciler.web.query import job_query

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
    env.filters["short_build"] = short_build_id
    env.filters["log_lines"] = log_lines
    env.filters["token_value"] = token_value
    return env


def render(name: str, **values: Any) -> str:
    text: str = _templates().get_template(name).render(running=RUNNING, **values)
    return text


def when(iso: str | None) -> str:
    """The one time format of the pages (and the terminal): 2026-11-21 12:15 UTC; the full value in a title."""
    return shown_time(iso) if iso else "—"


def token_value(value: Any) -> str:
    """A resolved token value as the CLI shows it: a secret by name, never its value; else JSON."""
    if isinstance(value, dict) and set(value) == {"secret"}:
        return f"{{secret: {value['secret']}}}"
    return json.dumps(value, ensure_ascii=False)


def table_rows(jobs: list[dict[str, Any]], environment: str | None = None,
               organization: str | None = None) -> list[dict[str, Any]]:
    """One row per job block that matches the filters (a job without readable blocks still gets one row)."""
    rows = []
    for job in jobs:
        for block in job["blocks"] or [{}]:
            if (environment and block.get("environment") != environment) or \
                    (organization and block.get("organization") != organization):
                continue
            rows.append({"job": job["job"], "build_id": job["build_id"], "status": job["status"],
                         "reason": job.get("reason"),
                         "created_at": job["created_at"], "last_run_at": job["last_run_at"],
                         "environment": block.get("environment"), "organization": block.get("organization"),
                         "module_type": block.get("module_type"), "definition": block.get("definition"),
                         "action": block.get("action")})
    return rows


def _with(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (pagination links keep the filters)."""
    params = {k: v for k, v in request.query_params.items() if k not in changes}
    params.update({k: str(v) for k, v in changes.items() if v not in (None, "")})
    return "/?" + urllib.parse.urlencode(params) if params else "/"


@router.get("/", response_class=HTMLResponse, responses={200: _HTML}, summary="The jobs page (paginated)")
def jobs_page(ctx: Ctx, request: Request, query: Annotated[Query, Depends(job_query)]) -> HTMLResponse:
    listing, page = ctx.cache.page(query)
    jobs = ctx.cache.table_rows(listing, page) if listing is not None and page is not None else []
    environments, organizations = listing.choices() if listing is not None else ([], [])
    filters = {"status": query.status or "", "environment": query.environment or "",
               "organization": query.organization or "", "q": query.search or "", "sort": query.sort}
    nav = {}
    if page is not None:
        if page.page > 1:
            nav["prev"] = _with(request, page=min(page.page - 1, page.pages))
        if page.page < page.pages:
            nav["next"] = _with(request, page=page.page + 1)
    return HTMLResponse(render(
        "jobs.html", branch=ctx.cache.branch, jobs=jobs, page=page, nav=nav, filters=filters,
        rows=table_rows(jobs, query.environment, query.organization), pass_busy=any(ctx.runner.busy.values()),
        statuses=sorted(set(LISTING_STATES) | ({query.status} if query.status else set())),
        environments=sorted(set(environments) | ({query.environment} if query.environment else set())),
        organizations=sorted(set(organizations) | ({query.organization} if query.organization else set())),
        sorts=SORTS, api_query=str(request.query_params)))


@router.get("/jobs/{job}", response_class=HTMLResponse, responses={200: _HTML, 404: _HTML}, summary="One job")
def job_page(job: str, ctx: Ctx,
             user: Annotated[str | None, Param(max_length=128, description="show this user's details")] = None
             ) -> HTMLResponse:
    detail = ctx.cache.detail(job)
    if detail is None:
        return not_found(ctx, f"No job {job!r} on the deployment branch.")
    raw = ctx.cache.read(detail["path"]) if detail.get("path") else None
    yaml_text = raw.decode("utf-8", "replace") if raw is not None else None
    details = ctx.cache.user_details(job, user) if user else None
    return HTMLResponse(render("job.html", branch=ctx.cache.branch, d=detail, yaml_text=yaml_text, user=user,
                               user_details=details))


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


HIGHLIGHT = (("FAILED", "failed"), ("FAILURE", "failed"), ("ERROR", "failed"), ("SKIPPED", "skipped"),
             ("NOT_RUN", "skipped"), ("WARNING", "warning"), ("FORCED", "warning"))


def line_class(line: str) -> str:
    """How a build log line is highlighted: failures, skipped users, warnings (the JS does the same)."""
    for word, css in HIGHLIGHT:
        if word in line:
            return css
    return ""


def log_lines(text: str) -> list[tuple[str, str]]:
    """(css class, line) per line of a log, for the template (which escapes the text)."""
    return [(line_class(line), line) for line in text.splitlines(keepends=True)]


def not_found(ctx: ServeContext, what: str) -> HTMLResponse:
    return HTMLResponse(render("not_found.html", branch=ctx.cache.branch, what=what), status_code=404)
