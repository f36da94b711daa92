"""The job list: one typed shape for `status`, `/api/jobs` and the web page (SPEC 7, stable)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from reconciler.core.model import Rollout, recipients
from reconciler.core.records import LedgerRecord
from reconciler.core.rollout import describe, plan_waves
from reconciler.core.snapshot import Snapshot
from reconciler.core.timeutil import iso


@dataclass(frozen=True)
class BlockRow:
    definition: str | None  # shown as Module Name
    module_type: str | None
    server: str | None
    environment: str | None
    organization: str | None
    action: str | None
    users: dict[str, str] = field(default_factory=dict)  # user id -> result; empty before the job runs

    def as_json(self) -> dict[str, Any]:
        return {"definition": self.definition, "module_type": self.module_type, "server": self.server,
                "environment": self.environment, "organization": self.organization, "action": self.action,
                "users": dict(self.users)}


@dataclass(frozen=True)
class JobRow:
    job: str
    status: str  # the listing state (SPEC section 4)
    build_id: str | None
    created_at: str | None  # UTC ISO 8601: when the job file entered the branch
    last_run_at: str | None  # UTC ISO 8601: start of the latest build
    finished_at: str | None
    description: str
    path: str | None
    blocks: tuple[BlockRow, ...]
    reason: str | None = None  # why a job is WAITING, BLOCKED or FROZEN (SPEC 9.4); null otherwise

    def as_json(self) -> dict[str, Any]:
        return {"job": self.job, "status": self.status, "build_id": self.build_id, "created_at": self.created_at,
                "last_run_at": self.last_run_at, "finished_at": self.finished_at,
                "description": self.description, "path": self.path, "blocks": [b.as_json() for b in self.blocks],
                "reason": self.reason}


@dataclass(frozen=True)
class JobDetail(JobRow):
    record: LedgerRecord | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)
    recipients: list[list[str]] | None = None  # users per block, for a job that has not run
    rollout: list[dict[str, Any] | None] | None = None  # per block: wave sizes and budget, or None (no rollout)
    runs_at: str | None = None  # a frozen or scheduled job: the earliest moment it could run

    def as_json(self) -> dict[str, Any]:
        data = super().as_json()
        data["record"] = self.record.model_dump(mode="json") if self.record else None
        data["problems"] = self.problems
        if self.recipients is not None:
            data["recipients"] = self.recipients
        if self.rollout is not None:
            data["rollout"] = self.rollout
        if self.runs_at is not None:
            data["runs_at"] = self.runs_at
        return data


def job_rows(state: Snapshot) -> list[JobRow]:
    plan = state.plan()
    return [job_row(state, name, listing, plan.reasons.get(name)) for name, listing in sorted(plan.states.items())]


def job_row(state: Snapshot, name: str, listing: str, reason: str | None = None) -> JobRow:
    record = state.ledger.records.get(name)
    jf = state.desired.job_files.get(name)
    added = state.history.added.get(name)
    created = record.created_at if record and record.created_at else (
        datetime.fromtimestamp(added[2], UTC) if added else None)
    blocks: list[BlockRow] = []
    if record is not None:
        blocks = [BlockRow(b.definition, b.module_type, b.server, b.environment, b.organization, b.action,
                           {uid: r.status for uid, r in b.users.items()}) for b in record.blocks]
        job = state.desired.jobs.get(name)
        if job is not None and len(blocks) < len(job.blocks):  # blocks not started yet
            blocks += _planned_blocks(state, name)[len(blocks):]
    elif jf is not None:
        blocks = _planned_blocks(state, name)
    return JobRow(
        job=name, status=listing, build_id=record.build_id if record else None, created_at=iso(created),
        last_run_at=iso(record.started_at or record.queued_at) if record else None,
        finished_at=iso(record.finished_at) if record else None,
        description=_text((jf.data or {}).get("description")) or "" if jf and isinstance(jf.data, dict) else "",
        path=jf.path if jf else None, blocks=tuple(blocks), reason=reason)


def _planned_blocks(state: Snapshot, name: str) -> list[BlockRow]:
    """Blocks of a job without a (complete) record, from the job file as far as it can be read."""
    jf = state.desired.job_files.get(name)
    if jf is None or not isinstance(jf.data, dict) or not isinstance(jf.data.get("blocks"), list):
        return []
    out = []
    for raw in jf.data["blocks"]:
        if not isinstance(raw, dict):
            continue
        server = state.desired.servers.get(str(raw.get("server")))
        definition = state.desired.definitions.get(str(raw.get("definition")))
        out.append(BlockRow(
            definition=_text(raw.get("definition")),
            module_type=definition.module_type if definition else None,
            server=_text(raw.get("server")),
            environment=server.environment if server else None,
            organization=server.organization if server else None,
            action=_text(raw.get("action", "APPLY-AUTO"))))
    return out


def _text(value: Any) -> str | None:
    """A field of an invalid job file as the listing's string (or null): the shape stays stable."""
    if value is None or isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) else None


def job_detail(state: Snapshot, name: str) -> JobDetail | None:
    plan = state.plan()
    if name not in plan.states:
        return None
    row = job_row(state, name, plan.states[name], plan.reasons.get(name))
    record = state.ledger.records.get(name)
    problems = [p.as_json() for p in plan.problems if p.path in (row.path, state.ledger.path(name))]
    job = state.desired.jobs.get(name)
    shown = None
    if job is not None and record is None:
        shown = [recipients(b, state.desired.servers[b.server]) for b in job.blocks]
    waves = None
    if job is not None and any(b.rollout for b in job.blocks):
        waves = [rollout_json(b.rollout, recipients(b, state.desired.servers[b.server])) for b in job.blocks]
    return JobDetail(**{f.name: getattr(row, f.name) for f in fields(JobRow)}, record=record, problems=problems,
                     recipients=shown, rollout=waves, runs_at=iso(plan.runs_at.get(name)))


def rollout_json(rollout: Rollout | None, users: list[str]) -> dict[str, Any] | None:
    """A block's waves as shown (page, API, check): the users each wave adds, counted, and the budget."""
    if rollout is None:
        return None
    sizes = [len(wave) for wave in plan_waves(users, rollout)]
    return {"waves": sizes, "written": [str(w) for w in rollout.waves], "max_failures": str(rollout.max_failures),
            "summary": describe(rollout, users)}


def detail_of_record(record: LedgerRecord, *, status: str | None = None, path: str | None = None,
                     description: str = "") -> JobDetail:
    """A job's status JSON from its record alone (the engine's notifications): the shape of `status JOB`."""
    blocks = tuple(BlockRow(b.definition, b.module_type, b.server, b.environment, b.organization, b.action,
                            {uid: r.status for uid, r in b.users.items()}) for b in record.blocks)
    return JobDetail(job=record.job, status=status or record.status, build_id=record.build_id,
                     created_at=iso(record.created_at), last_run_at=iso(record.started_at or record.queued_at),
                     finished_at=iso(record.finished_at), description=description, path=path, blocks=blocks,
                     record=record)
