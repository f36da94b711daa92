"""The documentation stays true: the format examples validate, the tables are complete, the links resolve.

The README keeps what a user needs first; the reference lives in docs/*.md (formats, commands, ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from reconciler.core.records import USER_STATUSES, LedgerRecord
from tests.support.cli import run_main
from tests.support.codes import DRIVER_CODES, HISTORY_CODES, VALIDATION_CODES
from tests.support.repos import ROOT

README = (ROOT / "README.md").read_text("utf-8")
DOCS = {path.name: path.read_text("utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}


def section(name: str, text: str) -> str:
    match = re.search(rf"<!-- section: {name} -->(.*?)<!-- /section: {name} -->", text, re.S)
    assert match is not None, name
    return match.group(1)


FORMATS = section("formats", DOCS["formats.md"])
CAPTIONED = re.compile(r"^`([^`\s]+)`:\n```[a-z]*\n(.*?)^```$", re.S | re.M)


def table_first_column(text: str, header: str) -> set[str]:
    """The back-quoted names in the first column of the table whose header row starts with `header`."""
    start = text.index(f"| {header} |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return {m.group(1) for row in rows for m in [re.match(r"\| `([^`]+)`", row)] if m}


def test_the_format_examples_form_a_valid_deployment_repo(tmp_path: Path) -> None:
    files = CAPTIONED.findall(FORMATS)
    paths = [p for p, _ in files]
    assert {"reconciler.yaml", "servers/prod-eu.yaml", "definitions/sales-dashboard.yaml"} <= set(paths)
    assert any(p.startswith("jobs/") for p in paths)
    for rel, text in files:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
    result = run_main("validate", "--format", "json", "--repo", str(tmp_path))
    report = json.loads(result.stdout)
    assert result.returncode == 0, report["problems"]
    assert report["jobs"] == 1 and report["servers"] == 1 and report["definitions"] == 1


def test_every_problem_code_is_documented() -> None:
    documented = table_first_column(FORMATS, "Code")
    assert documented >= VALIDATION_CODES | HISTORY_CODES | DRIVER_CODES


def test_every_ledger_field_is_documented() -> None:
    start = FORMATS.index("| Field |")
    table = FORMATS[start:FORMATS.index("\n\n", start)]
    for field in LedgerRecord.model_fields:
        assert f"`{field}`" in table, field


def test_every_user_result_and_listing_state_is_documented() -> None:
    assert set(USER_STATUSES) <= table_first_column(FORMATS, "Result")
    states = {"PENDING", "SCHEDULED", "SUSPENDED", "INVALID", "IN-PROGRESS", "WORKING", "SUCCESS", "FAILURE",
              "MODIFIED", "DELETED"}
    assert table_first_column(FORMATS, "State") == states


def test_every_command_is_documented() -> None:
    from reconciler.cli import command_names

    reference = section("commands", DOCS["commands.md"])
    for name in command_names():
        assert f"| `{name}" in reference, name
        assert f"| `{name}" in README, name  # the README's table at a glance


def test_readme_starts_with_the_two_commands() -> None:
    first = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert first[0].startswith("python3 -m pip install . && ") and "reconciler init" in first[0]
    assert "reconciler reconcile" in first[0] and first[0].endswith("reconciler status --repo \"$d\"")
    assert first[1] == "python3 -m pip install -q -e '.[test]' && python3 -m pytest -q"


def test_links_between_the_readme_and_docs_resolve() -> None:
    pages = {ROOT / "README.md": README} | {ROOT / "docs" / name: text for name, text in DOCS.items()}
    for page, text in pages.items():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
    for name in DOCS:  # every page is reachable: from the README, or from a page the README links
        assert f"](docs/{name}" in README or any(f"]({name}" in text for text in DOCS.values()), name


# the README and the reference moved out of it (other pages are their authors' to keep)
REFERENCE = ("formats.md", "commands.md", "drivers.md", "triggers.md", "web.md", "guarantees.md", "security.md",
             "performance.md", "development.md", "benchmarks-reads.md")


def test_no_citation_of_spec_rules_that_do_not_ship() -> None:
    for name, text in {"README.md": README, **{n: DOCS[n] for n in REFERENCE}}.items():
        assert not re.search(r"\bSPEC\b|\brules? [0-9]", text), name


def test_ci_runs_the_readme_test_command_in_a_fresh_venv() -> None:
    """The README's second command is the test command, and .ci/run runs exactly it, in a new venv."""
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = first_block.group(1).strip().splitlines()
    assert commands[1] == "python3 -m pip install -q -e '.[test]' && python3 -m pytest -q"
    script = (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
    assert script[-1] == commands[1]
    assert any(line.startswith("python3 -m venv ") for line in script)
    assert any(line.startswith(". ") and "/bin/activate" in line for line in script)
    assert any(line.startswith("apt-get update") for line in script)
