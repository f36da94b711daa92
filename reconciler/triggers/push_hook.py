"""The server-side push trigger: a `post-receive` hook that starts a reconcile pass in the background.

The pusher never waits for a deployment: the hook decides in a few milliseconds whether the push
matters (the deployment branch moved, by at least one commit that is not a status-only commit),
raises a "pending" flag, starts a detached runner and returns. The runner owns a working clone
(`<bare>/reconciler/worktree`, since local-driver paths need a working tree) and reconciles it
with `--remote origin` (fetch, fast-forward, claim, run, push) while the flag is raised. Pushes
close together coalesce: a runner that finds another runner active leaves the flag to it, and the
active runner loops once more for every flag raised while it worked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from reconciler.core.files import SETTINGS_FILE
from reconciler.core.settings import parse_settings
from reconciler.core.timeutil import iso, utcnow
from reconciler.errors import UserError
from reconciler.ledger import git

MARKER = "# installed by `reconciler hook install`"
LOG_LIMIT = 10 * 1024 * 1024


class HookPaths:
    """Everything the hook keeps lives in `<bare>/reconciler/`, beside the repository's own files."""

    def __init__(self, bare: Path) -> None:
        self.bare = bare
        self.dir = bare / "reconciler"
        self.log = self.dir / "hook.log"
        self.pending = self.dir / "pending"
        self.runner_lock = self.dir / "runner.lock"
        self.worktree = self.dir / "worktree"


def open_bare(path: Path) -> git.Repo:
    repo = git.open_repo(path.resolve())
    if repo.top is not None:
        raise UserError(f"{path} is not a bare repository (the hook belongs in the repository people push "
                        "to; create one with `git clone --bare`)")
    return repo


def default_branch(repo: git.Repo) -> str:
    branch = git.head_branch(repo)
    if branch is None:
        raise UserError(f"{repo.git_dir}: HEAD does not name a branch; pass --branch")
    return branch


def hook_script(bare: Path, branch: str) -> str:
    # -P: git runs hooks inside the bare repo, whose reconciler/ folder must not shadow the package.
    # This module, not the full CLI, so that deciding costs a few imports (every push waits for it).
    command = shlex.join([sys.executable, "-P", "-m", "reconciler.triggers.push_hook", "post-receive", str(bare),
                          branch])
    return (f"#!/bin/sh\n{MARKER}\n"
            f"# A push to refs/heads/{branch} starts a reconcile pass in the background; the pusher\n"
            f"# does not wait for it. Its output goes to {HookPaths(bare).log}.\n"
            "# Delete this file to disable.\n"
            f"exec {command}\n")


def install(bare: Path, branch: str | None, force: bool = False) -> tuple[Path, str, Path]:
    """Write the hook; returns (hook file, branch, log file)."""
    repo = open_bare(bare)
    branch = branch or default_branch(repo)
    hooks = git.hooks_dir(repo)
    hooks.mkdir(parents=True, exist_ok=True)
    target = hooks / "post-receive"
    if target.exists() and MARKER not in target.read_text("utf-8", "replace") and not force:
        raise UserError(f"{target} exists and was not installed by the reconciler; move it aside or pass "
                        "--force")
    tmp = target.with_name(".post-receive.reconciler-tmp")
    tmp.write_text(hook_script(repo.git_dir, branch), "utf-8")
    tmp.chmod(0o755)
    tmp.replace(target)
    paths = HookPaths(repo.git_dir)
    paths.dir.mkdir(exist_ok=True)
    return target, branch, paths.log


def post_receive(bare: Path, branch: str, updates: list[tuple[str, str, str]]) -> str | None:
    """Decide and, if the push matters, start a background pass. Returns the message for the pusher."""
    repo = open_bare(bare)
    ref = f"refs/heads/{branch}"
    moved = [(old, new) for old, new, name in updates if name == ref and new != git.ZERO]
    if not moved:
        return None
    ledger_dir = parse_settings(git.read_file(repo, moved[-1][1], SETTINGS_FILE))[0].ledger_dir
    if all(git.status_only(repo, old, new, ledger_dir) for old, new in moved):
        return None  # the reconciler's own status commits: never a reason for another pass
    paths = HookPaths(repo.git_dir)
    paths.dir.mkdir(exist_ok=True)
    paths.pending.touch()
    _rotate(paths.log)
    with paths.log.open("a", encoding="utf-8") as log:
        old, new = moved[-1]
        log.write(f"{iso(utcnow())} push to {branch}: {old[:12]}..{new[:12]}, pass requested\n")
        log.flush()
        subprocess.Popen(  # detached: own session, no pipe back to git, so the push returns at once
            [sys.executable, "-P", "-m", "reconciler.triggers.push_hook", "run", str(repo.git_dir), branch],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, cwd=repo.git_dir, env=clean_env())
    return f"reconciler: deployment pass started in the background; follow it with: tail -f {paths.log}"


def clean_env() -> dict[str, str]:
    """The hook runs with GIT_DIR and friends pointing at the bare repo; the pass must not inherit them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def _rotate(log: Path) -> None:
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_LIMIT:
            log.replace(log.with_name(log.name + ".1"))


@contextlib.contextmanager
def _runner_lock(path: Path) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def run_passes(bare: Path, branch: str) -> int:
    """The detached runner: one pass per raised flag, until no flag is left. Returns the number of passes."""
    repo = open_bare(bare)
    paths = HookPaths(repo.git_dir)
    passes = 0
    while paths.pending.exists():
        with _runner_lock(paths.runner_lock) as mine:
            if not mine:
                print(f"{iso(utcnow())} another runner is active; it will pick this push up")
                return passes
            while paths.pending.exists():
                paths.pending.unlink(missing_ok=True)  # pushes from now on raise it again
                passes += 1
                _one_pass(paths, branch)
        # a push that landed just before we let go found the lock held and left: loop to serve it
    return passes


def _one_pass(paths: HookPaths, branch: str) -> None:
    from reconciler.eventlog import json_line
    from reconciler.run.reconcile_pass import PassOptions, run_pass
    from reconciler.run.summary import PassSummary

    print(f"{iso(utcnow())} pass started", flush=True)
    try:
        if not (paths.worktree / ".git").exists():
            git.clone(paths.bare, paths.worktree, branch)
            print(f"{iso(utcnow())} cloned {paths.bare} into {paths.worktree}", flush=True)
        options = PassOptions(repo=paths.worktree, remote="origin", branch=branch, events=json_line,
                              env=clean_env(), lock_wait=600)
        summary = PassSummary.of(run_pass(options))
        for problem in summary.problems:
            print(problem.as_text(), flush=True)
        for line in summary.lines():
            print(line, flush=True)
        code = summary.exit_code
    except (UserError, git.GitError) as exc:
        print(f"{iso(utcnow())} pass failed: {exc}", flush=True)
        code = 2
    sys.stdout.flush()
    print(f"{iso(utcnow())} pass finished (exit {code})", flush=True)


def main(argv: list[str]) -> int:
    """`python -m reconciler.triggers.push_hook post-receive|run BARE BRANCH`: what the installed hook calls."""
    if len(argv) != 3 or argv[0] not in ("post-receive", "run"):
        print("usage: python -m reconciler.triggers.push_hook post-receive|run BARE BRANCH", file=sys.stderr)
        return 2
    action, bare, branch = argv
    try:
        if action == "run":
            run_passes(Path(bare), branch)
            return 0
        updates = [(p[0], p[1], p[2]) for p in (line.split() for line in sys.stdin) if len(p) == 3]
        message = post_receive(Path(bare), branch, updates)
    except (UserError, git.GitError) as exc:  # a hook cannot refuse a push that already happened: say why
        print(f"reconciler: no deployment pass started: {exc}", file=sys.stderr)
        return 0
    if message:
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
