"""Fuzzing histories (hypothesis): jobs added, edited, deleted and re-added, ledger records removed
or broken by hand, passes (some crashing mid-job) interleaved, through the pure plan and a simulated
ledger. No job is ever planned twice, and every record the simulated reconciler writes validates
against schemas/status.schema.json and reads back through the ledger parser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from reconciler import drivers
from reconciler.core import schemas
from reconciler.core.files import MemoryFiles
from reconciler.core.model import recipients
from reconciler.core.plan import Plan, plan
from reconciler.core.records import (
    BlockRecord,
    Ledger,
    LedgerRecord,
    Owner,
    UserResult,
    new_build_id,
    outcome,
    parse_record,
)
from reconciler.core.settings import Settings
from reconciler.core.validate import Desired, load_desired
from tests.support import fuzz

FUZZ = fuzz.examples(200, thorough=3000)

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BASE = {
    "servers/srv.yaml": b"environment: e\norganization: o\ndriver: {type: local, path: .deployments/srv}\n"
                        b"users: [{id: u1}, {id: u2}]\n",
    "definitions/app.yaml": b"module_type: t/x\ncontent: app\ncontent_tokens: [{name: greeting}]\n",
    "definitions/app/a.txt": b"{{ greeting }}\n",
}
VARIANTS = {
    "v1": "blocks:\n  - definition: app\n    server: srv\n    users: all\n    content_tokens: {greeting: hi}\n",
    # the same meaning as v1, written differently: never MODIFIED
    "v1-rewritten": "# same job\nblocks: [{users: 'all', content_tokens: {greeting: \"hi\"}, server: srv, "
                    "definition: app, action: APPLY-AUTO}]\non_failure: skip\r\n",
    "v2": "blocks:\n  - definition: app\n    server: srv\n    users: [u2]\n    content_tokens: {greeting: yo}\n",
    "suspended": "suspend: true\nblocks:\n  - definition: app\n    server: srv\n    users: all\n"
                 "    content_tokens: {greeting: hi}\n",
    "later": "run_at: 2026-11-21T12:30:00Z\nblocks:\n  - definition: app\n    server: srv\n    users: [u1]\n"
             "    content_tokens: {greeting: hi}\n",
    "invalid": "blocks:\n  - definition: app\n    server: nowhere\n    users: all\n",
    "broken-yaml": "blocks: [\n",
}
NAMES = ("a", "b", "c")




@dataclass
class World:
    """The branch (job files, who added what when) and the ledger, as a reconciler would see them."""

    files: dict[str, bytes] = field(default_factory=lambda: dict(BASE))
    ledger: Ledger = field(default_factory=lambda: Ledger("status"))
    added: dict[str, tuple[int, str]] = field(default_factory=dict)
    seq: int = 0
    now: datetime = START
    claimed: list[str] = field(default_factory=list)  # every job ever claimed, in order
    # the desired state each claim was made from (its desired_commit): recovery resumes exactly that,
    # even when the job file was edited or deleted since
    claimed_from: dict[str, Desired] = field(default_factory=dict)

    def path(self, name: str) -> str:
        return f"jobs/{name}.yaml"

    def write(self, name: str, variant: str) -> None:
        self.seq += 1
        if self.path(name) not in self.files:
            self.added[name] = (self.seq, f"{self.seq:040x}")
        self.files[self.path(name)] = VARIANTS[variant].encode()

    def desired(self) -> Desired:
        return load_desired(MemoryFiles(dict(self.files)), Settings(), catalog=drivers)

    def record(self, desired: Desired, name: str, status: str) -> LedgerRecord:
        jf = desired.job_files[name]
        assert jf.job is not None
        blocks = []
        for block in jf.job.blocks:
            server = desired.servers[block.server]
            definition = desired.definitions[block.definition]
            users = {uid: UserResult(status="DEPLOYED", reason="deployed") for uid in recipients(block, server)}
            if status != "SUCCESS":
                users = {}
            blocks.append(BlockRecord(definition=definition.name, module_type=definition.module_type,
                                      server=server.name, environment=server.environment,
                                      organization=server.organization, action=block.action, users=users))
        build = new_build_id(name, self.now)
        base = LedgerRecord(
            job=name, job_blob=jf.blob, spec_digest=jf.job.spec_digest, desired_commit="f" * 40, build_id=build,
            status="IN-PROGRESS", owner=Owner(host="sim", pid=1, started_at=self.now),
            lease_expires_at=self.now + timedelta(minutes=10), created_at=self.now, queued_at=self.now,
            started_at=None, finished_at=None, on_failure=jf.job.on_failure,  # type: ignore[arg-type]
            on_interrupt="resume", blocks=[], summary={}, log=f"status/logs/{build}.log", error=None)
        if status == "IN-PROGRESS":
            return base
        return base.with_blocks(blocks, status=outcome(blocks), started_at=self.now, finished_at=self.now,
                                lease_expires_at=None)

    def store(self, record: LedgerRecord) -> None:
        data = json.loads(record.to_json())
        errors = list(schemas.validator("status").iter_errors(data))
        assert not errors, errors[0].message
        assert parse_record(record.job, record.to_json().encode()) == record
        self.ledger.records[record.job] = record

    def run_pass(self, crash: bool) -> Plan:
        desired = self.desired()
        result = plan(desired, self.ledger, self.now, self.added)
        check_plan(self, desired, result)
        for name in result.in_flight:  # recovery finishes what a crashed pass claimed; it never re-claims
            self.store(self.record(self.claimed_from[name], name, "SUCCESS"))
        for index, name in enumerate(result.to_run):
            self.claimed.append(name)
            self.claimed_from[name] = desired
            if crash and index == len(result.to_run) - 1:
                self.store(self.record(desired, name, "IN-PROGRESS"))
                break
            self.store(self.record(desired, name, "SUCCESS"))
        self.now += timedelta(minutes=7)
        return result


def check_plan(world: World, desired: Desired, result: Plan) -> None:
    for name in result.to_run:
        assert name not in world.claimed, f"{name} planned a second time"
        assert name not in world.ledger.records and name not in world.ledger.unreadable
        assert name not in world.ledger.tampered
        jf = desired.job_files[name]
        assert jf.valid and jf.job is not None and not jf.job.suspend
        assert jf.job.run_at is None or jf.job.run_at <= world.now
    assert set(result.to_run).isdisjoint(result.in_flight)
    everyone = set(desired.job_files) | set(world.ledger.records) | set(world.ledger.unreadable) \
        | set(world.ledger.tampered)
    assert set(result.states) == everyone
    for name, record in world.ledger.records.items():
        jf = desired.job_files.get(name)
        if name in world.ledger.tampered:  # edited by hand: never trusted, never resumed
            assert result.states[name] == "INVALID" and name not in result.in_flight
        elif jf is None:
            assert result.states[name] == "DELETED"
        elif jf.blob == record.job_blob or (jf.job is not None and jf.job.spec_digest == record.spec_digest):
            assert result.states[name] == record.status
        else:
            assert result.states[name] == "MODIFIED"
            assert any(p.code == "MODIFIED" and p.path == jf.path for p in result.problems)
    for name in world.ledger.tampered:
        if name not in world.ledger.records and name not in world.ledger.unreadable:
            assert result.states[name] == "INVALID"
            assert any(p.code == "LEDGER_TAMPERED" for p in result.problems)


operation = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.sampled_from(sorted(VARIANTS))),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.just("")),
    st.tuples(st.just("pass"), st.just(""), st.sampled_from(["", "crash"])),
    st.tuples(st.just("remove-record"), st.sampled_from(NAMES), st.just("")),
    st.tuples(st.just("break-record"), st.sampled_from(NAMES), st.just("")),
    st.tuples(st.just("edit-record"), st.sampled_from(NAMES), st.just("")),
)


@FUZZ
@given(st.lists(operation, min_size=1, max_size=25))
def test_fuzz_histories_never_plan_a_job_twice(operations: list[tuple[str, str, str]]) -> None:
    world = World()
    for op, name, arg in [*operations, ("later", "", ""), ("pass", "", ""), ("pass", "", "")]:
        if op == "write":
            world.write(name, arg)
        elif op == "delete":
            world.files.pop(world.path(name), None)
        elif op == "later":
            world.now += timedelta(hours=1)
        elif op == "pass":
            world.run_pass(crash=arg == "crash")
        elif op == "remove-record" and name in world.ledger.records:  # a human commit without the trailer
            del world.ledger.records[name]
            world.ledger.tampered[name] = "removed by hand"
        elif op == "edit-record" and name in world.ledger.records:  # e.g. set WORKING to force a resume
            world.ledger.records[name] = world.ledger.records[name].model_copy(update={"status": "WORKING"})
            world.ledger.tampered[name] = "changed by hand"
        elif op == "break-record" and name in world.ledger.records:
            del world.ledger.records[name]
            world.ledger.unreadable[name] = "hand-edited"
    assert len(world.claimed) == len(set(world.claimed))
    # after the closing passes (past every run_at) nothing valid and due is left behind, and a claim is left
    # running only when its job changed or went away meanwhile (never resumed then: doubt means do not deploy)
    final = world.run_pass(crash=False)
    assert final.to_run == []
    for name, record in world.ledger.records.items():
        if record.status in ("IN-PROGRESS", "WORKING"):
            assert final.states[name] in ("MODIFIED", "DELETED", "INVALID"), (name, final.states[name])


def test_a_rewritten_job_is_not_modified_and_a_changed_one_is() -> None:
    """The simulation itself can fail: the seed history gives the expected states."""
    world = World()
    world.write("a", "v1")
    assert world.run_pass(crash=False).to_run == ["a"]
    world.write("a", "v1-rewritten")
    assert world.run_pass(crash=False).states["a"] == "SUCCESS"
    world.write("a", "v2")
    result = world.run_pass(crash=False)
    assert result.states["a"] == "MODIFIED" and result.to_run == []
    world.files.pop("jobs/a.yaml")
    del world.ledger.records["a"]
    world.ledger.tampered["a"] = "removed by hand"
    world.write("a", "v1")
    result = world.run_pass(crash=False)
    assert result.to_run == [] and result.states["a"] == "INVALID"
