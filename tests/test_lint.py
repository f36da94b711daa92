"""ruff and strict mypy stay clean: checked in CI like every other behaviour."""

from __future__ import annotations

import subprocess
import sys

from tests.support.repos import ROOT


def test_ruff_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_layers_are_kept() -> None:
    """The import-linter contracts in pyproject.toml: commands > web | triggers > run > ledger > drivers > core."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 broken" in proc.stdout and "kept" in proc.stdout, proc.stdout


def test_oldest_constraints_are_the_claimed_lower_bounds() -> None:
    """.ci/oldest tests exactly the lower bounds pyproject.toml claims: one pin per bounded dependency."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    claimed = {}
    for text in [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]:
        requirement = Requirement(text)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        if lower:
            claimed[canonicalize_name(requirement.name)] = Version(lower[0])
    lines = (ROOT / ".ci" / "oldest-constraints.txt").read_text("utf-8").splitlines()
    pinned = {canonicalize_name(name): Version(version) for line in lines if line and not line.startswith("#")
              for name, version in [line.split("==")]}
    assert pinned == claimed
