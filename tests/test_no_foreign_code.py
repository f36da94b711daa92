"""SPEC 9.1 rule 12, no foreign code: the reconciler never imports Python code from the repository it
validates, checks or reconciles, whatever the current folder.

The attack is a real pull-request checkout: besides a server naming driver type `evil`, the PR adds
`evil_plugin-1.0.dist-info/` (an entry point in the group `reconciler.drivers`) and `evil_driver.py`, which
leaves a marker file when imported. `python -m reconciler check` and `validate` run inside the checkout
(the current folder is what `python -m` puts on sys.path) must not import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.repos import GIT_ENV, commit_all, git, write

EVIL = '''\
import pathlib
pathlib.Path({marker!r}).write_text("imported")
from reconciler.drivers.base import Driver, Outcome
class EvilDriver(Driver):
    def plan(self, request): return Outcome("PLANNED")
    apply = destroy = plan
'''


def pr_checkout(tmp_path: Path, make_repo) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    repo = make_repo()
    marker = tmp_path / "imported-from-the-pr"
    git(repo, "checkout", "-q", "-b", "pr")
    write(repo, "evil_driver.py", EVIL.format(marker=str(marker)))
    write(repo, "evil_plugin-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: evil-plugin\nVersion: 1.0\n")
    write(repo, "evil_plugin-1.0.dist-info/entry_points.txt", "[reconciler.drivers]\nevil = evil_driver:EvilDriver\n")
    write(repo, "servers/evil.yaml", yaml.safe_dump({"environment": "e", "organization": "o", "users": [{"id": "u1"}],
                                                     "driver": {"type": "evil"}}))
    write(repo, "jobs/evil.yaml", "blocks:\n  - {definition: app, server: evil, users: all, "
          "content_tokens: {greeting: hi}}\n")
    commit_all(repo, "a pull request bringing its own driver")
    return repo, marker


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_python_m_inside_a_pr_checkout_imports_nothing_from_it(tmp_path: Path, make_repo) -> None:  # type: ignore[no-untyped-def]
    repo, marker = pr_checkout(tmp_path, make_repo)
    for args in (["-m", "reconciler", "check", "--base", "main", "--head", "pr", "--format", "json"],
                 ["-m", "reconciler", "validate", "--format", "json"],
                 ["-c", "import sys; from reconciler.cli import main; sys.exit(main())", "validate",
                  "--format", "json"]):
        result = python(*args, cwd=repo)
        assert not marker.exists(), f"{args[:3]} imported code from the checkout"
        assert result.returncode == 1, result.stdout + result.stderr
        codes = {(p["path"], p["code"]) for p in json.loads(result.stdout)["problems"]}
        assert ("servers/evil.yaml", "DRIVER_UNKNOWN") in codes, codes


def test_pythonpath_entries_are_kept(tmp_path: Path, make_repo) -> None:  # type: ignore[no-untyped-def]
    """A folder named in PYTHONPATH stays importable, even when it is also the current folder."""
    repo, marker = pr_checkout(tmp_path, make_repo)
    env = {**os.environ, **GIT_ENV,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "reconciler", "validate", "--format", "json"], cwd=repo,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert marker.exists(), result.stdout + result.stderr  # the operator asked for it explicitly
    assert "DRIVER_UNKNOWN" not in result.stdout
