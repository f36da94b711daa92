"""The shipped JSON Schemas: valid 2020-12 schemas, one source of truth, and the ledger model agrees.

`schemas/status.schema.json` and the pydantic `LedgerRecord` describe the same record. The
reader (`parse_record`) applies the schema first and the model second, the writer is the model:
so the two must name the same fields at every level, require the same fields, and accept and
refuse the same records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from reconciler.core import schemas
from reconciler.core.package_data import data_dir
from reconciler.core.records import BlockRecord, LedgerRecord, Owner, RecordError, UserResult, parse_record
from tests.support.cli import run_main
from tests.support.repos import ROOT

SHIPPED = ["job", "definition", "server", "status", "settings"]
STATUS = json.loads((ROOT / "schemas" / "status.schema.json").read_text("utf-8"))
METASCHEMA = "https://json-schema.org/draft/2020-12/schema"

# Fields the model fills in itself when a record is built in memory (`LedgerRecord(...)` in the
# reconciler) but the schema demands on disk: every record the model writes carries them.
MODEL_DEFAULTED_SCHEMA_REQUIRED = {"record_version", "reconciler_version"}
# Always written, optional when read (records from before crash recovery counted recoveries, or
# before fencing tokens: a v1 record without an epoch is epoch 1).
OPTIONAL_ON_DISK = {"recoveries", "epoch"}


@pytest.mark.parametrize("kind", SHIPPED)
def test_schema_is_valid_against_the_2020_12_metaschema(kind: str) -> None:
    schema = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text("utf-8"))
    assert schema["$schema"] == METASCHEMA
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/{kind}.schema.json")
    assert schema["additionalProperties"] is False  # unknown keys are problems (rule 2)


def test_exactly_the_five_schemas_are_shipped() -> None:
    found = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    assert found == sorted(f"{k}.schema.json" for k in SHIPPED)
    assert set(schemas.KINDS) == set(SHIPPED)


def test_the_package_reads_the_top_level_schemas() -> None:
    shipped = data_dir("schemas")
    assert Path(str(shipped)).resolve() == (ROOT / "schemas").resolve()
    for kind in SHIPPED:
        on_disk = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text("utf-8"))
        assert schemas.schema(kind) == on_disk


def test_pyproject_ships_the_top_level_folders_as_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    for name in ("schemas", "servers", "definitions", "jobs"):
        assert f'"reconciler._data.{name}" = "{name}"' in text


def test_the_wheel_contains_the_schemas_byte_for_byte(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, check=False,
                         cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for kind in SHIPPED:
            packed = zf.read(f"reconciler/_data/schemas/{kind}.schema.json")
            assert packed == (ROOT / "schemas" / f"{kind}.schema.json").read_bytes()
        names = zf.namelist()
    assert any(n.startswith("reconciler/_data/jobs/") and n.endswith(".yaml") for n in names)


def test_deployment_repo_copies_of_schemas_are_ignored(tmp_path: Path, make_repo: Any) -> None:
    """Validation always uses the shipped schemas, never a copy found in the deployment repo."""
    repo = make_repo(jobs={"j": "extra: 1\nblocks:\n  - {definition: app, server: srv, users: all, "
                                "content_tokens: {greeting: hi}}\n"})
    permissive = {"$schema": METASCHEMA, "type": "object"}
    (repo / "schemas").mkdir()
    for kind in SHIPPED:
        (repo / "schemas" / f"{kind}.schema.json").write_text(json.dumps(permissive))
    result = run_main("validate", "--format", "json", "--repo", str(repo))
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert [(p["path"], p["line"], p["code"]) for p in problems] == [("jobs/j.yaml", 1, "SCHEMA")]


# ------------------------------------------------------------------ LedgerRecord <-> status.schema.json
def _props(schema: dict[str, Any]) -> set[str]:
    return set(schema["properties"])


def _fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def _required(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.is_required()}


NESTED = [
    (LedgerRecord, STATUS),
    (Owner, STATUS["properties"]["owner"]),
    (BlockRecord, STATUS["$defs"]["block"]),
    (UserResult, STATUS["$defs"]["block"]["properties"]["users"]["additionalProperties"]),
]


@pytest.mark.parametrize("model, schema", NESTED, ids=[m.__name__ for m, _ in NESTED])
def test_model_and_schema_name_the_same_fields(model: type[BaseModel], schema: dict[str, Any]) -> None:
    assert _fields(model) == _props(schema)
    assert schema.get("additionalProperties") is False
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True


@pytest.mark.parametrize("model, schema", NESTED, ids=[m.__name__ for m, _ in NESTED])
def test_model_and_schema_require_the_same_fields(model: type[BaseModel], schema: dict[str, Any]) -> None:
    required = set(schema.get("required", []))
    if model is LedgerRecord:
        assert required == _required(model) | MODEL_DEFAULTED_SCHEMA_REQUIRED
        assert _fields(model) - required == OPTIONAL_ON_DISK
    else:
        assert required == _required(model)
        # `started` is written only for drivers that cannot absorb a second run (crash recovery)
        assert _fields(model) - required == ({"started"} if model is BlockRecord else set())


def test_status_enums_agree() -> None:
    from reconciler.core.records import USER_STATUSES

    assert tuple(STATUS["$defs"]["user_status"]["enum"]) == USER_STATUSES
    for name in ("status", "on_failure", "on_interrupt"):
        literal = LedgerRecord.model_fields[name].annotation
        assert set(STATUS["properties"][name]["enum"]) == set(literal.__args__)  # type: ignore[union-attr]
    action = BlockRecord.model_fields["action"].annotation
    assert set(STATUS["$defs"]["block"]["properties"]["action"]["enum"]) == set(action.__args__)  # type: ignore[union-attr]


def _record(**changes: Any) -> LedgerRecord:
    moment = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    base: dict[str, Any] = dict(
        job="deploy", job_blob="a" * 40, spec_digest="v1:sha256:" + "b" * 64, desired_commit="c" * 40,
        build_id="20261121T120000Z-deploy-abc123", status="SUCCESS",
        owner=Owner(host="h", pid=12, started_at=moment), lease_expires_at=None, created_at=moment,
        queued_at=moment, started_at=moment, finished_at=moment, on_failure="skip", on_interrupt="resume",
        blocks=[BlockRecord(definition="app", module_type="t/x", server="srv", environment="e",
                            organization="o", action="APPLY-AUTO",
                            users={"u1": UserResult(status="DEPLOYED", reason="ok")})],
        summary={"DEPLOYED": 1}, log="status/logs/20261121T120000Z-deploy-abc123.log", error=None,
    )
    base.update(changes)
    return LedgerRecord(**base)


def test_a_model_record_validates_and_round_trips() -> None:
    record = _record()
    data = json.loads(record.to_json())
    assert list(Draft202012Validator(STATUS).iter_errors(data)) == []
    assert set(data) == _props(STATUS)
    assert parse_record("deploy", record.to_json().encode()) == record


def _violations() -> list[tuple[str, Any]]:
    good = json.loads(_record().to_json())

    def changed(path: list[Any], value: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps(good))
        node = data
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return data

    return [
        ("unknown key", changed(["surprise"], 1)),
        ("missing job", changed(["job"], _DELETE)),
        ("missing build_id", changed(["build_id"], _DELETE)),
        ("missing blocks", changed(["blocks"], _DELETE)),
        ("bad status", changed(["status"], "DONE")),
        ("bad on_failure", changed(["on_failure"], "retry")),
        ("bad user status", changed(["blocks", 0, "users", "u1", "status"], "OK")),
        ("user result without reason", changed(["blocks", 0, "users", "u1", "reason"], _DELETE)),
        ("unknown block key", changed(["blocks", 0, "colour"], "red")),
        ("owner pid not an int", changed(["owner", "pid"], "twelve")),
        ("owner without host", changed(["owner", "host"], _DELETE)),
        ("timestamp not a time", changed(["queued_at"], "yesterday")),
        ("naive timestamp", changed(["started_at"], "2026-11-21T12:00:00")),
        ("summary not counts", changed(["summary"], {"DEPLOYED": "one"})),
        ("summary with unknown status", changed(["summary"], {"GREAT": 1})),
        ("record_version 2", changed(["record_version"], 2)),
        ("blocks not a list", changed(["blocks"], {})),
        ("error not a string", changed(["error"], 3)),
    ]


_DELETE = object()


@pytest.mark.parametrize("label, data", _violations(), ids=[label for label, _ in _violations()])
def test_a_violating_record_is_rejected_by_schema_model_and_reader(label: str, data: dict[str, Any]) -> None:
    assert list(Draft202012Validator(STATUS).iter_errors(data)), label
    with pytest.raises(ValidationError):
        LedgerRecord.model_validate(data)
    with pytest.raises(RecordError):
        parse_record("deploy", json.dumps(data).encode())


@pytest.mark.parametrize("label, change", [
    ("without record_version", lambda d: d.pop("record_version")),
    ("without reconciler_version", lambda d: d.pop("reconciler_version")),
    ("time with an offset", lambda d: d.update(queued_at="2026-11-21T14:00:00+02:00")),
])
def test_schema_only_strictness_still_rejects_through_the_reader(label: str, change: Any) -> None:
    """The model is lenient where it can fill in or normalise; the reader still refuses (schema first)."""
    data = json.loads(_record().to_json())
    change(data)
    assert list(Draft202012Validator(STATUS).iter_errors(data)), label
    with pytest.raises(RecordError):
        parse_record("deploy", json.dumps(data).encode())


def test_record_without_epoch_is_epoch_one() -> None:
    data = json.loads(_record().to_json())
    del data["epoch"]
    assert parse_record("deploy", json.dumps(data).encode()).epoch == 1


def test_record_without_recoveries_is_readable() -> None:
    data = json.loads(_record().to_json())
    del data["recoveries"]
    assert parse_record("deploy", json.dumps(data).encode()).recoveries == 0


_name = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")
_uid = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_@-]{0,15}\Z")
_text = st.text(max_size=40)
_moment = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0))
_user_status = st.sampled_from(["DEPLOYED", "UNCHANGED", "PLANNED", "DESTROYED", "FORCED", "SKIPPED",
                                "FAILED", "NOT_RUN"])
_blocks = st.lists(st.builds(
    BlockRecord, definition=_name, module_type=_text, server=_name, environment=_text, organization=_text,
    action=st.sampled_from(["PLAN", "APPLY-AUTO", "DESTROY"]),
    users=st.dictionaries(_uid, st.builds(UserResult, status=_user_status, reason=_text), max_size=4),
), max_size=3)


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(bytes.hex)


@st.composite
def _records(draw: st.DrawFn) -> LedgerRecord:
    job = draw(_name)
    moment = draw(_moment)
    suffix = draw(_hex(3))
    build_id = f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{job}-{suffix}"
    blocks = draw(_blocks)
    from reconciler.core.records import summarize

    return LedgerRecord(
        job=job, job_blob=draw(_hex(20)), spec_digest="v1:sha256:" + draw(_hex(32)),
        desired_commit=draw(_hex(20)), build_id=build_id,
        status=draw(st.sampled_from(["IN-PROGRESS", "WORKING", "SUCCESS", "FAILURE"])),
        owner=Owner(host=draw(st.text(min_size=1, max_size=20)), pid=draw(st.integers(1, 2**22)),
                    started_at=moment),
        lease_expires_at=draw(st.none() | _moment), created_at=draw(st.none() | _moment), queued_at=moment,
        started_at=draw(st.none() | _moment), finished_at=draw(st.none() | _moment),
        on_failure=draw(st.sampled_from(["skip", "force", "abort"])),
        on_interrupt=draw(st.sampled_from(["resume", "fail"])), recoveries=draw(st.integers(0, 5)),
        blocks=blocks, summary=summarize(blocks), log=f"status/logs/{build_id}.log",
        error=draw(st.none() | _text),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records())
def test_generated_model_records_validate_against_the_schema(record: LedgerRecord) -> None:
    text = record.to_json()
    data = json.loads(text)
    assert list(Draft202012Validator(STATUS).iter_errors(data)) == []
    assert parse_record(record.job, text.encode()) == record


def test_records_of_a_real_reconcile_validate(example_repo: Path) -> None:
    result = run_main("reconcile", "--repo", str(example_repo))
    assert result.returncode == 0, result.stderr
    records = sorted((example_repo / "status").glob("*.json"))
    assert len(records) == 2
    validator = Draft202012Validator(STATUS)
    for path in records:
        data = json.loads(path.read_text("utf-8"))
        assert list(validator.iter_errors(data)) == []
        record = LedgerRecord.model_validate(data)
        assert record.to_json() == path.read_text("utf-8")  # canonical: reading and writing agree
        assert (example_repo / record.log).is_file()


# ------------------------------------------------------------------------------ the example repo
def test_the_projects_own_example_repo_validates() -> None:
    result = run_main("validate", "--format", "json", "--repo", str(ROOT))
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["problems"] == []
    assert report["jobs"] >= 3 and report["servers"] >= 2 and report["definitions"] >= 2


def test_init_writes_a_valid_example(example_repo: Path) -> None:
    result = run_main("validate", "--format", "json", "--repo", str(example_repo))
    assert result.returncode == 0, result.stdout
    for top in ("servers", "definitions", "jobs"):
        shipped = sorted(p.name for p in (ROOT / top).glob("*.yaml"))
        assert sorted(p.name for p in (example_repo / top).glob("*.yaml")) == shipped


@pytest.mark.parametrize("change", [
    lambda d: None,
    lambda d: d.update(queued_at="2026-02-30T00:00:00Z"),  # matches the pattern, is no real time
    lambda d: d["owner"].update(started_at="2026-13-01T00:00:00Z"),
    lambda d: d.update(job="another-job"),
    lambda d: d.update(status="DONE"),
    lambda d: d.pop("build_id"),
], ids=["good", "impossible-date", "impossible-owner-date", "other-job", "bad-status", "missing-key"])
def test_the_fast_record_check_agrees_with_the_model(change: Callable[[dict[str, Any]], None]) -> None:
    """`check_record` (validate, cold loads: no model built) accepts exactly what `parse_record` accepts."""
    from reconciler.core.records import check_record

    data = json.loads(_record().to_json())
    change(data)
    raw = json.dumps(data).encode()
    try:
        model = parse_record("deploy", raw)
    except RecordError:
        with pytest.raises(RecordError):
            check_record("deploy", raw)
        return
    assert check_record("deploy", raw) == (model.job_blob, model.spec_digest, model.build_id, model.status)
