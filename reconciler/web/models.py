"""Response models of the JSON API, so the OpenAPI document says what the routes return.

The job list's own shapes (`JobRow`, `JobDetail`) are the ones in `reconciler.core.listing`, the one
definition that `status --format json` also prints.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from reconciler.core.listing import JobDetail as JobDetail
from reconciler.core.listing import JobRow as JobRow


class PassState(BaseModel):
    running: bool
    queued: bool
    last_outcome: str | None
    last_finished_at: str | None


class Health(BaseModel):
    status: Literal["ok"]
    branch: str
    tip: str | None
    webhooks_enabled: bool
    passes: PassState
