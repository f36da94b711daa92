"""Fuzzing the loader and the validator (hypothesis): random YAML and mutated resource files.

Whatever the bytes, `yamlsafe.load` returns plain data or raises `YamlProblem`, and `load_desired`
plus `plan` return problems (a known code, a file of the repo, a line inside it, one printable
line of text), never an exception. Everything runs in memory over a small `RepoFiles`.
Examples per test: tests/support/fuzz.py (derandomized under CI; `RECONCILER_FUZZ_PROFILE=thorough` for a long run).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from reconciler import drivers
from reconciler.core import schemas, yamlsafe
from reconciler.core.files import MemoryFiles
from reconciler.core.plan import plan
from reconciler.core.records import Ledger
from reconciler.core.settings import Settings
from reconciler.core.validate import load_desired
from tests.support import fuzz
from tests.support.codes import DRIVER_CODES, VALIDATION_CODES
from tests.support.repos import ROOT

FUZZ = fuzz.examples(250, thorough=5000)

# an empty ledger: no ledger problems, and nothing was executed, so nothing can be MODIFIED
KNOWN_CODES = (VALIDATION_CODES - {"MODIFIED", "LEDGER_INVALID"}) | DRIVER_CODES
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

SERVER = """\
environment: test
organization: test-org
driver:
  type: local
  path: .deployments/srv
users:
  - id: u1
    name: User One
  - id: u2
    attributes: {team: a}
"""
DEFINITION = """\
module_type: test/content
description: fuzzed
content: app
content_tokens:
  - name: greeting
    default: hi
parameter_tokens:
  - name: level
    type: integer
    default: 1
  - name: mode
    type: string
    enum: [fast, slow]
    default: fast
  - name: tag
    type: string
    pattern: "v[0-9]+"
    default: v1
  - name: api_key
    type: string
    secret: true
"""
JOB = """\
description: a job
on_failure: abort
run_at: 2026-01-01T00:00:00Z
blocks:
  - definition: app
    server: srv
    action: APPLY-AUTO
    users: [u1, u2]
    content_tokens: {greeting: hello}
    parameter_tokens:
      level: 2
      api_key: {secret: DEPLOY_SECRET_KEY}
    user_tokens:
      u2:
        content_tokens: {greeting: hey}
        parameter_tokens: {mode: slow}
  - definition: app
    server: srv
    users: all
    parameter_tokens: {api_key: {secret: DEPLOY_SECRET_KEY}}
"""
VALID = {"servers/srv.yaml": SERVER, "definitions/app.yaml": DEFINITION, "jobs/job.yaml": JOB}
CONTENT = {"definitions/app/config.json": b'{"greeting": "{{ greeting }}"}\n'}




def check_repo(files: dict[str, bytes]) -> list[Any]:
    """Validate and plan `files`; assert every problem is well-formed. Returns the problems."""
    desired = load_desired(MemoryFiles(files), Settings(), catalog=drivers)
    result = plan(desired, Ledger("status"), NOW, {})
    for problem in result.problems:
        assert problem.code in KNOWN_CODES, problem
        assert problem.path in files, problem
        if problem.line is not None:
            assert 1 <= problem.line <= files[problem.path].count(b"\n") + 1, problem
        text = problem.as_text()
        assert "\n" not in text and text.isprintable(), text
        assert problem.as_json()["message"]
    for name, jf in desired.job_files.items():
        if jf.valid:
            assert name in result.to_run or name in result.scheduled or name in result.suspended
        else:
            assert name in result.invalid
            assert any(p.path == jf.path for p in result.problems), jf.path
    return result.problems


def test_the_unmutated_repo_is_valid() -> None:
    """The seeds must be valid, so that mutations are what break them."""
    assert check_repo({**{k: v.encode() for k, v in VALID.items()}, **CONTENT}) == []


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def load_or_problem(raw: bytes) -> None:
    try:
        doc = yamlsafe.load(raw)
    except yamlsafe.YamlProblem as problem:
        assert problem.code.startswith("YAML_"), problem.code
        assert problem.line is None or problem.line >= 1
        assert "\n" not in problem.message
        return
    assert _plain(doc.data)


YAML_BITS = [
    ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "!", "!!str ", "!!python/object ",
    "!!binary ", "!foo ", "|", ">", "'", '"', "#", "%YAML 1.1\n", "---\n", "...\n", "? ", "<<: ", "\t", "\n",
    "  ", "\\", "\x00", "\ufeff", "é", "a", "1", "0x1F", "1e9", ".nan", "-.inf", "~", "null", "yes", "no",
    "2026-01-01", "{{ x }}", "@", "`", "\r\n",
]
yaml_text = st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=5), max_size=60).map("".join)


@FUZZ
@given(st.binary(max_size=400) | yaml_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_random_yaml_loads_or_is_a_problem(raw: bytes) -> None:
    load_or_problem(raw)


scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(["all", "APPLY-AUTO", "DESTROY", "PLAN", "skip", "../x", "u1", "srv", "app", ".."]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12) | st.sampled_from(
                          ["secret", "name", "type", "default", "users", "content_tokens", "blocks"]),
                          inner, max_size=4), max_leaves=12)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _set(data: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


@st.composite
def mutated_data(draw: st.DrawFn) -> dict[str, bytes]:
    """Change values, delete keys, add keys in parsed files; dump them back as YAML."""
    files = {}
    for path, text in VALID.items():
        data = yaml.safe_load(text)
        for _ in range(draw(st.integers(0, 3))):
            spots = _paths(data)
            spot = draw(st.sampled_from(spots))
            delete = bool(spot) and draw(st.booleans())
            new = draw(values)
            if not delete and isinstance(new, float) and math.isnan(new):
                new = float("inf")
            data = _set(data, spot, new, delete)
        flow = draw(st.sampled_from([None, True, False]))
        files[path] = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True).encode("utf-8")
    return {**files, **CONTENT}


@FUZZ
@given(mutated_data())
def test_fuzz_mutated_data_gives_only_problems(files: dict[str, bytes]) -> None:
    check_repo(files)


@st.composite
def mutated_text(draw: st.DrawFn) -> dict[str, bytes]:
    """Insert, delete and replace characters of the valid files' text."""
    files = {}
    for path, text in VALID.items():
        raw = text.encode("utf-8")
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(raw)))
            cut = draw(st.integers(0, 8))
            bit = draw(st.sampled_from(YAML_BITS) | st.text(max_size=4)).encode("utf-8", "surrogatepass")
            if draw(st.booleans()):
                bit = draw(st.binary(max_size=3)) or bit
            raw = raw[:at] + bit + raw[at + cut:]
        files[path] = raw
    name = draw(st.sampled_from(["job", "Job", "j..b", "j b", "јob", "job.v2", "x" * 64, ".job", "-job"]))
    files[f"jobs/{name}.yaml"] = files.pop("jobs/job.yaml")
    return {**files, **CONTENT}


@FUZZ
@given(mutated_text())
def test_fuzz_mutated_text_gives_only_problems(files: dict[str, bytes]) -> None:
    check_repo(files)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.integers(0, 20))
def test_fuzz_truncated_files_give_only_problems(path: str, keep_percent: int) -> None:
    files = {**{k: v.encode() for k, v in VALID.items()}, **CONTENT}
    files[path] = files[path][: len(files[path]) * keep_percent // 20]
    check_repo(files)


@FUZZ
@given(st.from_regex(schemas.schema("job")["properties"]["run_at"]["pattern"]))
def test_fuzz_run_at_that_matches_the_schema_pattern(run_at: str) -> None:
    """The pattern admits impossible times (2026-02-30, +99:99, year 0): a problem, never a crash."""
    job = JOB.replace("run_at: 2026-01-01T00:00:00Z", f"run_at: {json.dumps(run_at)}")
    check_repo({**{k: v.encode() for k, v in VALID.items()}, **CONTENT, "jobs/job.yaml": job.encode()})


_JOB_DEFS = schemas.schema("job")["$defs"]
_NAME = st.from_regex(_JOB_DEFS["resource_name"]["pattern"])
_USER = st.sampled_from(["u1", "u2"]) | st.from_regex(_JOB_DEFS["user_id"]["pattern"])
_TOKEN = st.sampled_from(["greeting", "level", "mode", "tag", "api_key"]) | st.from_regex(
    _JOB_DEFS["token_name"]["pattern"])
_SECRET = st.sampled_from(["DEPLOY_SECRET_KEY", "DEPLOY_SECRET_UNSET", "HOME"]) | st.from_regex(
    _JOB_DEFS["secret_ref"]["properties"]["secret"]["pattern"])
_VALUE = (st.text(max_size=12) | st.integers() | st.floats(allow_nan=False) | st.booleans()
          | st.sampled_from(["v7", "slow", "{{ greeting }}", "$(id)"]) | st.builds(lambda n: {"secret": n}, _SECRET))
_VALUES = st.dictionaries(_TOKEN, _VALUE, max_size=3)
_BLOCK = st.fixed_dictionaries(
    {"definition": st.just("app") | _NAME, "server": st.just("srv") | _NAME,
     "users": st.just("all") | st.lists(_USER, min_size=1, max_size=3, unique=True)},
    optional={"action": st.sampled_from(["PLAN", "APPLY-AUTO", "DESTROY"]), "content_tokens": _VALUES,
              "parameter_tokens": _VALUES,
              "user_tokens": st.dictionaries(_USER, st.fixed_dictionaries(
                  {}, optional={"content_tokens": _VALUES, "parameter_tokens": _VALUES}), max_size=2)})
_GOOD_VALUES = st.fixed_dictionaries(
    {"api_key": st.just({"secret": "DEPLOY_SECRET_KEY"}) | st.builds(lambda n: {"secret": n}, _SECRET)},
    optional={"level": st.integers(), "mode": st.sampled_from(["fast", "slow"]),
              "tag": st.from_regex(r"\Av[0-9]{1,5}\Z")})
_GOOD_BLOCK = st.fixed_dictionaries(
    {"definition": st.just("app"), "server": st.just("srv"),
     "users": st.just("all") | st.lists(st.sampled_from(["u1", "u2"]), min_size=1, max_size=2, unique=True),
     "parameter_tokens": _GOOD_VALUES},
    optional={"action": st.sampled_from(["PLAN", "APPLY-AUTO", "DESTROY"]),
              "content_tokens": st.fixed_dictionaries({"greeting": _VALUE}),
              "user_tokens": st.dictionaries(st.sampled_from(["u1", "u2"]), st.fixed_dictionaries(
                  {}, optional={"content_tokens": st.fixed_dictionaries({"greeting": _VALUE})}), max_size=2)})
schema_shaped_jobs = st.fixed_dictionaries(
    {"blocks": st.lists(_GOOD_BLOCK | _GOOD_BLOCK | _GOOD_BLOCK | _BLOCK, min_size=1, max_size=3)},
    optional={"on_failure": st.sampled_from(["skip", "force", "abort"]), "suspend": st.booleans(),
              "description": st.text(max_size=20), "retry_of": _NAME,
              "run_at": st.from_regex(schemas.schema("job")["properties"]["run_at"]["pattern"])})


@FUZZ
@given(schema_shaped_jobs)
def test_fuzz_schema_shaped_jobs_validate_and_render(job: dict[str, Any]) -> None:
    """Jobs that pass (or nearly pass) the schema reach the cross-file rules and, when valid, rendering:
    only problems come out, and every recipient of a valid job renders without an exception."""
    from reconciler.core.model import recipients
    from reconciler.core.prepare import ContentCache, prepare_user
    from reconciler.core.redact import Redactor

    files = {**{k: v.encode() for k, v in VALID.items()}, **CONTENT,
             "jobs/job.yaml": json.dumps(job, ensure_ascii=False).encode()}
    check_repo(files)
    desired = load_desired(MemoryFiles(files), Settings(), catalog=drivers)
    parsed = desired.jobs.get("job")
    event("valid job" if parsed is not None else "invalid job")
    if parsed is None:
        return
    redactor = Redactor()
    content = ContentCache(desired)
    for block in parsed.blocks:
        server = desired.servers[block.server]
        definition = desired.definitions[block.definition]
        for uid in recipients(block, server):
            prepared = prepare_user(block, definition, uid, content.of(definition),
                                    {"DEPLOY_SECRET_KEY": "s3cret"}, redactor.add)
            assert prepared.assets is not None
            assert "s3cret" not in json.dumps([prepared.public_parameters, prepared.public_tokens], default=str)


def test_ci_runs_the_same_examples_every_time() -> None:
    """With CI set (as .ci/run does) every hypothesis test is derandomized and writes no example database;
    elsewhere examples are random; RECONCILER_FUZZ_PROFILE names a profile explicitly."""
    probe = ("from hypothesis import settings; from tests.support import fuzz; fuzz.load_profiles(); "
             "print(fuzz.PROFILE, settings.default.derandomize, settings.default.database is None)")

    def profile(**env: str) -> str:
        clean = {k: v for k, v in os.environ.items() if k not in ("CI", "RECONCILER_FUZZ_PROFILE")}
        return subprocess.run([sys.executable, "-c", probe], env={**clean, **env}, cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert profile(CI="true") == "ci True True"
    assert profile() == "dev False False"
    assert profile(CI="true", RECONCILER_FUZZ_PROFILE="thorough") == "thorough False False"
    assert fuzz.examples(250, thorough=5000).max_examples == (5000 if fuzz.PROFILE == "thorough" else 250)
