"""The ledger: one frozen, versioned record per claimed job in `<ledger_dir>/<job>.json`.

The pydantic model mirrors `schemas/status.schema.json`; a test proves the two agree. Records
are validated against the shipped schema when read: doubt means do not deploy.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, ValidationError

from reconciler import __version__
from reconciler.core import schemas
from reconciler.core.timeutil import iso, utcnow

JobStatus = Literal["IN-PROGRESS", "WORKING", "SUCCESS", "FAILURE"]
UserStatus = Literal["DEPLOYED", "UNCHANGED", "PLANNED", "DESTROYED", "FORCED", "SKIPPED", "FAILED", "NOT_RUN"]
USER_STATUSES: tuple[str, ...] = UserStatus.__args__  # type: ignore[attr-defined]
NOT_OK = ("FAILED", "SKIPPED", "NOT_RUN")
RUNNING = ("IN-PROGRESS", "WORKING")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a zone (UTC)")
    return value.astimezone(UTC).replace(microsecond=0)  # what the record's format keeps: whole seconds, UTC


Timestamp = Annotated[datetime, AfterValidator(_utc), PlainSerializer(lambda v: iso(v), return_type=str)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # built at first use, not at import


class UserResult(_Frozen):
    status: UserStatus
    reason: str


class BlockRecord(_Frozen):
    definition: str
    module_type: str
    server: str
    environment: str
    organization: str
    action: Literal["PLAN", "APPLY-AUTO", "DESTROY"]
    users: dict[str, UserResult]
    # users whose call to a driver that cannot absorb a second run (idempotent_apply = False) began;
    # after a crash such a user without a result is FAILED, never run again
    started: list[str] = []


class Owner(_Frozen):
    host: str
    pid: int
    started_at: Timestamp


class LedgerRecord(_Frozen):
    record_version: Literal[1] = 1
    job: str
    job_blob: str
    spec_digest: str
    desired_commit: str
    build_id: str
    status: JobStatus
    owner: Owner
    lease_expires_at: Timestamp | None
    created_at: Timestamp | None
    queued_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    on_failure: Literal["skip", "force", "abort"]
    on_interrupt: Literal["resume", "fail"]
    recoveries: int = 0
    epoch: int = 1  # fencing token: a takeover is a compare-and-swap on (build_id, epoch, owner)
    blocks: list[BlockRecord]
    summary: dict[UserStatus, int]
    log: str
    error: str | None
    reconciler_version: str = __version__

    def to_json(self) -> str:
        # byte for byte what json.dumps(indent=2, ensure_ascii=False) writes, serialised in pydantic-core (a
        # build saves its whole record at every checkpoint: the pure-Python indenting encoder cost seconds)
        return self.model_dump_json(indent=2) + "\n"

    @property
    def finished(self) -> bool:
        return self.status in ("SUCCESS", "FAILURE")

    def with_blocks(self, blocks: list[BlockRecord], **changes: Any) -> LedgerRecord:
        return self.model_copy(update={"blocks": blocks, "summary": summarize(blocks), **changes})


def summarize(blocks: list[BlockRecord]) -> dict[UserStatus, int]:
    counts: dict[str, int] = {}
    for block in blocks:
        for result in block.users.values():
            counts[result.status] = counts.get(result.status, 0) + 1
    return {k: counts[k] for k in USER_STATUSES if k in counts}  # type: ignore[misc]


def outcome(blocks: list[BlockRecord], could_start: bool = True) -> JobStatus:
    """SPEC 4: FAILURE if any user FAILED/SKIPPED/NOT_RUN or the job could not start."""
    if not could_start:
        return "FAILURE"
    for block in blocks:
        if any(r.status in NOT_OK for r in block.users.values()):
            return "FAILURE"
    return "SUCCESS"


def new_build_id(job: str, now: datetime | None = None) -> str:
    moment = now or utcnow()
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{job}-{secrets.token_hex(3)}"


class RecordError(Exception):
    """A ledger record that cannot be trusted; the message says why."""


TIMESTAMPS = ("lease_expires_at", "created_at", "queued_at", "started_at", "finished_at")


def check_record(job: str, raw: bytes) -> tuple[str, str, str, str]:
    """Every check `parse_record` makes, without building the model: (job_blob, spec_digest, build_id,
    status) of a good record. The schema covers the shape; the timestamps are parsed as pydantic would."""
    data = _loaded(raw)
    _schema_checked(data)
    try:
        for key in TIMESTAMPS:
            if data[key] is not None:
                datetime.fromisoformat(data[key].replace("Z", "+00:00"))
        datetime.fromisoformat(data["owner"]["started_at"].replace("Z", "+00:00"))
    except (ValueError, TypeError) as exc:
        raise RecordError(f"ledger record is not readable: {exc}") from None
    if data["job"] != job:
        raise RecordError(f"ledger record names job {data['job']!r}, not {job!r}")
    return data["job_blob"], data["spec_digest"], data["build_id"], data["status"]


def _loaded(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"ledger record is not valid JSON ({exc}); the job will not run again") from None


def _schema_checked(data: Any) -> None:
    errors = [] if schemas.is_valid("status", data) else sorted(
        schemas.validator("status").iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise RecordError(f"ledger record does not match status.schema.json at {where}: {first.message[:200]}")


def parse_record(job: str, raw: bytes) -> LedgerRecord:
    data = _loaded(raw)
    _schema_checked(data)
    try:
        record = LedgerRecord.model_validate(data)
    except ValidationError as exc:
        raise RecordError(f"ledger record is not readable: {exc.errors()[0]['msg']}") from None
    if record.job != job:
        raise RecordError(f"ledger record names job {record.job!r}, not {job!r}")
    return record


def listing_state(record: RecordFacts | None, *, exists: bool, valid: bool, modified: bool, suspended: bool,
                  scheduled: bool) -> str:
    """SPEC 4 listing state: what status, /api/jobs and the page show."""
    if record is not None:
        if not exists:
            return "DELETED"
        if modified:
            return "MODIFIED"
        return record.status
    if not valid:
        return "INVALID"
    if suspended:
        return "SUSPENDED"
    if scheduled:
        return "SCHEDULED"
    return "PENDING"


class RecordFacts(Protocol):
    """What planning reads of a record: a `LedgerRecord`, or a cached summary of a checked one."""

    @property
    def job_blob(self) -> str: ...
    @property
    def spec_digest(self) -> str: ...
    @property
    def build_id(self) -> str: ...
    @property
    def status(self) -> str: ...


class Ledger:
    """Every record of the ledger directory at one state, plus the records we cannot trust."""

    def __init__(self, ledger_dir: str) -> None:
        self.dir = ledger_dir
        # may be a lazy mapping (state.LazyRecords) that reads and checks a full record on first access
        self.records: MutableMapping[str, LedgerRecord] = {}
        self.heads: dict[str, RecordFacts] = {}  # job -> summary of a good record, when loaded from the cache
        self.blobs: dict[str, str] = {}  # job -> blob id of its record file
        self.unreadable: dict[str, str] = {}  # job -> why
        self.tampered: dict[str, str] = {}  # job -> why (record removed by a commit we did not make)

    def path(self, job: str) -> str:
        return f"{self.dir}/{job}.json"

    def log_path(self, build_id: str) -> str:
        return f"{self.dir}/logs/{build_id}.log"

    def jobs(self) -> set[str]:
        return set(self.records) | set(self.unreadable)

    def head(self, job: str) -> RecordFacts | None:
        """The record's facts for planning, without reading the full record when a summary is known."""
        found = self.heads.get(job)
        return found if found is not None else self.records.get(job)


def record_paths(entries: dict[str, Any], ledger_dir: str) -> dict[str, str]:
    """job -> path for every `<ledger_dir>/<job>.json` file (logs and other files are not records)."""
    prefix = ledger_dir + "/"
    found = {}
    for path in entries:
        if path.startswith(prefix) and path.endswith(".json") and "/" not in path[len(prefix):]:
            found[path[len(prefix):-5]] = path
    return found
