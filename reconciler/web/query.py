"""The job list's query parameters, shared by the page (`/`) and the API (`/api/jobs`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query as Param

from reconciler.core.listing import Query

MAX_PER_PAGE = 1000
PAGE_HEADERS: dict[str, Any] = {
    "X-Total-Count": {"description": "jobs matching the filters and search (pages only)",
                      "schema": {"type": "integer"}},
    "Link": {"description": "the next and previous pages (pages only)", "schema": {"type": "string"}},
}


def job_query(
    status: Annotated[str | None, Param(max_length=32, description="listing state, e.g. FAILURE")] = None,
    environment: Annotated[str | None, Param(max_length=200)] = None,
    organization: Annotated[str | None, Param(max_length=200)] = None,
    q: Annotated[str | None, Param(max_length=200, description="part of the job name (any case)")] = None,
    sort: Annotated[Literal["attention", "newest", "name"], Param(
        description="attention (failed, invalid, modified, blocked, then running, then the rest; newest first "
                    "in each), newest, or name")] = "attention",
    page: Annotated[int, Param(ge=1, le=1_000_000, description="1-based")] = 1,
    per_page: Annotated[int, Param(ge=1, le=MAX_PER_PAGE)] = 100,
) -> Query:
    return Query(status=status or None, environment=environment or None, organization=organization or None,
                 search=q.strip() or None if q else None, sort=sort, page=page, per_page=per_page)
