"""The server-side push trigger: a `post-receive` hook that starts a reconcile pass in the background.

The pusher never waits for a deployment: the hook decides in a few milliseconds whether the push
matters (the deployment branch moved, by at least one commit that is not a status-only commit),
raises a "pending" flag, starts a detached runner and returns. The runner owns a working clone
(`<bare>/reconciler/worktree`, since local-driver paths need a working tree) and reconciles it
with `--remote origin` (fetch, fast-forward, claim, run, push) while the flag is raised. Pushes
close together coalesce: a runner that finds another runner active leaves the flag to it, and the
active runner loops once more for every flag raised while it worked.

What a pass can do never depends on the pusher's shell (SPEC 9.1 rule 10): the runner starts from a
clean environment, the few variables recorded when the hook was installed (`PATH`, `HOME`, `LANG`,
`PYTHONPATH`), plus the `KEY=VALUE` lines of the `--env-file` given to `hook install` (the deployment
secrets), read by the runner before every pass and never logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import stat
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
#: what the runner keeps of the environment `hook install` ran in (never of the pusher's)
KEPT_AT_INSTALL = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH")
_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class HookPaths:
    """Everything the hook keeps lives in `<bare>/reconciler/`, beside the repository's own files."""

    def __init__(self, bare: Path) -> None:
        self.bare = bare
        self.dir = bare / "reconciler"
        self.log = self.dir / "hook.log"
        self.pending = self.dir / "pending"
        self.runner_lock = self.dir / "runner.lock"
        self.worktree = self.dir / "worktree"
        self.runner_settings = self.dir / "runner.json"  # the install-time environment and the env file


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines (an optional `export `; blank lines and `#` comments skipped; the value is taken as
    written, to the end of the line). A problem names the file and line, never a value."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"env file {path} cannot be read ({type(exc).__name__}); fix it or reinstall the hook "
                        "with another --env-file") from None
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(line.rstrip("\r"))
        if match is None:
            raise UserError(f"env file {path} line {number} is not KEY=VALUE; nothing was run")
        found[match.group(1)] = match.group(2)
    return found


def env_file_warning(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return f"env file {path} is readable by other users; `chmod 600 {path}`"
    return None


def installed(paths: HookPaths) -> tuple[dict[str, str], Path | None]:
    """(install-time variables, env file) as `hook install` recorded them."""
    try:
        settings = json.loads(paths.runner_settings.read_text("utf-8"))
        base = {str(k): str(v) for k, v in settings.get("base", {}).items()}
        env_file = settings.get("env_file")
        return base, Path(env_file) if env_file else None
    except (OSError, ValueError, AttributeError):  # a hook installed before runner.json existed
        return {"PATH": os.defpath}, None


def runner_environment(paths: HookPaths) -> dict[str, str]:
    """The environment a pass runs with: the install-time variables plus the env file; nothing else."""
    base, env_file = installed(paths)
    return {**base, **(read_env_file(env_file) if env_file is not None else {})}


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


def install(bare: Path, branch: str | None, force: bool = False,
            env_file: Path | None = None) -> tuple[Path, str, Path]:
    """Write the hook; returns (hook file, branch, log file). `env_file`: the runner's secrets."""
    repo = open_bare(bare)
    if env_file is not None:
        env_file = env_file.resolve()
        read_env_file(env_file)  # refused now rather than at the first push
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
    base = {k: os.environ[k] for k in KEPT_AT_INSTALL if k in os.environ}
    base.setdefault("PATH", os.defpath)
    settings = {"base": base, "env_file": str(env_file) if env_file is not None else None}
    tmp_settings = paths.runner_settings.with_name(".runner.json.tmp")
    tmp_settings.write_text(json.dumps(settings, indent=2) + "\n", "utf-8")
    tmp_settings.chmod(0o600)
    tmp_settings.replace(paths.runner_settings)
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
            close_fds=True, cwd=repo.git_dir, env=_installed_base(paths))
    return f"reconciler: deployment pass started in the background; follow it with: tail -f {paths.log}"


def _installed_base(paths: HookPaths) -> dict[str, str]:
    """The runner process starts with the install-time variables only: not the pusher's (nor GIT_DIR and
    friends, which point at the bare repo while a hook runs); it reads the env file itself."""
    return installed(paths)[0]


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
        env = runner_environment(paths)  # read before every pass: a changed secret needs no reinstall
        env_file = installed(paths)[1]
        if env_file is not None and (warning := env_file_warning(env_file)):
            print(f"{iso(utcnow())} warning: {warning}", flush=True)
        os.environ.clear()  # git and drivers see exactly what the pass sees
        os.environ.update(env)
        options = PassOptions(repo=paths.worktree, remote="origin", branch=branch, events=json_line,
                              env=env, lock_wait=600)
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
