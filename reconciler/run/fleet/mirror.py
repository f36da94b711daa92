"""A worker's cached bare mirror of the deployment repo's remote, fetched by commit id when needed."""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.ledger import git

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


class Mirror:
    """`<state>/mirrors/<hash of URL>.git`: one per remote URL, shared by the threads of a worker and by
    workers on the same host that share a state folder (a file lock around fetches)."""

    def __init__(self, state_dir: Path, url: str) -> None:
        self.url = url
        name = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.path = state_dir / "mirrors" / f"{name}.git"
        self.repo = git.init_bare(self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _thread_lock(self.path), (self.path / "reconciler-fetch.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def at(self, commit: str) -> git.Repo:
        """The mirror, holding `commit` (fetched from the remote if it does not yet). RemoteUnreachable."""
        if git.has_commit(self.repo, commit):
            return self.repo
        with self._locked():
            if not git.has_commit(self.repo, commit):
                git.fetch_commit(self.repo, self.url, commit)
        return self.repo
