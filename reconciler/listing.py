"""The job list: one shape for `status`, `/api/jobs` and the web page (SPEC 7, stable)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.engine import recipients
from reconciler.state import RepoState
from reconciler.timeutil import iso


def job_rows(state: RepoState) -> list[dict[str, Any]]:
    plan = state.plan()
    rows = []
    for name, listing in sorted(plan.states.items()):
        rows.append(job_row(state, name, listing))
    return rows


def job_row(state: RepoState, name: str, listing: str) -> dict[str, Any]:
    record = state.ledger.records.get(name)
    jf = state.desired.job_files.get(name)
    added = state.history.added.get(name)
    created = record.created_at if record and record.created_at else (
        datetime.fromtimestamp(added[2], UTC) if added else None)
    blocks: list[dict[str, Any]] = []
    if record is not None:
        blocks = [{
            "definition": b.definition, "module_type": b.module_type, "server": b.server,
            "environment": b.environment, "organization": b.organization, "action": b.action,
            "users": {uid: r.status for uid, r in b.users.items()},
        } for b in record.blocks]
        job = state.desired.jobs.get(name)
        if job is not None and len(blocks) < len(job.blocks):  # blocks not started yet
            blocks += _planned_blocks(state, name)[len(blocks):]
    elif jf is not None:
        blocks = _planned_blocks(state, name)
    return {
        "job": name,
        "status": listing,
        "build_id": record.build_id if record else None,
        "created_at": iso(created),
        "last_run_at": iso(record.started_at or record.queued_at) if record else None,
        "finished_at": iso(record.finished_at) if record else None,
        "description": _text((jf.data or {}).get("description")) or "" if jf and isinstance(jf.data, dict) else "",
        "path": jf.path if jf else None,
        "blocks": blocks,
    }


def _planned_blocks(state: RepoState, name: str) -> list[dict[str, Any]]:
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
        users: dict[str, str] = {}
        out.append({
            "definition": _text(raw.get("definition")),
            "module_type": definition.module_type if definition else None,
            "server": _text(raw.get("server")),
            "environment": server.environment if server else None,
            "organization": server.organization if server else None,
            "action": _text(raw.get("action", "APPLY-AUTO")),
            "users": users,
        })
    return out


def _text(value: Any) -> str | None:
    """A field of an invalid job file as the listing's string (or null): the shape stays stable."""
    if value is None or isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) else None


def job_detail(state: RepoState, name: str) -> dict[str, Any] | None:
    plan = state.plan()
    if name not in plan.states:
        return None
    row = job_row(state, name, plan.states[name])
    record = state.ledger.records.get(name)
    row["record"] = record.model_dump(mode="json") if record else None
    row["problems"] = [p.as_json() for p in plan.problems
                       if p.path in (row["path"], state.ledger.path(name))]
    job = state.desired.jobs.get(name)
    if job is not None and record is None:
        row["recipients"] = [
            recipients(b, state.desired.servers[b.server]) for b in job.blocks
        ]
    return row
