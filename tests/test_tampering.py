"""SPEC 9.1 rule 6, tampering wherever it hides: a ledger record or log changed by any commit the
reconciler did not make is LEDGER_TAMPERED, also inside merge and octopus merges, and the job never runs
again; a human's ordinary `git pull` (a merge bringing the reconciler's status commits) is not tampering.

Real repositories, real merges made by git, the real CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import run_main
from tests.support.repos import commit_all, git, write

MakeRepo = Callable[..., Path]
JOB = "blocks:\n  - {definition: app, server: srv, users: all, content_tokens: {greeting: hi}}\n"


def reconcile(repo: Path, *args: str) -> tuple[int, str]:
    result = run_main("reconcile", "--repo", str(repo), *args)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def deployments(repo: Path) -> dict[str, str]:
    """build id per user of the manifests the local driver left: a second run would change them."""
    found = {}
    for manifest in sorted((repo / ".deployments/srv").glob("*/app/.deployment.json")):
        found[manifest.parent.parent.name] = json.loads(manifest.read_text("utf-8"))["build_id"]
    return found


def states(repo: Path) -> dict[str, str]:
    out = run_main("status", "--format", "json", "--repo", str(repo)).stdout
    return {j["job"]: j["status"] for j in json.loads(out)}


def assert_tampered(repo: Path, job: str, before: dict[str, str]) -> None:
    code, out = reconcile(repo)
    assert code == 1, out
    assert "LEDGER_TAMPERED" in out and job in out, out
    assert deployments(repo) == before, "the job ran again"
    assert states(repo)[job] == "INVALID"
    code, out = reconcile(repo)  # and on every later pass
    assert code == 1 and "LEDGER_TAMPERED" in out and deployments(repo) == before


def executed(make_repo: MakeRepo) -> tuple[Path, str, dict[str, str]]:
    """A repo whose job `rollout` ran; returns (repo, the commit before its status commits, deployments)."""
    repo = make_repo(jobs={"rollout": JOB})
    fork = git(repo, "rev-parse", "HEAD").strip()
    assert reconcile(repo)[0] == 0
    return repo, fork, deployments(repo)


def test_a_record_deleted_inside_a_merge_is_tampering(make_repo: MakeRepo) -> None:
    repo, fork, before = executed(make_repo)
    git(repo, "checkout", "-q", "-b", "side", fork)
    write(repo, "README.md", "a side branch\n")
    commit_all(repo, "side work")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "--no-commit", "side")
    git(repo, "rm", "-q", "status/rollout.json")
    git(repo, "commit", "-q", "-m", "merge side")
    assert not git(repo, "show", "--name-status", "--format=", "HEAD").strip()  # git log shows no files here
    assert_tampered(repo, "rollout", before)


def test_a_record_reverted_inside_a_merge_is_tampering(make_repo: MakeRepo) -> None:
    """The merge takes the record as it was claimed (IN-PROGRESS): a recovery would deploy again."""
    repo, _, before = executed(make_repo)
    claim = git(repo, "log", "--format=%H", "--reverse", "--", "status/rollout.json").split()[0]
    git(repo, "checkout", "-q", "-b", "side", claim)
    write(repo, "README.md", "from the claim\n")
    commit_all(repo, "side work")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "--no-commit", "side")
    git(repo, "checkout", claim, "--", "status/rollout.json")
    git(repo, "commit", "-q", "-m", "merge side")
    assert json.loads((repo / "status/rollout.json").read_text("utf-8"))["status"] == "IN-PROGRESS"
    assert_tampered(repo, "rollout", before)


def test_a_log_edited_inside_an_octopus_merge_is_tampering(make_repo: MakeRepo) -> None:
    repo, fork, before = executed(make_repo)
    log = json.loads((repo / "status/rollout.json").read_text("utf-8"))["log"]
    for name in ("a", "b"):
        git(repo, "checkout", "-q", "-b", name, fork)
        write(repo, f"{name}.txt", name)
        commit_all(repo, f"branch {name}")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "--no-commit", "a", "b")
    (repo / log).write_text("nothing happened here\n", "utf-8")
    git(repo, "add", log)
    git(repo, "commit", "-q", "-m", "octopus")
    assert len(git(repo, "rev-list", "--parents", "-n1", "HEAD").split()) == 4
    assert_tampered(repo, "rollout", before)


def test_a_log_deleted_by_a_plain_commit_is_tampering(make_repo: MakeRepo) -> None:
    repo, _, before = executed(make_repo)
    log = json.loads((repo / "status/rollout.json").read_text("utf-8"))["log"]
    git(repo, "rm", "-q", log)
    git(repo, "commit", "-q", "-m", "tidy up logs")
    assert_tampered(repo, "rollout", before)


def test_an_ordinary_pull_is_not_tampering(tmp_path: Path, make_repo: MakeRepo) -> None:
    """A human commits locally while the reconciler pushes status commits, then `git pull` (a merge whose
    second parent brings them) and pushes: nothing is tampered with, and the human's new job runs."""
    src = make_repo(jobs={"first": JOB})
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    bot, human = tmp_path / "bot", tmp_path / "human"
    git(tmp_path, "clone", "-q", str(bare), str(bot))
    git(tmp_path, "clone", "-q", str(bare), str(human))
    write(human, "jobs/second.yaml", JOB)
    commit_all(human, "a second job")
    assert reconcile(bot, "--remote", "origin")[0] == 0  # pushes the status commits of `first`
    git(human, "pull", "-q", "--no-rebase", "--no-edit", "origin", "main")
    assert len(git(human, "rev-list", "--parents", "-n1", "HEAD").split()) == 3  # a real merge
    git(human, "push", "-q", "origin", "main")
    code, out = reconcile(bot, "--remote", "origin")
    assert code == 0, out
    assert "LEDGER_TAMPERED" not in out and "second: SUCCESS" in out
    assert states(bot) == {"first": "SUCCESS", "second": "SUCCESS"}
    code, out = reconcile(bot, "--remote", "origin")
    assert code == 0 and "nothing to do" in out


def test_a_merge_that_only_brings_status_commits_from_a_side_is_clean(make_repo: MakeRepo) -> None:
    """The reconciler ran on a side branch that a human merges back (both sides changed other files)."""
    repo = make_repo(jobs={"rollout": JOB})
    git(repo, "checkout", "-q", "-b", "human")
    write(repo, "README.md", "human work\n")
    commit_all(repo, "human work")
    git(repo, "checkout", "-q", "main")
    assert reconcile(repo)[0] == 0
    before = deployments(repo)
    git(repo, "checkout", "-q", "human")
    git(repo, "merge", "-q", "--no-edit", "main")
    code, out = reconcile(repo, "--branch", "human")
    assert code == 0 and "LEDGER_TAMPERED" not in out, out
    assert deployments(repo) == before
