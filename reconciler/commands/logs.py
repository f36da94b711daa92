"""Print a build's log: `logs BUILD_ID`, or the latest build of a job with `logs JOB`.

`-f` follows a running build (as its checkpoints are committed, fetched from the remote when there
is one) until it finishes; for a job not claimed yet it waits for its build to start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from reconciler.errors import EXIT_PROBLEMS, UserError
from reconciler.ledger import git
from reconciler.ledger.branch import BUILD_ID, build_log, committed_settings, deployment_branch

RUNNING = ("IN-PROGRESS", "WORKING")
POLL_SECONDS = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="BUILD_ID|JOB", help="a build id, or a job (its latest build)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="follow a running build until it finishes (waits for a job's build to start)")
    parser.add_argument("--interval", type=float, default=POLL_SECONDS, help=argparse.SUPPRESS)


class Branch:
    """The deployment branch as a follower sees it: the remote's when there is one (fetched), else local."""

    def __init__(self, repo: git.Repo) -> None:
        self.repo = repo
        self.name = deployment_branch(repo)
        local = git.resolve(repo, f"refs/heads/{self.name}")
        settings = committed_settings(repo, local)[0] if local else None
        self.ledger_dir = settings.ledger_dir if settings else "status"
        self.remote = (settings.remote if settings else None) or git.upstream_remote(repo, self.name)

    def tip(self, fetch: bool = False) -> str | None:
        """The local branch; when following with a remote, what the remote has (a pass elsewhere pushes)."""
        local = git.resolve(self.repo, f"refs/heads/{self.name}")
        if not (fetch and self.remote):
            return local
        try:
            fetched = git.fetch(self.repo, self.remote, self.name)
        except git.RemoteUnreachable:
            return local  # follow what this clone has; the next poll tries again
        if fetched and local and git.is_ancestor(self.repo, fetched, local):
            return local  # this clone is ahead (its own pass has not pushed yet)
        return fetched or local

    def record(self, tip: str, job: str) -> tuple[str | None, str | None]:
        """(build id, status) of the job's record at `tip`, read as plain JSON (nothing is run from it)."""
        raw = git.read_path(self.repo, tip, f"{self.ledger_dir}/{job}.json")
        if raw is None:
            return None, None
        try:
            data = json.loads(raw)
        except ValueError:
            return None, None
        build, status = data.get("build_id"), data.get("status")
        if not isinstance(build, str) or not BUILD_ID.match(build):
            return None, None
        return build, status if isinstance(status, str) else None

    def has_job(self, tip: str, job: str) -> bool:
        return any(git.read_path(self.repo, tip, f"jobs/{job}{suffix}") is not None for suffix in (".yaml", ".yml"))


def _job_of(build_id: str) -> str:
    return build_id.split("-", 1)[1].rsplit("-", 1)[0]


def run(args: argparse.Namespace) -> int:
    from reconciler.core.resources import NAME_RE

    target: str = args.target
    is_build = bool(BUILD_ID.match(target))
    if not is_build and not NAME_RE.match(target):
        raise UserError(f"{target!r} is neither a build id (like 20261121T120000Z-my-job-a1b2c3) nor a job name",
                        EXIT_PROBLEMS)
    branch = Branch(git.open_repo(args.repo))
    tip = branch.tip(fetch=args.follow)
    job = _job_of(target) if is_build else target
    build = target if is_build else None
    if tip is not None and build is None:
        build = branch.record(tip, job)[0]
    if not args.follow:
        text = build_log(branch.repo, tip, build, branch.ledger_dir) if tip and build else None
        if text is None:
            what = f"build {target}" if is_build else f"job {target} (it has no build yet)" if tip and \
                branch.has_job(tip, target) else f"job {target}"
            print(f"reconciler: no log for {what} on the deployment branch", file=sys.stderr)
            return 1
        sys.stdout.write(text)
        return 0
    return follow(branch, job, build, args.interval)


def follow(branch: Branch, job: str, build: str | None, interval: float) -> int:
    """Print the log as it grows until the build's record is final (SUCCESS/FAILURE)."""
    shown = ""
    waiting_said = False
    while True:
        tip = branch.tip(fetch=True)
        current, status = branch.record(tip, job) if tip else (None, None)
        if build is None and current is not None:
            build = current  # the job's build started
        if build is None:
            if tip is None or not branch.has_job(tip, job):
                print(f"reconciler: no job {job} on the deployment branch", file=sys.stderr)
                return 1
            if not waiting_said:
                print(f"reconciler: waiting for job {job} to start (Ctrl-C to stop)", file=sys.stderr)
                waiting_said = True
            time.sleep(interval)
            continue
        text = build_log(branch.repo, tip, build, branch.ledger_dir) if tip else None
        if current != build:  # not the job's build in flight: print it as it is
            if text is None:
                print(f"reconciler: no log for build {build} on the deployment branch", file=sys.stderr)
                return 1
            sys.stdout.write(text)
            return 0
        if text:
            if not text.startswith(shown):  # rewritten (should not happen): start over rather than lose lines
                shown = ""
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text
        if current == build and status is not None and status not in RUNNING:
            return 0
        time.sleep(interval)
