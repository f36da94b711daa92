"""The committed state of the deployment branch, cached by its tip commit so page loads are cheap.

One `Listing` per tip: loading it reads only what the listing cache has not seen (a new tip
after a status commit reads that commit's records). A page then costs what it shows: its jobs are
sorted and filtered from light entries, and only their rows are built.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.core.listing import Listing, Page, Query
from reconciler.core.snapshot import Snapshot
from reconciler.core.timeutil import utcnow
from reconciler.ledger import git
from reconciler.ledger.branch import deployment_branch
from reconciler.ledger.listing_cache import load_listing
from reconciler.ledger.load import load_commit_state

# With the tip unchanged, listing states change only with time: when a `run_at` falls due, and (to be
# safe with rules that depend on the clock) at least this often. A page in between costs what it shows.
PLAN_SECONDS = 30.0


class StateCache:
    """One state and its job list per branch tip: a new commit (a push, a status commit) loads it again."""

    def __init__(self, path: Path, branch: str | None = None) -> None:
        self.repo = git.open_repo(path)
        self.branch = deployment_branch(self.repo, branch)
        self._lock = threading.Lock()
        self._tip: str | None = None
        self._listing: Listing | None = None
        self._planned_at = 0.0
        self._due: datetime | None = None
        self._all_json: tuple[Listing, str] | None = None

    def tip(self) -> str | None:
        return git.resolve(self.repo, f"refs/heads/{self.branch}")

    def listing(self) -> Listing | None:
        """The job list at the branch tip now, or None while the branch has no commits."""
        tip = self.tip()
        if tip is None:
            return None
        with self._lock:
            now = time.monotonic()
            if tip != self._tip or self._listing is None:
                state = load_commit_state(self.repo, tip, skip_executed=True)
                self._listing, self._tip = load_listing(state, self.repo.state_dir), tip
            elif now - self._planned_at > PLAN_SECONDS or (self._due is not None and utcnow() >= self._due):
                self._listing = self._listing.replanned()  # same tip: only the plan can have changed
            else:
                return self._listing
            self._planned_at, self._due = now, self._listing.next_change()
            return self._listing

    def get(self) -> Snapshot | None:
        listing = self.listing()
        return listing.state if listing else None

    def states(self) -> dict[str, str]:
        listing = self.listing()
        return dict(listing.states) if listing else {}

    def rows_json(self) -> str:
        """Every row, exactly `status --format json` (kept while the listing is the same)."""
        listing = self.listing()
        if listing is None:
            return "[]\n"
        with self._lock:
            if self._all_json is None or self._all_json[0] is not listing:
                self._all_json = (listing, listing.rows_json())
            return self._all_json[1]

    def page(self, query: Query) -> tuple[Listing | None, Page | None]:
        listing = self.listing()
        if listing is None:
            return None, None
        with self._lock:
            return listing, listing.select(query)

    def page_json(self, page: Page) -> str:
        listing = self.listing()
        if listing is None:
            return "[]\n"
        with self._lock:
            return listing.rows_json([e.job for e in page.entries])

    def table_rows(self, listing: Listing, page: Page) -> list[dict[str, Any]]:
        with self._lock:
            return [listing.table_row(e.job) for e in page.entries]

    def detail(self, job: str) -> dict[str, Any] | None:
        listing = self.listing()
        if listing is None:
            return None
        with self._lock:
            detail = listing.detail(job)
            return detail.as_json() if detail else None

    def user_details(self, job: str, uid: str) -> list[dict[str, Any]] | None:
        """What one user gets (got) from a job: tokens (secrets by name), rendered files' digests, result."""
        from reconciler.ledger.claimed import details_for_user

        listing = self.listing()
        if listing is None:
            return None
        with self._lock:
            found = details_for_user(self.repo, listing.state, job, uid)
        return [d.as_json() for d in found] if found is not None else None

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
