"""The real pre-commit tool runs `reconciler validate` from this checkout, offline.

`language: python` makes pre-commit build a virtualenv and `pip install` this checkout into it.
Offline means: no package index (PIP_NO_INDEX), the build backend and the dependencies taken from
the environment running the tests, through PYTHONPATH: in a virtual environment that is the
environment's own site-packages, which the virtualenv's "system site packages" would miss (they
are the base interpreter's).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

from tests.support.cli import run_main
from tests.support.repos import GIT_ENV, ROOT, commit_all, git, write


def offline_env(home: Path) -> dict[str, str]:
    installed = [*site.getsitepackages(), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return {**os.environ, **GIT_ENV, "PRE_COMMIT_HOME": str(home / "pre-commit-cache"), "PIP_NO_INDEX": "1",
            "PIP_NO_BUILD_ISOLATION": "0",  # (sic: pip reads this as --no-build-isolation)
            "PYTHONPATH": os.pathsep.join(filter(None, installed)),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def pre_commit(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240, check=False)


def test_try_repo_validates_a_deployment_repo(tmp_path: Path) -> None:
    repo = tmp_path / "deploy"
    assert run_main("init", str(repo)).returncode == 0
    env = offline_env(tmp_path)
    write(repo, "jobs/broken.yaml", "blocks:\n  - definition: nope\n    server: prod-eu\n    users: all\n")
    git(repo, "add", "-A")
    failed = pre_commit(repo, "try-repo", str(ROOT), "reconciler-validate", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "reconciler validate" in failed.stdout and "Failed" in failed.stdout
    assert "jobs/broken.yaml:2: " in failed.stdout and "[REF_DEFINITION]" in failed.stdout
    git(repo, "rm", "-q", "--cached", "jobs/broken.yaml")
    (repo / "jobs" / "broken.yaml").unlink()
    write(repo, "README.md", "not a resource\n")
    git(repo, "add", "README.md")
    skipped = pre_commit(repo, "try-repo", str(ROOT), "reconciler-validate", env=env)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "(no files to check)Skipped" in skipped.stdout  # `files:` limits it to the deployment folders
    commit_all(repo, "readme")
    passed = pre_commit(repo, "try-repo", str(ROOT), "reconciler-validate", "--all-files", env=env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout


def test_this_repository_validates_its_own_example(tmp_path: Path) -> None:
    clone = tmp_path / "project"
    git(tmp_path, "clone", "-q", str(ROOT), str(clone))
    env = offline_env(tmp_path)
    result = pre_commit(clone, "run", "--all-files", "reconciler-validate", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reconciler validate (the example deployment repo)" in result.stdout and "Passed" in result.stdout
    write(clone, "jobs/zz-bad.yaml", "blocks: []\n")
    git(clone, "add", "jobs/zz-bad.yaml")
    failed = pre_commit(clone, "run", "reconciler-validate", env=env)
    assert failed.returncode == 1
    assert "jobs/zz-bad.yaml:1: " in failed.stdout
