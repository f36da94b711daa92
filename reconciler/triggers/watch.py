"""The watch daemon: keep one clone reconciled.

A pass runs on start, when the deployment branch moves (a commit in this clone, polled every
second), when the remote branch moves (`git ls-remote`, polled every `interval` seconds), and when
files under `jobs/`, `definitions/` or `servers/` change on disk. Only committed state ever runs,
so every trigger is a hint to look; a pass with nothing new does nothing. Our own status commits
never trigger anything: after a pass the local and remote tips are ours, and the ledger directory
is not watched. A remote that cannot be reached is logged and retried with backoff; the daemon
keeps running. `stop` (SIGTERM/SIGINT) lets the users in flight finish, checkpoints, and ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.core.files import TOP_DIRS
from reconciler.errors import UserError
from reconciler.ledger import git
from reconciler.ledger.branch import committed_settings, deployment_branch

Events = Callable[[str, dict[str, Any]], None]
MAX_BACKOFF = 300.0  # a remote that is down is polled at least this often
PASS_BACKOFF = 120.0  # a failing pass is retried at least this often
LOCAL_POLL = 1.0


@dataclass
class WatchOptions:
    repo: Path
    remote: str | None = None
    interval: float = 30.0
    debounce_ms: int = 500
    stop: threading.Event = field(default_factory=threading.Event)
    events: Events = lambda event, data: None


class Watcher:
    def __init__(self, options: WatchOptions) -> None:
        self.options = options
        self.stop = options.stop
        self.events = options.events
        self.repo = git.open_repo(options.repo)
        if self.repo.top is None:
            raise UserError(f"{options.repo} is a bare repository; watch needs a clone with a working tree "
                            "(for a bare repository use `reconciler hook install`)")
        self.branch, configured_remote = self._configured()
        self.remote = options.remote or configured_remote or git.upstream_remote(self.repo, self.branch)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._reasons: list[str] = []
        self._passing = False
        self._not_before = 0.0  # after a failed pass, triggers wait for the backoff to end
        self._failures = 0
        self._seen_tip = git.resolve(self.repo, f"refs/heads/{self.branch}")

    def _configured(self) -> tuple[str, str | None]:
        settings = committed_settings(self.repo, "HEAD")[0]
        return deployment_branch(self.repo, None, settings), settings.remote

    def request(self, reason: str) -> None:
        with self._lock:
            self._reasons.append(reason)
        self._wake.set()

    def run(self) -> int:
        self.events("watch.started", {"repo": str(self.repo.top), "branch": self.branch, "remote": self.remote,
                                      "interval": self.options.interval})
        threads = [threading.Thread(target=self._watch_files, name="watch-files", daemon=True)]
        if self.remote is not None:
            threads.append(threading.Thread(target=self._poll_remote, name="poll-remote", daemon=True))
        for thread in threads:
            thread.start()
        self.request("start")
        next_local = time.monotonic() + LOCAL_POLL
        while not self.stop.is_set():
            self._wake.wait(timeout=0.2)
            self._wake.clear()
            now = time.monotonic()
            if now >= next_local:
                next_local = now + LOCAL_POLL
                self._poll_branch()
            if now < self._not_before:
                continue
            with self._lock:
                reasons, self._reasons = self._reasons, []
            if reasons and not self.stop.is_set():
                self._pass(reasons)
        self.events("watch.stopped", {})
        return 0

    def _pass(self, reasons: list[str]) -> None:
        from reconciler.run.reconcile_pass import PassOptions, run_pass
        from reconciler.run.summary import PassSummary

        unique = list(dict.fromkeys(reasons))
        self.events("pass.started", {"reasons": unique})
        started = time.monotonic()
        self._passing = True
        try:
            result = run_pass(PassOptions(repo=self.options.repo, remote=self.remote, branch=self.branch,
                                          stop=self.stop, events=self.events, lock_wait=60))
        except Exception as exc:  # a daemon outlives a failed pass: log it, back off, try again
            self._failures += 1
            delay = min(PASS_BACKOFF, 2.0 ** min(self._failures, 9))
            self._not_before = time.monotonic() + delay
            error = str(exc) if isinstance(exc, UserError | git.GitError) else f"{type(exc).__name__}: {exc}"
            self.events("pass.failed", {"error": error.splitlines()[0] if error else "", "retry_in": delay})
            self.request("retry")
            return
        finally:
            self._passing = False
            if self.remote is not None:
                # what the pass fast-forwarded to was planned; commits made only here are refused by a
                # pass with a remote. Without one, _seen_tip stays: _poll_branch skips our status
                # commits and still sees a commit someone made in this clone while the pass ran.
                self._seen_tip = git.resolve(self.repo, f"refs/heads/{self.branch}")
        self._failures = 0
        self.events("pass.finished", {"reasons": unique, "seconds": round(time.monotonic() - started, 3),
                                      **PassSummary.of(result).event()})

    def _poll_branch(self) -> None:
        """A commit in this clone (ours are absorbed by _pass before we look again)."""
        tip = git.resolve(self.repo, f"refs/heads/{self.branch}")
        if tip is None or tip == self._seen_tip:
            return
        old, self._seen_tip = self._seen_tip, tip
        if old is not None and git.is_ancestor(self.repo, old, tip) and self._status_only(old, tip):
            self.events("branch.status_only", {"old": old, "new": tip})  # another reconcile run here: no news
            return
        self.events("branch.moved", {"old": old, "new": tip})
        self.request("branch")

    def _status_only(self, old: str, new: str) -> bool:
        ledger_dir = committed_settings(self.repo, new)[0].ledger_dir
        return git.status_only(self.repo, old, new, ledger_dir)

    def _poll_remote(self) -> None:
        assert self.remote is not None
        failures = 0
        delay = self.options.interval
        reported: str | None = None
        while not self.stop.wait(delay):
            try:
                tip = git.ls_remote(self.repo, self.remote, self.branch)
            except git.RemoteUnreachable as exc:
                failures += 1
                delay = min(max(MAX_BACKOFF, self.options.interval), self.options.interval * 2 ** failures)
                self.events("remote.unreachable", {"remote": self.remote, "error": str(exc), "retry_in": delay})
                continue
            if failures:
                self.events("remote.reachable", {"remote": self.remote})
            failures, delay = 0, self.options.interval
            local = git.resolve(self.repo, f"refs/heads/{self.branch}")
            if tip is not None and tip != local and not self._passing:
                if tip != reported:  # one line per move, not one per poll while a pass is failing
                    self.events("remote.moved", {"remote": self.remote, "tip": tip, "local": local})
                    reported = tip
                self.request("remote")

    def _watch_files(self) -> None:
        import watchfiles

        root = self.repo.top
        assert root is not None

        def wanted(change: watchfiles.Change, path: str) -> bool:
            try:
                rel = Path(path).relative_to(root)
            except ValueError:
                return False
            return len(rel.parts) > 1 and rel.parts[0] in TOP_DIRS

        for batch in watchfiles.watch(root, watch_filter=wanted, stop_event=self.stop,
                                      debounce=self.options.debounce_ms, step=50, raise_interrupt=False):
            paths = sorted({Path(p).relative_to(root).as_posix() for _, p in batch})
            edited = self._edited(root, paths)
            if not edited:  # the files now match the branch: our own fast-forward wrote them
                self.events("files.changed", {"paths": _shown(paths), "ignored": "same as the branch"})
                continue
            self.events("files.changed", {"paths": _shown(edited)})
            self.request("files")

    def _edited(self, root: Path, paths: list[str]) -> list[str]:
        """Paths whose content on disk differs from the branch tip."""
        from reconciler.core.files import blob_id

        tip = git.resolve(self.repo, f"refs/heads/{self.branch}")
        committed = git.tree_entries(self.repo, tip, paths) if tip else {}
        edited = []
        for rel in paths:
            full = root / rel
            try:
                on_disk = blob_id(full.read_bytes()) if full.is_file() and not full.is_symlink() else None
            except OSError:  # changed again while we looked: certainly an edit
                on_disk = "unreadable"
            if full.is_symlink() or on_disk != committed.get(rel):
                edited.append(rel)
        return edited


def _shown(paths: list[str]) -> list[str]:
    return paths[:20] + ([f"... {len(paths) - 20} more"] if len(paths) > 20 else [])
