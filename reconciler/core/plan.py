"""The pure plan: desired state against the ledger at a moment. No I/O, cheap to test exhaustively."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.core import digest
from reconciler.core.problems import Problem
from reconciler.core.records import RUNNING, Ledger, RecordFacts, listing_state
from reconciler.core.secrets import SecretEnv, unusable_secrets
from reconciler.core.validate import Desired, JobFile

NEVER = (1 << 62, "")


@dataclass
class Plan:
    to_run: list[str] = field(default_factory=list)  # oldest first
    #: PENDING jobs not claimed because a secret they read is unset or too short (rule 10), oldest first
    needs_secrets: list[str] = field(default_factory=list)
    #: every PENDING job, oldest first: to_run and needs_secrets together (what the PR check shows)
    due: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)  # records left IN-PROGRESS/WORKING
    scheduled: list[str] = field(default_factory=list)
    suspended: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # listing state of every job

    def as_json(self) -> dict[str, Any]:
        return {
            "valid": not self.problems,
            "to_run": self.to_run,
            "needs_secrets": self.needs_secrets,
            "up_to_date": self.up_to_date,
            "in_flight": self.in_flight,
            "scheduled": self.scheduled,
            "suspended": self.suspended,
            "invalid": self.invalid,
            "modified": self.modified,
            "deleted": self.deleted,
            "problems": [p.as_json() for p in self.problems],
            "states": self.states,
        }


def is_modified(jf: JobFile, record: RecordFacts) -> bool:
    """Rule 5: the job file no longer means what was claimed (a change that makes it invalid counts)."""
    if jf.blob == record.job_blob:
        return False
    if jf.data is None:
        return True
    try:
        same = digest.same_meaning(jf.data, record.spec_digest)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return True
    if same is None:  # written by a newer reconciler with an algorithm we do not know: do not accuse it
        return False
    return not same


def plan(desired: Desired, ledger: Ledger, now: datetime,
         added: dict[str, tuple[int, str]] | None = None, secrets: SecretEnv | None = None) -> Plan:
    """What a pass would do now. `added`: job -> (order of the commit that added it, commit id).

    `secrets`: the lengths of the variables set where the jobs would run; a due job reading one that is
    unset or too short is not claimed (`needs_secrets`, a SECRET_UNSET / SECRET_TOO_SHORT problem).
    None: not judged (the listing, whose state is PENDING either way).
    """
    added = added or {}
    result = Plan(problems=[p for p in desired.problems.sorted()])
    problem_jobs = {jf.name for jf in desired.job_files.values() if jf.problems}
    runnable: list[tuple[tuple[int, str], str]] = []
    for name in sorted(set(desired.job_files) | ledger.jobs() | set(ledger.tampered)):
        jf = desired.job_files.get(name)
        record = ledger.head(name)
        if name in ledger.unreadable:
            result.problems.append(Problem(ledger.path(name), 1, ledger.unreadable[name], "LEDGER_INVALID"))
            result.invalid.append(name)
            result.states[name] = "INVALID"
            continue
        if record is not None and name in ledger.tampered:  # a record edited by hand is not trusted
            result.problems.append(Problem(ledger.path(name), 1, ledger.tampered[name], "LEDGER_TAMPERED"))
            result.invalid.append(name)
            result.states[name] = "INVALID"
            continue
        if record is not None:
            exists = jf is not None
            modified = exists and jf is not None and is_modified(jf, record)
            if modified and jf is not None:
                result.problems = [p for p in result.problems if p.path != jf.path]
                result.problems.append(Problem(jf.path, 1, f"job {name!r} was executed (build {record.build_id}) and "
                                               "has changed since; an executed job is immutable: write a new job "
                                               "instead (see `reconciler retry`)", "MODIFIED"))
                result.modified.append(name)
            elif not exists:
                result.deleted.append(name)
            elif record.status not in RUNNING:
                result.up_to_date.append(name)
            if record.status in RUNNING:  # recovered from its claimed commit, even if edited or deleted since
                result.in_flight.append(name)
            result.states[name] = listing_state(record, exists=exists, valid=True, modified=modified,
                                                suspended=False, scheduled=False)
            continue
        if name in ledger.tampered:
            result.problems.append(Problem(ledger.path(name), None, ledger.tampered[name], "LEDGER_TAMPERED"))
            result.invalid.append(name)
            result.states[name] = "INVALID"
            continue
        assert jf is not None
        job = jf.job
        if job is None or name in problem_jobs:
            result.invalid.append(name)
            result.states[name] = "INVALID"
        elif job.suspend:
            result.suspended.append(name)
            result.states[name] = "SUSPENDED"
        elif job.run_at is not None and job.run_at > now:
            result.scheduled.append(name)
            result.states[name] = "SCHEDULED"
        else:
            result.states[name] = "PENDING"
            runnable.append(((added.get(name, NEVER)[0], name), name))
    result.due = [name for _, name in sorted(runnable)]
    for name in result.due:
        job = desired.job_files[name].job
        unusable = unusable_secrets(job, desired.servers, secrets) if secrets is not None and job else []
        if unusable:
            result.needs_secrets.append(name)
            result.problems += [Problem(desired.job_files[name].path, None, message, code)
                                for code, message in unusable]
        else:
            result.to_run.append(name)
    result.problems.sort(key=Problem.sort_key)
    return result
