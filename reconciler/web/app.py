"""The FastAPI application of `reconciler serve`: wires the state cache, runner, metrics and routes."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from reconciler import __version__
from reconciler.web.metrics import Metrics
from reconciler.web.runner import PassRunner
from reconciler.web.tip_cache import StateCache


class Deliveries:
    """Recently seen webhook delivery ids (bounded): a redelivery starts nothing new."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen(self, key: str) -> bool:
        """True if `key` was seen before; remembers it either way."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return False


@dataclass
class ServeContext:
    cache: StateCache
    runner: PassRunner
    metrics: Metrics
    secret: str | None  # RECONCILER_WEBHOOK_SECRET; never logged, never rendered
    deliveries: Deliveries = field(default_factory=Deliveries)
    max_body: int = 1024 * 1024


def create_app(ctx: ServeContext) -> FastAPI:
    from reconciler.web import api, pages, webhooks

    # no /docs or /redoc: they load their scripts from a CDN, and these pages must work offline
    app = FastAPI(title="reconciler", version=__version__, docs_url=None, redoc_url=None,
                  description="Deployment jobs of a GitOps deployment repo: read-only API, webhooks, "
                              "metrics.")
    app.state.ctx = ctx
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(webhooks.router)

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, exc: HTTPException) -> Response:
        # pages get an HTML 404 page; the API and everything else keep FastAPI's JSON error
        if exc.status_code == 404 and not request.url.path.startswith(("/api/", "/webhooks/")) \
                and "text/html" in request.headers.get("accept", ""):
            page = pages.render("not_found.html", branch=ctx.cache.branch, what=str(exc.detail))
            return HTMLResponse(page, status_code=404)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app


def context(request: Request) -> ServeContext:
    ctx: ServeContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServeContext, Depends(context)]
