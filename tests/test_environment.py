"""Environment errors stop the pass, never the job; a clone converges after any crash (issue 12).

Stale lock files (in the clone and in the remote), a full disk and a read-only file system are real:
the disk is a small tmpfs mounted in a private mount namespace (`unshare -m`, as root, which CI is).
Each case exits 2 with one line naming the cause and the fix, claims nothing when it is found before a
claim, leaves a build it interrupted WORKING, and the next pass, once the cause is gone, finishes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.repos import ROOT, commit_all, flow_job, git, new_repo, write

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                               reason="needs root and unshare for a private tmpfs (CI runs as root)")


def record(repo: Path, job: str, ref: str = "main") -> dict[str, object] | None:
    out = subprocess.run(["git", "show", f"{ref}:status/{job}.json"], cwd=repo, capture_output=True, text=True,
                         check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("reconciler: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr and "internal error" not in stderr, stderr
    return lines[0]


def with_remote(tmp_path: Path, jobs: dict[str, str]) -> tuple[Path, Path]:
    src = new_repo(tmp_path / "src", jobs)
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    return bare, clone


def test_a_stale_index_lock_stops_the_pass_before_any_claim(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", {"job": flow_job("[u1, u2]")})
    (repo / ".git" / "index.lock").write_text("")
    head = git(repo, "rev-parse", "HEAD").strip()
    for _ in range(3):  # pass after pass: nothing is spent
        result = run_cli("reconcile", "--repo", str(repo))
        assert result.returncode == 2
        line = one_line_error(result.stderr)
        assert "index.lock" in line and "remove that file" in line
    assert git(repo, "rev-parse", "HEAD").strip() == head and record(repo, "job") is None
    (repo / ".git" / "index.lock").unlink()
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 0
    final = record(repo, "job")
    assert final is not None and final["status"] == "SUCCESS"
    assert git(repo, "status", "--porcelain") == ""


def test_a_lock_left_in_the_remote_is_named_and_nothing_is_claimed(tmp_path: Path) -> None:
    bare, clone = with_remote(tmp_path, {"job": flow_job()})
    lock = bare / "refs" / "heads" / "main.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    result = run_cli("reconcile", "--repo", str(clone))
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert "main.lock" in line and "remove that file" in line
    assert record(bare, "job") is None  # the claim never reached the remote: nothing was spent
    assert not (clone / ".deployments").exists()  # and nothing was deployed
    lock.unlink()
    assert run_cli("reconcile", "--repo", str(clone)).returncode == 0
    final = record(bare, "job")
    assert final is not None and final["status"] == "SUCCESS"


def in_tmpfs(tmp_path: Path, repo: Path, size: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) with a copy of `repo` at $R on a fresh tmpfs of `size`, in a private mount namespace.
    The copy is copied back to `repo` afterwards, so the test can look at what the pass left."""
    mount = tmp_path / "disk"
    mount.mkdir(exist_ok=True)
    env = {**os.environ, "R": str(mount / "repo"), "PY": sys.executable, "SRC": str(repo),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    wrapped = (f"set -u; mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} && cp -a \"$SRC\" \"$R\" "
               f"&& {{ {script} ; }}; rc=$?; rm -rf \"$SRC\"; cp -a \"$R\" \"$SRC\"; exit $rc")
    return subprocess.run(["unshare", "-m", "sh", "-c", wrapped], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@ROOT_ONLY
def test_a_full_disk_stops_the_pass_before_any_claim(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", {"job": flow_job()})
    # fill the disk but for 1 MiB: the pass must see it before claiming, not half-way through a build
    result = in_tmpfs(tmp_path, repo, "24m", 'avail=$(df -k --output=avail "$R" | tail -1); '
                      'dd if=/dev/zero of="$R/../fill" bs=1k count=$((avail - 1024)) 2>/dev/null; '
                      '"$PY" -m reconciler reconcile --repo "$R"')
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert "free" in line or "no space left" in line, line
    assert record(repo, "job") is None
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 0  # with room again, it runs
    final = record(repo, "job")
    assert final is not None and final["status"] == "SUCCESS"


@ROOT_ONLY
def test_a_disk_that_fills_during_a_build_leaves_it_working_and_recoverable(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", {"job": flow_job("[u1, u2, u3]")})
    write(repo, "reconciler.yaml", "concurrency: 1\n")
    commit_all(repo, "one user at a time")
    # u1's deployment runs while a file fills the disk, so the saves after it cannot be written
    fill = f"sh -c 'dd if=/dev/zero of={tmp_path / 'disk' / 'fill'} bs=1M count=1000 2>/dev/null; true'"
    result = in_tmpfs(tmp_path, repo, "24m",
                      f'RECONCILER_FAILPOINTS=user.before-apply=exec RECONCILER_FAILPOINT_EXEC={shlex.quote(fill)} '
                      '"$PY" -m reconciler reconcile --repo "$R"')
    assert result.returncode == 2, result.stdout + result.stderr
    one_line_error(result.stderr)
    claimed = record(repo, "job")
    assert claimed is not None and claimed["status"] in ("IN-PROGRESS", "WORKING")  # not spent, not FAILURE
    (repo / "fill").unlink(missing_ok=True)
    again = run_cli("reconcile", "--repo", str(repo))
    assert again.returncode == 0, again.stderr
    final = record(repo, "job")
    assert final is not None and final["status"] == "SUCCESS" and final["build_id"] == claimed["build_id"]
    assert final["epoch"] == 2  # taken over once, by the pass that could write
    assert git(repo, "status", "--porcelain") == ""


@ROOT_ONLY
def test_a_read_only_repository_is_one_line_and_exit_2(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", {"job": flow_job()})
    result = in_tmpfs(tmp_path, repo, "64m", 'mount -o remount,ro "$R/.." && "$PY" -m reconciler reconcile '
                      '--repo "$R"')
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert "read-only" in line.lower()
    assert record(repo, "job") is None


def test_a_kill_while_the_checkout_moves_is_repaired_by_the_next_pass(tmp_path: Path) -> None:
    """Killed between updating the index and working tree and moving the branch (SPEC 9.1 rule 8)."""
    bare, clone = with_remote(tmp_path, {"first": flow_job()})
    assert run_cli("reconcile", "--repo", str(clone)).returncode == 0
    human = tmp_path / "human"
    git(tmp_path, "clone", "-q", str(bare), str(human))
    write(human, "jobs/second.yaml", flow_job("[u2]"))
    write(human, "notes.txt", "a human's file\n")
    commit_all(human, "a human adds a job")
    git(human, "push", "-q", "origin", "HEAD:main")
    killed = run_cli("reconcile", "--repo", str(clone), env={"RECONCILER_FAILPOINTS": "checkout.moved=kill"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert git(clone, "status", "--porcelain") != ""  # index and files moved, the branch did not
    for _ in range(2):
        result = run_cli("reconcile", "--repo", str(clone))
        assert result.returncode == 0, result.stderr
    assert git(clone, "status", "--porcelain") == ""
    assert git(clone, "rev-parse", "main").strip() == git(bare, "rev-parse", "main").strip()
    assert (clone / "notes.txt").read_text() == "a human's file\n"
    second = record(bare, "second")
    assert second is not None and second["status"] == "SUCCESS"


def test_uncommitted_human_work_in_the_way_is_never_overwritten(tmp_path: Path) -> None:
    bare, clone = with_remote(tmp_path, {"first": flow_job()})
    assert run_cli("reconcile", "--repo", str(clone)).returncode == 0
    human = tmp_path / "human"
    git(tmp_path, "clone", "-q", str(bare), str(human))
    write(human, "notes.txt", "pushed version\n")
    commit_all(human, "notes")
    git(human, "push", "-q", "origin", "HEAD:main")
    write(clone, "notes.txt", "my uncommitted edit\n")
    result = run_cli("reconcile", "--repo", str(clone))
    assert result.returncode == 0, result.stderr
    assert (clone / "notes.txt").read_text() == "my uncommitted edit\n"
