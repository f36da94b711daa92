"""Response models of the JSON API, so the OpenAPI document says what the routes return.

They mirror `reconciler.listing` (the stable `status --format json` shape); extra keys pass through
untouched, so a field added to the listing reaches the API without a change here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.ledger import LedgerRecord

ListingStatus = Literal["IN-PROGRESS", "WORKING", "SUCCESS", "FAILURE", "MODIFIED", "DELETED", "INVALID",
                        "SUSPENDED", "SCHEDULED", "PENDING"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class BlockRow(_Open):
    definition: str | None = Field(description="shown as Module Name")
    module_type: str | None
    server: str | None
    environment: str | None
    organization: str | None
    action: str | None
    users: dict[str, str] = Field(description="user id to per-user result; empty before the job runs")


class JobRow(_Open):
    job: str
    status: ListingStatus = Field(description="the listing state (SPEC section 4)")
    build_id: str | None
    created_at: str | None = Field(description="UTC ISO 8601: when the job file entered the branch")
    last_run_at: str | None = Field(description="UTC ISO 8601: start of the latest build")
    finished_at: str | None
    description: str
    path: str | None
    blocks: list[BlockRow]


class ProblemOut(_Open):
    path: str
    line: int | None
    message: str
    code: str


class JobDetail(JobRow):
    record: LedgerRecord | None
    problems: list[ProblemOut]
    recipients: list[list[str]] | None = Field(default=None, description="users per block, unrun job")


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


class WebhookAnswer(BaseModel):
    result: Literal["triggered", "ignored", "duplicate", "pong"]
    reason: str
