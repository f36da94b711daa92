"""Property tests of the pure plan (hypothesis): desired state and ledger built in memory, no git, no I/O.

Repos are generated as files (`load_desired` over an in-memory `RepoFiles`), so the plan sees
exactly what a pass would: blob ids, digests, validation problems.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import drivers
from reconciler.core.files import MemoryFiles
from reconciler.core.plan import NEVER, Plan, plan
from reconciler.core.records import Ledger
from reconciler.core.settings import Settings
from reconciler.core.timeutil import iso
from reconciler.core.validate import Desired, load_desired
from tests.support.records import record_for

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
SERVER = (b"environment: e\norganization: o\ndriver: {type: local, path: .deployments/srv}\n"
          b"users: [{id: u1}, {id: u2}]\n")
DEFINITION = b"module_type: t/x\ncontent: app\ncontent_tokens: [{name: greeting}]\n"
CONTENT = b"hello {{ greeting }}\n"




@dataclass(frozen=True)
class JobSpec:
    name: str
    valid: bool
    suspend: bool
    run_at: timedelta | None  # offset from NOW
    ledger: str  # none | executed | rewritten | modified | running | unreadable | tampered
    order: int | None  # position of the commit that added it; None: unknown


def job_text(spec: JobSpec, variant: str = "original") -> str:
    """The job file. `rewritten`: same meaning, other text; `changed`: another meaning."""
    server = "srv" if spec.valid else "nowhere"
    lines = []
    if variant == "rewritten":
        lines.append("# rewritten: comment, flow style, quoting, key order")
    if spec.suspend:
        lines.append("suspend: true")
    if spec.run_at is not None:
        lines.append(f"run_at: {iso(NOW + spec.run_at)}")
    if variant == "changed":
        lines.append("description: changed after it ran")
    if variant == "rewritten":
        lines.append(f"blocks: [{{users: 'all', server: \"{server}\", definition: app, "
                     "content_tokens: {greeting: 'hi'}}]")
    else:
        lines += ["blocks:", "  - definition: app", f"    server: {server}", "    users: all",
                  "    content_tokens:", "      greeting: hi"]
    return "\n".join(lines) + "\n"




def base_files() -> dict[str, bytes]:
    return {"servers/srv.yaml": SERVER, "definitions/app.yaml": DEFINITION, "definitions/app/a.txt": CONTENT}


def build(specs: list[JobSpec]) -> tuple[Desired, Ledger, dict[str, tuple[int, str]]]:
    """The repo as it is now, and the ledger left by earlier passes."""
    files = base_files()
    originals = {}
    for spec in specs:
        variant = {"rewritten": "rewritten", "modified": "changed"}.get(spec.ledger, "original")
        files[f"jobs/{spec.name}.yaml"] = job_text(spec, variant).encode()
        originals[spec.name] = job_text(spec)
    desired = load_desired(MemoryFiles(files), Settings(), catalog=drivers)
    # what the jobs looked like when they were claimed (only valid jobs are ever claimed)
    claimed = load_desired(MemoryFiles({**base_files(), **{f"jobs/{s.name}.yaml": originals[s.name].encode()
                                                           for s in specs if s.valid}}), Settings(), catalog=drivers)
    ledger = Ledger("status")
    for spec in specs:
        if spec.ledger in ("executed", "rewritten", "modified", "running") and spec.valid:
            status = "WORKING" if spec.ledger == "running" else "SUCCESS"
            ledger.records[spec.name] = record_for(spec.name, originals[spec.name], claimed, status)
        elif spec.ledger == "unreadable":
            ledger.unreadable[spec.name] = "ledger record is not valid JSON"
        elif spec.ledger == "tampered":
            ledger.tampered[spec.name] = "ledger record was removed by a commit the reconciler did not make"
    added = {s.name: (s.order, f"c{s.order}") for s in specs if s.order is not None}
    return desired, ledger, added


NAMES = st.lists(st.from_regex(r"\A[a-z][a-z0-9-]{0,8}\Z"), min_size=1, max_size=7, unique=True)
OFFSETS = st.one_of(st.none(), st.just(timedelta(0)),
                    st.integers(-10**8, 10**8).filter(lambda s: s != 0).map(lambda s: timedelta(seconds=s)))
LEDGER_KINDS = st.sampled_from(["none", "none", "executed", "rewritten", "modified", "running", "unreadable",
                                "tampered"])


@st.composite
def repos(draw: st.DrawFn) -> list[JobSpec]:
    names = draw(NAMES)
    orders = draw(st.permutations(list(range(len(names)))))
    specs = []
    for name, order in zip(names, orders, strict=True):
        specs.append(JobSpec(
            name=name, valid=draw(st.integers(0, 3)) > 0, suspend=draw(st.integers(0, 3)) == 0,
            run_at=draw(OFFSETS), ledger=draw(LEDGER_KINDS),
            order=order if draw(st.integers(0, 5)) else None,  # mostly known; sometimes not (e.g. no history)
        ))
    return specs


def due(spec: JobSpec) -> bool:
    return spec.run_at is None or spec.run_at <= timedelta(0)


def expected_to_run(specs: list[JobSpec]) -> list[str]:
    runnable = [s for s in specs if s.valid and not s.suspend and due(s) and s.ledger == "none"]
    last = NEVER[0]  # a job whose adding commit is unknown runs after the others
    return [s.name for s in sorted(runnable, key=lambda s: (last if s.order is None else s.order, s.name))]


SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(repos())
def test_exactly_the_due_valid_unclaimed_jobs_run_in_commit_order(specs: list[JobSpec]) -> None:
    desired, ledger, added = build(specs)
    result = plan(desired, ledger, NOW, added)
    assert result.to_run == expected_to_run(specs)


@SETTINGS
@given(repos())
def test_jobs_that_must_not_run_are_never_planned(specs: list[JobSpec]) -> None:
    desired, ledger, added = build(specs)
    result = plan(desired, ledger, NOW, added)
    for spec in specs:
        executed = spec.valid and spec.ledger in ("executed", "rewritten", "modified", "running")
        never = (executed or not spec.valid or spec.suspend or not due(spec)
                 or spec.ledger in ("unreadable", "tampered"))
        if never:
            assert spec.name not in result.to_run, spec


@SETTINGS
@given(repos())
def test_listing_state_of_every_job(specs: list[JobSpec]) -> None:
    desired, ledger, added = build(specs)
    result = plan(desired, ledger, NOW, added)
    assert set(result.states) == {s.name for s in specs}
    for spec in specs:
        state = result.states[spec.name]
        if spec.ledger in ("unreadable", "tampered"):
            assert state == "INVALID"
        elif spec.valid and spec.ledger == "modified":
            assert state == "MODIFIED"
            assert spec.name in result.modified
            assert any(p.code == "MODIFIED" and p.path == f"jobs/{spec.name}.yaml" for p in result.problems)
        elif spec.valid and spec.ledger in ("executed", "rewritten"):
            assert state == "SUCCESS"  # comments, key order, quoting, flow style do not count
            assert spec.name in result.up_to_date
        elif spec.valid and spec.ledger == "running":
            assert state == "WORKING"
            assert spec.name in result.in_flight
        elif not spec.valid:
            assert state == "INVALID"
        elif spec.suspend:
            assert state == "SUSPENDED"
        elif not due(spec):
            assert state == "SCHEDULED"
        else:
            assert state == "PENDING"


def apply(result: Plan, desired: Desired, ledger: Ledger) -> Ledger:
    """What a pass leaves behind: a finished record for every job it ran."""
    after = copy.deepcopy(ledger)
    for name in result.to_run:
        jf = desired.job_files[name]
        text = desired.files.read_many([jf.path])[jf.path].decode()
        after.records[name] = record_for(name, text, desired, "FAILURE" if len(name) % 2 else "SUCCESS")
    return after


@SETTINGS
@given(repos())
def test_plan_of_an_unchanged_repo_after_applying_it_is_empty(specs: list[JobSpec]) -> None:
    desired, ledger, added = build(specs)
    first = plan(desired, ledger, NOW, added)
    after = apply(first, desired, ledger)
    second = plan(desired, after, NOW, added)
    assert second.to_run == []
    assert set(first.to_run) <= set(second.up_to_date)
    later = plan(desired, after, NOW + timedelta(days=1), added)  # time passing never re-runs an executed job
    assert not set(first.to_run) & set(later.to_run)


@SETTINGS
@given(repos(), st.integers(1, 10**6))
def test_an_executed_job_is_never_planned_again_whatever_the_time(specs: list[JobSpec], seconds: int) -> None:
    desired, ledger, added = build(specs)
    after = apply(plan(desired, ledger, NOW, added), desired, ledger)
    for moment in (NOW - timedelta(seconds=seconds), NOW, NOW + timedelta(seconds=seconds)):
        result = plan(desired, after, moment, added)
        assert not set(result.to_run) & set(after.records)


@SETTINGS
@given(repos())
def test_plan_is_pure(specs: list[JobSpec]) -> None:
    desired, ledger, added = build(specs)
    records = dict(ledger.records)
    problems = list(desired.problems.items)
    one = plan(desired, ledger, NOW, added)
    two = plan(desired, ledger, NOW, added)
    assert one == two
    assert ledger.records == records and desired.problems.items == problems


@SETTINGS
@given(repos())
def test_future_jobs_become_due_when_their_time_comes(specs: list[JobSpec]) -> None:
    desired, ledger, added = build(specs)
    latest = max((s.run_at for s in specs if s.run_at is not None), default=timedelta(0))
    result = plan(desired, ledger, NOW + max(latest, timedelta(0)), added)
    expected = [s for s in specs if s.valid and not s.suspend and s.ledger == "none"]
    assert sorted(result.to_run) == sorted(s.name for s in expected)
    assert result.scheduled == []


def test_order_is_by_commit_then_name() -> None:
    specs = [JobSpec(n, True, False, None, "none", o) for n, o in
             [("zeta", 1), ("alpha", 2), ("beta", 1), ("gamma", None), ("aaa", None)]]
    desired, ledger, added = build(specs)
    assert plan(desired, ledger, NOW, added).to_run == ["beta", "zeta", "alpha", "aaa", "gamma"]
