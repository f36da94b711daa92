"""The installed `reconciler` command as a real process: what the in-process runs through `main(argv)`
(tests/support/cli.py) cannot see: the console script, start-up, exit codes and streams of a process.
Those in-process runs are trusted because both ways give the same answers here."""

from __future__ import annotations

import json
import subprocess
import sysconfig
from pathlib import Path

import pytest

from reconciler import __version__
from tests.support.cli import run_main
from tests.support.repos import write

SCRIPT = Path(sysconfig.get_path("scripts")) / "reconciler"


def installed(*args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install the project (python3 -m pip install -e '.[test]')"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_console_script_runs_the_cli() -> None:
    result = installed("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"reconciler {__version__}")
    usage = installed("no-such-command")
    assert usage.returncode == 2 and usage.stdout == ""
    assert "invalid choice" in usage.stderr and "Traceback" not in usage.stderr


def test_a_first_deployment_through_the_console_script(tmp_path: Path) -> None:
    repo = tmp_path / "deploy"
    assert installed("init", str(repo)).returncode == 0
    reconciled = installed("reconcile", "--repo", str(repo))
    assert reconciled.returncode == 0, reconciled.stderr
    assert " SUCCESS (build " in reconciled.stdout
    assert all(line.startswith("{") for line in reconciled.stderr.splitlines())  # events are JSON on a pipe
    rows = json.loads(installed("status", "--format", "json", "--repo", str(repo)).stdout)
    assert {row["status"] for row in rows} >= {"SUCCESS"}


@pytest.mark.parametrize("command", [["validate"], ["validate", "--format", "json"], ["plan", "--format", "json"],
                                     ["status"], ["status", "--format", "json"]])
def test_in_process_and_in_a_process_give_the_same_answer(tmp_path: Path, command: list[str]) -> None:
    repo = tmp_path / "deploy"
    assert run_main("init", str(repo)).returncode == 0
    write(repo, "jobs/broken.yaml", "blocks:\n  - definition: nope\n    server: prod-eu\n    users: all\n")
    by_process = installed(*command, "--repo", str(repo))
    in_process = run_main(*command, "--repo", str(repo))
    assert (in_process.returncode, in_process.stdout, in_process.stderr) == (
        by_process.returncode, by_process.stdout, by_process.stderr)
