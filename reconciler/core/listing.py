"""The job list: one typed shape for `status`, `/api/jobs` and the web page (stable: SPEC section 7).

A `Listing` answers for every job of one state without reading every ledger record. The listing
state comes from the plan (which needs only record summaries), and what a row shows of a record
comes from a `RecordSummary`, which the ledger layer caches by the record's blob id; a full
`LedgerRecord` is read only for a job shown in detail, or when no summary was handed in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from reconciler.core.model import Rollout, recipients
from reconciler.core.records import LedgerRecord
from reconciler.core.rollout import describe, plan_waves
from reconciler.core.snapshot import Snapshot
from reconciler.core.timeutil import iso, parse_time

RUNNING_STATES = ("IN-PROGRESS", "WORKING")
ATTENTION_STATES = ("FAILURE", "INVALID", "MODIFIED", "BLOCKED")  # a person should look
SORTS = ("attention", "newest", "name")
BlockMeta = tuple[str | None, str | None, str | None, str | None, str | None, str | None]


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

    @property
    def meta(self) -> BlockMeta:
        return (self.definition, self.module_type, self.server, self.environment, self.organization, self.action)


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
    retry_of: str | None = None  # the job this one retries (its `retry_of:`)
    retried_by: list[str] = field(default_factory=list)  # jobs whose `retry_of:` names this one

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
        data["retry_of"] = self.retry_of
        data["retried_by"] = self.retried_by
        return data


@dataclass(frozen=True)
class RecordSummary:
    """What the job list shows of one ledger record; depends only on the record's bytes (cached by blob)."""

    build_id: str
    status: str
    created_at: str | None
    last_run_at: str | None
    finished_at: str | None
    blocks: tuple[BlockMeta, ...]
    blocks_json: str  # the row's "blocks", users included, exactly as `status --format json` prints them

    @classmethod
    def of(cls, record: LedgerRecord) -> RecordSummary:
        rows = record_blocks(record)
        metas = tuple(tuple(sys.intern(v) if isinstance(v, str) else v for v in r.meta) for r in rows)
        return cls(record.build_id, sys.intern(record.status), iso(record.created_at),
                   iso(record.started_at or record.queued_at), iso(record.finished_at), metas,  # type: ignore[arg-type]
                   json.dumps([r.as_json() for r in rows], ensure_ascii=False))

    @classmethod
    def of_data(cls, data: dict[str, Any]) -> RecordSummary:
        """The same summary from a record's JSON, for a blob that already passed every check of
        `parse_record` (the ledger's load says which): no second schema and model check."""
        def when(value: Any) -> str | None:
            return iso(parse_time(value)) if isinstance(value, str) else None

        rows = [BlockRow(b["definition"], b["module_type"], b["server"], b["environment"], b["organization"],
                         b["action"], {uid: r["status"] for uid, r in b["users"].items()}) for b in data["blocks"]]
        metas = tuple(tuple(sys.intern(v) if isinstance(v, str) else v for v in r.meta) for r in rows)
        return cls(data["build_id"], sys.intern(data["status"]), when(data.get("created_at")),
                   when(data.get("started_at") or data.get("queued_at")), when(data.get("finished_at")),
                   metas,  # type: ignore[arg-type]
                   json.dumps([r.as_json() for r in rows], ensure_ascii=False))

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.build_id, self.status, self.created_at, self.last_run_at, self.finished_at, self.blocks,
                self.blocks_json)

    @classmethod
    def from_tuple(cls, value: tuple[Any, ...]) -> RecordSummary:
        return cls(*value)  # marshal keeps tuples as tuples: nothing to convert


@dataclass(frozen=True)
class JobFacts:
    """What the job list shows of one job file; depends only on the file's bytes (cached by blob)."""

    description: str
    retry_of: str | None

    @classmethod
    def of(cls, data: Any) -> JobFacts:
        if not isinstance(data, dict):
            return cls("", None)
        retry_of = data.get("retry_of")
        return cls(_text(data.get("description")) or "", retry_of if isinstance(retry_of, str) else None)


@dataclass(frozen=True)
class ListingEntry:
    """One job, light enough to keep for 10,000 jobs and to sort and filter on every page load."""

    job: str
    status: str
    build_id: str | None
    created_at: str | None
    last_run_at: str | None
    environments: tuple[str, ...]
    organizations: tuple[str, ...]

    @property
    def newest(self) -> str:
        """Latest activity (ISO times sort as text): the last build's start, else when the job arrived."""
        return max(self.last_run_at or "", self.created_at or "")

    @property
    def attention(self) -> int:
        return 0 if self.status in ATTENTION_STATES else 1 if self.status in RUNNING_STATES else 2


@dataclass(frozen=True)
class Query:
    """A page of the job list: filters, a search by job name, an order, a page."""

    status: str | None = None
    environment: str | None = None
    organization: str | None = None
    search: str | None = None  # part of the job name, any case
    sort: str = "attention"  # attention (needing attention, then running, then the rest; newest first) | newest | name
    page: int = 1  # 1-based
    per_page: int = 100

    def matches(self, entry: ListingEntry) -> bool:
        return ((not self.status or entry.status == self.status)
                and (not self.environment or self.environment in entry.environments)
                and (not self.organization or self.organization in entry.organizations)
                and (not self.search or self.search.lower() in entry.job.lower()))


@dataclass(frozen=True)
class Page:
    entries: list[ListingEntry]
    total: int  # every job
    matched: int  # the jobs the query's filters and search match
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.matched // self.per_page))


class Listing:
    """The job list of one state. `summaries` / `facts` (by job) come from the ledger layer's cache;
    whatever is missing is computed from the state itself (slower, same answer)."""

    def __init__(self, state: Snapshot, summaries: Mapping[str, RecordSummary] | None = None,
                 facts: Mapping[str, JobFacts] | None = None) -> None:
        self.state = state
        self.plan = state.plan()
        self.states = self.plan.states
        self.names = sorted(self.states)
        self._summaries = dict(summaries or {})
        self._facts = dict(facts or {})
        self._jobs = state.desired.jobs  # a property that builds a dict: read once, not once per job
        self._entries: dict[str, list[ListingEntry]] = {}
        self._choices: tuple[list[str], list[str]] | None = None

    def replanned(self) -> Listing:
        """The same state and caches, planned again now (a `run_at` may have fallen due). When no job's state
        changed, what was computed for all jobs (entries, orders, choices) is kept: it depends on nothing else."""
        fresh = Listing(self.state, self._summaries, self._facts)
        if fresh.states == self.states:
            fresh._entries, fresh._choices = self._entries, self._choices
        return fresh

    def next_change(self) -> datetime | None:
        """The next moment a listing state changes by itself (the earliest `run_at` still ahead)."""
        now = datetime.now(UTC)
        ahead = [job.run_at for job in self._jobs.values() if job.run_at is not None and job.run_at > now]
        return min(ahead) if ahead else None

    # -- one job -----------------------------------------------------------------------------------
    def summary(self, name: str) -> RecordSummary | None:
        found = self._summaries.get(name)
        if found is None and name in self.state.ledger.records:
            found = self._summaries[name] = RecordSummary.of(self.state.ledger.records[name])
        return found

    def facts(self, name: str) -> JobFacts:
        jf = self.state.desired.job_files.get(name)
        if jf is None:
            return JobFacts("", None)
        if jf.data is not None:
            return JobFacts.of(jf.data)
        return self._facts.get(name, JobFacts("", None))  # an executed job's file, not parsed by this load

    def _fields(self, name: str, summary: RecordSummary | None) -> dict[str, Any]:
        jf = self.state.desired.job_files.get(name)
        added = self.state.history.added.get(name)
        created = summary.created_at if summary and summary.created_at else (
            iso(datetime.fromtimestamp(added[2], UTC)) if added else None)
        return {"job": name, "status": self.states[name], "build_id": summary.build_id if summary else None,
                "created_at": created, "last_run_at": summary.last_run_at if summary else None,
                "finished_at": summary.finished_at if summary else None,
                "description": self.facts(name).description, "path": jf.path if jf else None}

    def _unstarted_blocks(self, name: str, summary: RecordSummary | None) -> list[BlockRow]:
        """Blocks of the job file that have no record yet (all of them before the job runs)."""
        done = len(summary.blocks) if summary else 0
        if summary is not None and (name not in self._jobs or done >= len(self._jobs[name].blocks)):
            return []
        return planned_blocks(self.state, name)[done:]

    def row(self, name: str) -> JobRow:
        summary = self.summary(name)
        record = self.state.ledger.records[name] if summary is not None else None
        blocks = [*(record_blocks(record) if record else []), *self._unstarted_blocks(name, summary)]
        return JobRow(**self._fields(name, summary), blocks=tuple(blocks), reason=self.plan.reasons.get(name))

    def row_json(self, name: str) -> str:
        """The row as `status --format json` prints it, without reading the record when its summary is known."""
        summary = self.summary(name)
        fields_ = self._fields(name, summary)
        unstarted = self._unstarted_blocks(name, summary)
        reason = ', "reason": ' + json.dumps(self.plan.reasons.get(name), ensure_ascii=False) + "}"
        if summary is not None and not unstarted:
            return json.dumps(fields_, ensure_ascii=False)[:-1] + ', "blocks": ' + summary.blocks_json + reason
        blocks = json.loads(summary.blocks_json) if summary else []
        return json.dumps({**fields_, "blocks": [*blocks, *(b.as_json() for b in unstarted)]},
                          ensure_ascii=False)[:-1] + reason

    def rows_json(self, names: list[str] | None = None) -> str:
        """A JSON list of rows, one per line (the stable `status --format json` / `/api/jobs` answer)."""
        lines = [self.row_json(name) for name in (self.names if names is None else names)]
        return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"

    def table_row(self, name: str) -> dict[str, Any]:
        """The row without per-user results (what tables show); reads no record when a summary is known."""
        return {**self._fields(name, self.summary(name)), "blocks": [b.as_json() for b in self.block_rows(name)],
                "reason": self.plan.reasons.get(name)}

    def entry(self, name: str) -> ListingEntry:
        summary = self.summary(name)
        fields_ = self._fields(name, summary)
        metas = [*(summary.blocks if summary else ()), *(b.meta for b in self._unstarted_blocks(name, summary))]
        return ListingEntry(name, fields_["status"], fields_["build_id"], fields_["created_at"],
                            fields_["last_run_at"], _distinct(m[3] for m in metas), _distinct(m[4] for m in metas))

    def block_rows(self, name: str) -> list[BlockRow]:
        """The blocks as the page's table shows them (no per-user results: no record is read)."""
        summary = self.summary(name)
        metas = [*(summary.blocks if summary else ()), *(b.meta for b in self._unstarted_blocks(name, summary))]
        return [BlockRow(*m) for m in metas]

    # -- all jobs ----------------------------------------------------------------------------------
    def entries(self, sort: str = "attention") -> list[ListingEntry]:
        """Every job, in the order asked for (computed once per order)."""
        if sort not in self._entries:
            base = self._entries.get("name") or [self.entry(name) for name in self.names]
            self._entries["name"] = base
            if sort == "newest":
                self._entries[sort] = sorted(base, key=lambda e: e.newest, reverse=True)
            elif sort == "attention":
                newest = self.entries("newest")
                self._entries[sort] = sorted(newest, key=lambda e: e.attention)  # stable: newest first inside
            else:
                raise ValueError(f"unknown sort {sort!r}")
        return self._entries[sort]

    def select(self, query: Query) -> Page:
        ordered = self.entries(query.sort)
        filtered = query.status or query.environment or query.organization or query.search
        matched = [e for e in ordered if query.matches(e)] if filtered else ordered
        start = (query.page - 1) * query.per_page
        return Page(matched[start:start + query.per_page], len(ordered), len(matched), query.page, query.per_page)

    def choices(self) -> tuple[list[str], list[str]]:
        """Every environment and organization of the listed jobs (the page's filter choices)."""
        if self._choices is None:
            entries = self.entries("name")
            self._choices = (sorted({v for e in entries for v in e.environments}),
                             sorted({v for e in entries for v in e.organizations}))
        return self._choices

    def retried_by(self, name: str) -> list[str]:
        return sorted(other for other in self.state.desired.job_files if self.facts(other).retry_of == name)

    def detail(self, name: str) -> JobDetail | None:
        if name not in self.states:
            return None
        row = self.row(name)
        record = self.state.ledger.records.get(name)
        ledger_path = self.state.ledger.path(name)
        problems = [p.as_json() for p in self.plan.problems if p.path in (row.path, ledger_path)]
        job = self._jobs.get(name)
        shown = None
        if job is not None and record is None:
            shown = [recipients(b, self.state.desired.servers[b.server]) for b in job.blocks]
        waves = None
        if job is not None and any(b.rollout for b in job.blocks):
            waves = [rollout_json(b.rollout, recipients(b, self.state.desired.servers[b.server])) for b in job.blocks]
        return JobDetail(**{f.name: getattr(row, f.name) for f in fields(JobRow)}, record=record, problems=problems,
                         recipients=shown, rollout=waves, runs_at=iso(self.plan.runs_at.get(name)),
                         retry_of=self.facts(name).retry_of, retried_by=self.retried_by(name))


def rollout_json(rollout: Rollout | None, users: list[str]) -> dict[str, Any] | None:
    """A block's waves as shown (page, API, check): the users each wave adds, counted, and the budget."""
    if rollout is None:
        return None
    sizes = [len(wave) for wave in plan_waves(users, rollout)]
    return {"waves": sizes, "written": [str(w) for w in rollout.waves], "max_failures": str(rollout.max_failures),
            "summary": describe(rollout, users)}


def record_blocks(record: LedgerRecord) -> list[BlockRow]:
    return [BlockRow(b.definition, b.module_type, b.server, b.environment, b.organization, b.action,
                     {uid: r.status for uid, r in b.users.items()}) for b in record.blocks]


def planned_blocks(state: Snapshot, name: str) -> list[BlockRow]:
    """Blocks of a job file as far as it can be read (for a job without a complete record)."""
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


def _distinct(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v is not None))


def job_rows(state: Snapshot) -> list[JobRow]:
    """Every row, fully built (reads every record); `Listing` is the fast way for many jobs."""
    listing = Listing(state)
    return [listing.row(name) for name in listing.names]


def job_detail(state: Snapshot, name: str) -> JobDetail | None:
    return Listing(state).detail(name)


def detail_of_record(record: LedgerRecord, *, status: str | None = None, path: str | None = None,
                     description: str = "") -> JobDetail:
    """A job's status JSON from its record alone (the engine's notifications): the shape of `status JOB`."""
    return JobDetail(job=record.job, status=status or record.status, build_id=record.build_id,
                     created_at=iso(record.created_at), last_run_at=iso(record.started_at or record.queued_at),
                     finished_at=iso(record.finished_at), description=description, path=path,
                     blocks=tuple(record_blocks(record)), record=record)
