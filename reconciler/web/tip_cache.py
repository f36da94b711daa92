"""The committed state of the deployment branch, cached by its tip commit so page loads are cheap."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from reconciler.core.listing import job_detail, job_rows
from reconciler.core.snapshot import Snapshot
from reconciler.ledger import git
from reconciler.ledger.branch import deployment_branch
from reconciler.ledger.load import load_commit_state

ROWS_SECONDS = 2.0


class StateCache:
    """One `Snapshot` per branch tip: a new commit (a push, a status commit) loads it again."""

    def __init__(self, path: Path, branch: str | None = None) -> None:
        self.repo = git.open_repo(path)
        self.branch = deployment_branch(self.repo, branch)
        self._lock = threading.Lock()
        self._tip: str | None = None
        self._state: Snapshot | None = None
        self._rows: tuple[Snapshot, float, list[dict[str, Any]]] | None = None

    def tip(self) -> str | None:
        return git.resolve(self.repo, f"refs/heads/{self.branch}")

    def get(self) -> Snapshot | None:
        """The state at the branch tip now, or None while the branch has no commits."""
        tip = self.tip()
        if tip is None:
            return None
        with self._lock:
            if tip != self._tip or self._state is None:
                state = load_commit_state(self.repo, tip)
                preload = getattr(state.ledger.records, "preload", None)
                if preload is not None:  # the listing reads every record: one batch, not one git call each
                    preload()
                self._state, self._tip = state, tip
            return self._state

    def rows(self) -> list[dict[str, Any]]:
        """The job list; reused for a moment at the same tip (pages poll, and only `run_at` ages it)."""
        state = self.get()
        if state is None:
            return []
        with self._lock:  # the plan reads the state's lazily loaded files: one reader at a time
            now = time.monotonic()
            if self._rows is None or self._rows[0] is not state or now - self._rows[1] > ROWS_SECONDS:
                self._rows = (state, now, [row.as_json() for row in job_rows(state)])
            return self._rows[2]

    def detail(self, job: str) -> dict[str, Any] | None:
        state = self.get()
        if state is None:
            return None
        with self._lock:
            detail = job_detail(state, job)
            return detail.as_json() if detail else None

    def read(self, path: str) -> bytes | None:
        """One file of the current tip (e.g. a job's YAML as committed)."""
        state = self.get()
        if state is None:
            return None
        with self._lock:
            if path not in state.files.entries():
                return None
            return state.files.read_many([path]).get(path)

    def log(self, build_id: str) -> str | None:
        from reconciler.ledger.branch import build_log

        state = self.get()
        if state is None:
            return None
        assert state.commit is not None
        return build_log(self.repo, state.commit, build_id, state.settings.ledger_dir)
