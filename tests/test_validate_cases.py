"""The valid/invalid example-file corpus under tests/cases/ (SPEC section 3, rules 1 to 7).

Each case folder is a small deployment repo on disk plus `expect.yaml`: the exact problems
`reconciler validate --format json --repo <case>` must report, as (path, line, code), and nothing
else. Valid cases expect none. Rule 5 and 6 cases carry a ledger record in their own `status/`:
`validate` reads the working tree's ledger. A case may ask for files too big to commit
(`generate:`). Every case runs the CLI's `main` in this process on a copy of the folder; one valid and
one invalid case also run as the real `python -m reconciler` process.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import run_cli, run_main
from tests.support.codes import VALIDATION_CODES as CODES

CASES = Path(__file__).resolve().parent / "cases"
ALL = sorted(p.parent.relative_to(CASES).as_posix() for p in CASES.glob("*/*/expect.yaml"))


def expectation(case: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CASES / case / "expect.yaml").read_text("utf-8"))
    return data


def materialise(case: str, dest: Path) -> Path:
    """Copy the case (symlinks kept as links) and write any generated files."""
    shutil.copytree(CASES / case, dest, symlinks=True, ignore=shutil.ignore_patterns("expect.yaml"))
    for spec in expectation(case).get("generate", []):
        path = dest / spec["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec["line"] * spec["times"], "utf-8")
    return dest


def test_corpus_is_complete() -> None:
    assert len([c for c in ALL if c.startswith("valid/")]) >= 5
    produced = {p["code"] for c in ALL if c.startswith("invalid/") for p in expectation(c)["problems"]}
    assert produced >= CODES, f"codes without an invalid case: {sorted(CODES - produced)}"
    for case in ALL:
        expected = expectation(case)["problems"]
        assert bool(expected) == case.startswith("invalid/"), case


@pytest.mark.parametrize("case", ALL)
def test_case(case: str, tmp_path: Path) -> None:
    check_case(case, tmp_path, run_main)


@pytest.mark.parametrize("case", ["valid/minimal", "invalid/ref-user"])
def test_case_in_a_process(case: str, tmp_path: Path) -> None:
    check_case(case, tmp_path, run_cli)


def check_case(case: str, tmp_path: Path, run: Callable[..., Any]) -> None:
    repo = materialise(case, tmp_path / "repo")
    result = run("validate", "--format", "json", "--repo", str(repo))
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    expected = [(p["path"], p["line"], p["code"]) for p in expectation(case)["problems"]]
    got = [(p["path"], p["line"], p["code"]) for p in report["problems"]]
    assert Counter(got) == Counter(expected), json.dumps(report["problems"], indent=1)
    assert report["valid"] is (not expected)
    assert result.returncode == (1 if expected else 0), result.stderr
    for problem in report["problems"]:
        assert set(problem) == {"path", "line", "message", "code"}
        assert problem["message"] and "\n" not in problem["message"]


def test_text_format_is_path_line_message(tmp_path: Path) -> None:
    repo = materialise("invalid/ref-user", tmp_path / "repo")
    result = run_main("validate", "--repo", str(repo))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("jobs/deploy.yaml:6: ")
    assert "'ghost'" in lines[0] and "REF_USER" in lines[0]
    assert lines[1].startswith("jobs/deploy.yaml:9: ") and "'u2'" in lines[1]
    assert lines[-1] == "2 problem(s) found"


def test_messages_name_what_to_fix(tmp_path: Path) -> None:
    cases = {
        "invalid/token-unconfigured": ("TOKEN_UNCONFIGURED", ["'greeting'", "u2"]),
        "invalid/driver-unknown": ("DRIVER_UNKNOWN", ["'ftp'", "local"]),
        "invalid/yaml-duplicate-key": ("YAML_DUPLICATE_KEY", ["'description'", "line 1"]),
        "invalid/schema-unknown-key": ("SCHEMA", ["'acton'", "action"]),
        "invalid/secret-prefix": ("SECRET_PREFIX", ["'HOME'", "DEPLOY_SECRET_"]),
    }
    for case, (code, words) in cases.items():
        repo = materialise(case, tmp_path / case.replace("/", "-"))
        report = json.loads(run_main("validate", "--format", "json", "--repo", str(repo)).stdout)
        messages = [p["message"] for p in report["problems"] if p["code"] == code]
        assert messages, case
        for word in words:
            assert word in messages[0], (case, messages[0])


def test_secret_default_value_is_not_echoed(tmp_path: Path) -> None:
    repo = materialise("invalid/secret-required", tmp_path / "repo")
    result = run_main("validate", "--repo", str(repo))
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr


def test_validate_on_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = run_main("validate", "--repo", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "no such directory" in result.stderr
    assert "Traceback" not in result.stderr
