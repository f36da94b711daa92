"""The JSON API (`/api/...`), `/healthz` and `/metrics`. Read-only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Query as Param
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler.core.listing import Page, Query
from reconciler.web.app import Ctx
from reconciler.web.models import Health, JobDetail, JobRow, PassState
from reconciler.web.query import PAGE_HEADERS, job_query

router = APIRouter()
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such job or build on the branch"}}


@router.get("/api/jobs", response_model=list[JobRow], tags=["api"],
            summary="The job list: exactly `reconciler status --format json`; with any query parameter, one page",
            responses={200: {"headers": PAGE_HEADERS}})
def list_jobs(ctx: Ctx, request: Request, query: Annotated[Query, Depends(job_query)]) -> Response:
    """Without query parameters: every job, sorted by name, exactly as `status --format json`. With any of
    them: the page of jobs the web page shows for the same parameters (needing attention first, then newest,
    by default), the same rows; `X-Total-Count` is how many jobs match, `Link` points to the next page."""
    if not request.query_params:
        return Response(ctx.cache.rows_json(), media_type="application/json")
    _, page = ctx.cache.page(query)
    if page is None:
        return Response("[]\n", media_type="application/json", headers=page_headers(request, None))
    return Response(ctx.cache.page_json(page), media_type="application/json", headers=page_headers(request, page))


def page_headers(request: Request, page: Page | None) -> dict[str, str]:
    if page is None:
        return {"X-Total-Count": "0", "X-Page": "1", "X-Pages": "1"}
    headers = {"X-Total-Count": str(page.matched), "X-Page": str(page.page), "X-Per-Page": str(page.per_page),
               "X-Pages": str(page.pages)}
    links = []
    if page.page < page.pages:
        links.append(f'<{request.url.include_query_params(page=page.page + 1)}>; rel="next"')
    if page.page > 1:
        links.append(f'<{request.url.include_query_params(page=min(page.page - 1, page.pages))}>; rel="prev"')
    if links:
        headers["Link"] = ", ".join(links)
    return headers


@router.get("/api/jobs/{job}", response_model=JobDetail, tags=["api"], responses=NOT_FOUND,
            summary="One job: blocks, per-user results with reasons, its ledger record (with ?user=ID, that user's "
                    "details)")
def get_job(job: str, ctx: Ctx,
            user: Annotated[str | None, Param(max_length=128, description="add this user's details: tokens "
                                              "(secrets by name), rendered files' digests, result")] = None
            ) -> JSONResponse:
    detail = ctx.cache.detail(job)
    if detail is None:
        raise HTTPException(404, f"no job {job!r} on the deployment branch")
    if user:
        detail["user_details"] = ctx.cache.user_details(job, user) or []
    return JSONResponse(detail)  # the shape `status JOB --format json` prints (response_model documents it)


@router.get("/api/builds/{build_id}/log", response_class=PlainTextResponse, tags=["api"],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **NOT_FOUND},
            summary="A build's log (redacted), as committed so far")
def get_log(build_id: str, ctx: Ctx) -> PlainTextResponse:
    text = ctx.cache.log(build_id)
    if text is None:
        raise HTTPException(404, f"no log for build {build_id!r} on the deployment branch")
    return PlainTextResponse(text, headers={"Cache-Control": "no-store"})


@router.get("/healthz", response_model=Health, tags=["ops"], summary="Liveness, branch tip, pass runner")
def healthz(ctx: Ctx) -> Health:
    last = ctx.runner.last
    busy = ctx.runner.busy
    return Health(status="ok", branch=ctx.cache.branch, tip=ctx.cache.tip(),
                  webhooks_enabled=bool(ctx.secret),
                  passes=PassState(running=busy["running"], queued=busy["queued"],
                                   last_outcome=last.outcome if last else None,
                                   last_finished_at=last.finished_at if last else None))


@router.get("/metrics", response_class=Response, tags=["ops"], summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(ctx: Ctx) -> Response:
    return Response(ctx.metrics.render(ctx.cache.states()), media_type=CONTENT_TYPE_LATEST)
