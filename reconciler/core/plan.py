"""The pure plan: desired state against the ledger at a moment. No I/O, cheap to test exhaustively."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.core import digest
from reconciler.core.gates import dependents, hold_back
from reconciler.core.problems import Problem
from reconciler.core.records import RUNNING, Ledger, RecordFacts, listing_state
from reconciler.core.secrets import SecretEnv, unusable_secrets
from reconciler.core.timeutil import iso
from reconciler.core.validate import Desired, JobFile

NEVER = (1 << 62, "")


def start_key(added: Mapping[str, tuple[Any, ...]], job: str) -> tuple[int, str]:
    """The order jobs start in (oldest first): the commit that added the job file, then the name. Claims follow it,
    so builds claimed in the same second (one claim commit) are recovered in it too."""
    return (int(added.get(job, NEVER)[0]), job)


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
    # rollout control (SPEC 9.4, reconciler.core.gates): jobs held back, why, and when they could run
    waiting: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # job -> why it is WAITING, BLOCKED or FROZEN
    runs_at: dict[str, datetime | None] = field(default_factory=dict)  # frozen/scheduled job -> earliest run
    waits_for: dict[str, tuple[str, ...]] = field(default_factory=dict)  # job -> named jobs not SUCCESS yet

    def block_dependents_of(self, failed: list[str]) -> list[str]:
        """After builds of these jobs ended FAILURE: every job waiting for them is BLOCKED now (SPEC 9.4).
        Returns those jobs. A pass uses it so that what it reports matches what it leaves behind."""
        newly = []
        for job in sorted(failed):
            for name in dependents(self.waits_for, job):
                if self.states.get(name) in ("WAITING", "SCHEDULED", "FROZEN", "PENDING") and name not in newly:
                    for names in (self.waiting, self.frozen, self.scheduled, self.to_run):
                        if name in names:
                            names.remove(name)
                    self.states[name], self.reasons[name] = "BLOCKED", f"blocked: job {job} ended FAILURE"
                    self.blocked.append(name)
                    self.runs_at.pop(name, None)
                    newly.append(name)
        self.blocked.sort()
        return newly

    def wakes_at(self) -> datetime | None:
        """The earliest moment this plan changes by time alone (a run_at or the end of a freeze window)."""
        moments = [m for m in self.runs_at.values() if m is not None]
        return min(moments) if moments else None

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
            "waiting": self.waiting,
            "blocked": self.blocked,
            "frozen": self.frozen,
            "reasons": self.reasons,
            "runs_at": {job: iso(moment) for job, moment in self.runs_at.items()},
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
            runnable.append((start_key(added, name), name))
    result.to_run = [name for _, name in sorted(runnable)]
    _hold_back(result, desired, ledger, now)  # after: and freeze: first, then secrets (SPEC 9.4, 9.1 rule 10)
    result.due, result.to_run = result.to_run, []
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


def _hold_back(result: Plan, desired: Desired, ledger: Ledger, now: datetime) -> None:
    """`after:` and `freeze:` (reconciler.core.gates): due jobs that wait, are blocked or frozen do not run."""
    held = hold_back(desired, ledger, result.states, now)
    for name, state in held.states.items():
        result.states[name] = state
        {"WAITING": result.waiting, "BLOCKED": result.blocked, "FROZEN": result.frozen}[state].append(name)
    for names in (result.waiting, result.blocked, result.frozen):
        names.sort()
    result.scheduled = [name for name in result.scheduled if name not in held.states]
    result.to_run = [name for name in result.to_run if name not in held.states]
    result.problems.extend(held.problems)
    result.reasons, result.runs_at, result.waits_for = held.reasons, held.runs_at, held.waits_for
