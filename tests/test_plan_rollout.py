"""Property tests of the plan's rollout gates (hypothesis): `after:` and `freeze:` (SPEC 9.4).

Repos are generated as files and loaded like a pass loads them; the ledger is built in memory.
Properties: a job never runs before everything it names in `after` has a SUCCESS record; a job
frozen now never runs; every cycle of `after` is reported; running pass after pass (with random
outcomes) never breaks the order and always ends with nothing left to run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler import drivers
from reconciler.core.files import MemoryFiles
from reconciler.core.gates import dependents
from reconciler.core.plan import plan
from reconciler.core.records import Ledger
from reconciler.core.settings import parse_settings
from reconciler.core.validate import Desired, load_desired
from tests.support.records import record_for

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)  # a Friday
SERVER = ("environment: {env}\norganization: o\ndriver: {{type: local, path: .deployments/{name}}}\n"
          "users: [{{id: u1}}, {{id: u2}}]\n")
FILES = {"servers/srv.yaml": SERVER.format(env="prod", name="srv").encode(),
         "servers/lab.yaml": SERVER.format(env="lab", name="lab").encode(),
         "definitions/app.yaml": b"module_type: t/x\ncontent: app\ncontent_tokens: [{name: greeting}]\n",
         "definitions/app/a.txt": b"hello {{ greeting }}\n"}
FREEZE = {  # windows holding "prod" at NOW, one that has ended, one that has not begun, a weekly one
    "now": "freeze:\n  - {from: 2026-11-20T00:00:00Z, to: 2026-11-21T00:00:00Z, environments: [prod], reason: r}\n",
    "past": "freeze:\n  - {from: 2026-11-01T00:00:00Z, to: 2026-11-02T00:00:00Z, reason: r}\n",
    "future": "freeze:\n  - {from: 2026-12-01T00:00:00Z, to: 2026-12-02T00:00:00Z, reason: r}\n",
    "weekly": "freeze:\n  - weekly: {day: FRI, at: '10:00', for: 64h}\n    environments: [prod]\n",
    "none": "",
}
FROZEN_NOW = {"now", "weekly"}
LEDGER = ("none", "none", "none", "SUCCESS", "FAILURE", "WORKING", "modified")


@dataclass(frozen=True)
class Spec:
    name: str
    after: tuple[str, ...]
    server: str
    ledger: str  # none | SUCCESS | FAILURE | WORKING | modified
    suspend: bool
    valid: bool


def text(spec: Spec, changed: bool = False) -> str:
    lines = [f"after: [{', '.join(spec.after)}]"] if spec.after else []
    if spec.suspend:
        lines.append("suspend: true")
    if changed:
        lines.append("description: changed after it ran")
    lines += ["blocks:", "  - definition: app", f"    server: {spec.server if spec.valid else 'nowhere'}",
              "    users: all", "    content_tokens: {greeting: hi}"]
    return "\n".join(lines) + "\n"


@st.composite
def repos(draw: st.DrawFn) -> tuple[list[Spec], str]:
    names = [f"j{i}" for i in range(draw(st.integers(1, 7)))]
    specs = []
    for i, name in enumerate(names):
        # mostly chains and trees (earlier jobs), sometimes anything: cycles, unknown names
        pool = names[:i] if i and draw(st.integers(0, 4)) else [*names, "ghost", "j0x"]
        after = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True))
        specs.append(Spec(name, tuple(after), draw(st.sampled_from(["srv", "lab"])), draw(st.sampled_from(LEDGER)),
                          draw(st.integers(0, 6)) == 0, draw(st.integers(0, 8)) > 0))
    return specs, draw(st.sampled_from(sorted(FREEZE)))


def build(specs: list[Spec], freeze: str) -> tuple[Desired, Ledger]:
    settings = parse_settings(FREEZE[freeze].encode() or None)[0]
    files = {**FILES, **{f"jobs/{s.name}.yaml": text(s, s.ledger == "modified").encode() for s in specs}}
    if FREEZE[freeze]:
        files["reconciler.yaml"] = FREEZE[freeze].encode()
    desired = load_desired(MemoryFiles(files), settings, catalog=drivers)
    claimed = load_desired(MemoryFiles({**FILES, **{f"jobs/{s.name}.yaml": text(s).encode() for s in specs}}),
                           settings, catalog=drivers)
    ledger = Ledger("status")
    for s in specs:
        if s.ledger != "none" and s.valid and claimed.job_files[s.name].job is not None:
            status = "SUCCESS" if s.ledger == "modified" else s.ledger
            ledger.records[s.name] = record_for(s.name, text(s), claimed, status)
    return desired, ledger


def succeeded(ledger: Ledger, desired: Desired, name: str) -> bool:
    record = ledger.records.get(name)
    if record is None or record.status != "SUCCESS":
        return False
    jf = desired.job_files.get(name)
    return jf is None or jf.blob == record.job_blob  # not MODIFIED


def on_cycle(specs: list[Spec], desired: Desired, ledger: Ledger) -> set[str]:
    """Jobs that reach themselves through `after` among valid jobs that have not run (an independent oracle)."""
    unrun = {s.name: s for s in specs if s.name not in ledger.records and desired.job_files[s.name].valid}
    found = set()
    for start in unrun:
        seen, todo = set(), [d for d in unrun[start].after if d in unrun]
        while todo:
            node = todo.pop()
            if node == start:
                found.add(start)
                break
            if node not in seen:
                seen.add(node)
                todo += [d for d in unrun[node].after if d in unrun]
    return found


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


CHAIN = [Spec("j0", (), "srv", "SUCCESS", False, True), Spec("j1", ("j0",), "srv", "none", False, True),
         Spec("j2", ("j1",), "lab", "none", False, True)]


@SETTINGS
@given(repos())
@example((CHAIN, "none"))
def test_a_job_never_runs_before_everything_it_waits_for_is_success(repo: tuple[list[Spec], str]) -> None:
    specs, freeze = repo
    desired, ledger = build(specs, freeze)
    result = plan(desired, ledger, NOW)
    by_name = {s.name: s for s in specs}
    for name in result.to_run:
        assert all(succeeded(ledger, desired, dep) for dep in by_name[name].after), (name, result.states)


@SETTINGS
@given(repos())
def test_a_frozen_job_is_never_run_and_says_until_when(repo: tuple[list[Spec], str]) -> None:
    specs, freeze = repo
    desired, ledger = build(specs, freeze)
    result = plan(desired, ledger, NOW)
    for spec in specs:
        if freeze in FROZEN_NOW and spec.server == "srv":
            assert spec.name not in result.to_run
    for name in result.frozen:
        assert result.states[name] == "FROZEN" and "frozen until" in result.reasons[name]
        assert result.runs_at[name] is not None and result.runs_at[name] > NOW  # type: ignore[operator]
        assert plan(desired, ledger, result.runs_at[name]).states[name] != "FROZEN"  # type: ignore[arg-type]
    if freeze not in FROZEN_NOW:
        assert result.frozen == []


@SETTINGS
@given(repos())
def test_every_cycle_is_reported_and_nothing_on_it_runs(repo: tuple[list[Spec], str]) -> None:
    specs, freeze = repo
    desired, ledger = build(specs, freeze)
    result = plan(desired, ledger, NOW)
    cycle = on_cycle(specs, desired, ledger)
    reported = {p.path for p in result.problems if p.code == "AFTER_CYCLE"}
    assert reported == {f"jobs/{name}.yaml" for name in cycle}
    assert not cycle & set(result.to_run)
    for name in cycle:
        assert result.states[name] in ("BLOCKED", "SUSPENDED")


@SETTINGS
@given(repos())
def test_listing_states_of_held_jobs(repo: tuple[list[Spec], str]) -> None:
    specs, freeze = repo
    desired, ledger = build(specs, freeze)
    result = plan(desired, ledger, NOW)
    for spec in specs:
        state = result.states[spec.name]
        if state == "BLOCKED":
            assert spec.name in result.blocked and result.reasons[spec.name].startswith("blocked: ")
            codes = {p.code for p in result.problems if p.path == f"jobs/{spec.name}.yaml"}
            assert codes & {"AFTER_BLOCKED", "AFTER_CYCLE"}
        if state == "WAITING":
            assert spec.name in result.waiting and result.reasons[spec.name].startswith("waiting for ")
            assert result.waits_for[spec.name]
        if state in ("PENDING", "FROZEN") and spec.after:
            assert all(succeeded(ledger, desired, dep) for dep in spec.after)
        bad = [d for d in spec.after if d in ("ghost", "j0x") or (d in ledger.records and (
            ledger.records[d].status == "FAILURE" or (not succeeded(ledger, desired, d)
            and ledger.records[d].status == "SUCCESS")))]
        if bad and state not in ("INVALID", "SUSPENDED") and spec.name not in ledger.records:
            assert state == "BLOCKED", (spec, state, bad)
        assert set(result.waiting) | set(result.blocked) | set(result.frozen) <= set(result.states)


@SETTINGS
@given(repos(), st.lists(st.booleans(), min_size=8, max_size=8))
@example(([replace(CHAIN[0], ledger="none"), *CHAIN[1:]], "none"), [True] * 8)
def test_passes_one_after_another_keep_the_order_and_finish(repo: tuple[list[Spec], str],
                                                           outcomes: list[bool]) -> None:
    """Run the plan pass after pass, each job ending SUCCESS or FAILURE at random, the freeze over."""
    specs, _ = repo
    desired, ledger = build(specs, "none")
    finished_before: set[str] = set(ledger.records)
    for step in range(len(specs) + 1):
        result = plan(desired, ledger, NOW)
        by_name = {s.name: s for s in specs}
        for name in result.to_run:  # against the ledger the plan saw, before this pass adds to it
            assert all(succeeded(ledger, desired, d) for d in by_name[name].after), (name, result.states)
        for name in result.to_run:
            jf = desired.job_files[name]
            content = desired.files.read_many([jf.path])[jf.path].decode()
            ledger.records[name] = record_for(name, content, desired,
                                              "SUCCESS" if outcomes[step % len(outcomes)] else "FAILURE")
        if not result.to_run:
            break
    final = plan(desired, ledger, NOW)
    assert final.to_run == []
    for name in final.waiting:  # left waiting only on something that will not move by itself
        assert all(final.states.get(d) in ("SUSPENDED", "WORKING", "WAITING", "IN-PROGRESS")
                   for d in final.waits_for[name]), (name, final.states)
    assert finished_before <= set(ledger.records)


def test_a_chain_waits_then_blocks_at_the_failure() -> None:
    specs = [Spec("a", (), "srv", "none", False, True), Spec("b", ("a",), "srv", "none", False, True),
             Spec("c", ("b",), "srv", "none", False, True)]
    desired, ledger = build(specs, "none")
    first = plan(desired, ledger, NOW)
    assert first.to_run == ["a"] and first.states == {"a": "PENDING", "b": "WAITING", "c": "WAITING"}
    assert first.reasons["b"] == "waiting for a (PENDING)" and first.reasons["c"] == "waiting for b (WAITING)"
    assert first.problems == []
    ledger.records["a"] = record_for("a", text(specs[0]), desired, "SUCCESS")
    second = plan(desired, ledger, NOW)
    assert second.to_run == ["b"] and second.states["c"] == "WAITING"
    ledger.records["b"] = record_for("b", text(specs[1]), desired, "FAILURE")
    third = plan(desired, ledger, NOW)
    assert third.to_run == [] and third.states["c"] == "BLOCKED"
    assert third.reasons["c"] == "blocked: job b ended FAILURE"
    [problem] = third.problems
    assert (problem.path, problem.line, problem.code) == ("jobs/c.yaml", 1, "AFTER_BLOCKED")
    assert "reconciler retry b" in problem.message


def test_unknown_deleted_and_cycle() -> None:
    specs = [Spec("a", ("ghost",), "srv", "none", False, True), Spec("b", ("c",), "srv", "none", False, True),
             Spec("c", ("b",), "srv", "none", False, True), Spec("d", ("b",), "srv", "none", False, True),
             Spec("e", ("e",), "srv", "none", False, True)]
    desired, ledger = build(specs, "none")
    result = plan(desired, ledger, NOW)
    assert result.to_run == []
    assert result.states == {"a": "BLOCKED", "b": "BLOCKED", "c": "BLOCKED", "d": "BLOCKED", "e": "BLOCKED"}
    assert result.reasons["b"] == "blocked: after: forms a cycle (b -> c -> b)"
    assert result.reasons["e"] == "blocked: after: forms a cycle (e -> e)"
    assert result.reasons["d"] == "blocked: job b is on a cycle of after:"
    assert "does not exist" in result.reasons["a"]
    assert sorted((p.path, p.code) for p in result.problems) == [
        ("jobs/a.yaml", "AFTER_BLOCKED"), ("jobs/b.yaml", "AFTER_CYCLE"), ("jobs/c.yaml", "AFTER_CYCLE"),
        ("jobs/d.yaml", "AFTER_BLOCKED"), ("jobs/e.yaml", "AFTER_CYCLE")]


def test_a_job_that_ran_and_was_deleted_still_satisfies_after() -> None:
    a, b = Spec("a", (), "srv", "none", False, True), Spec("b", ("a",), "srv", "none", False, True)
    desired, _ = build([a, b], "none")
    ledger = Ledger("status")
    ledger.records["a"] = record_for("a", text(a), desired, "SUCCESS")
    without_a, _ = build([b], "none")
    result = plan(without_a, ledger, NOW)
    assert result.states == {"a": "DELETED", "b": "PENDING"} and result.to_run == ["b"]


def test_frozen_job_runs_at_the_first_moment_after_the_window() -> None:
    specs = [Spec("a", (), "srv", "none", False, True), Spec("b", (), "lab", "none", False, True)]
    desired, ledger = build(specs, "weekly")  # FRI 10:00 for 64h: until MON 02:00
    result = plan(desired, ledger, NOW)
    assert result.to_run == ["b"] and result.frozen == ["a"]
    thaw = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    assert result.runs_at["a"] == thaw and result.wakes_at() == thaw
    assert result.reasons["a"] == "frozen until 2026-11-23T02:00:00Z on prod: deployment freeze"
    assert plan(desired, ledger, thaw - timedelta(seconds=1)).frozen == ["a"]
    assert plan(desired, ledger, thaw).to_run == ["a", "b"]


def test_dependents_are_what_a_finished_job_releases_or_blocks() -> None:
    specs = [Spec("a", (), "srv", "none", False, True), Spec("b", ("a",), "srv", "none", False, True),
             Spec("c", ("b",), "srv", "none", False, True), Spec("d", (), "srv", "none", False, True)]
    desired, ledger = build(specs, "none")
    result = plan(desired, ledger, NOW)
    assert dependents(result.waits_for, "a") == ["b", "c"]
    assert dependents(result.waits_for, "b") == ["c"] and dependents(result.waits_for, "d") == []
    ledger.records["a"] = record_for("a", text(specs[0]), desired, "FAILURE")
    after = plan(desired, ledger, NOW)
    assert [name for name in dependents(result.waits_for, "a") if after.states[name] == "BLOCKED"] == ["b", "c"]
