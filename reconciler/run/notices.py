"""The notifications of one pass: what its builds and its plan tell the `notify:` targets (SPEC 9.4).

- `job.claimed` and `job.finished` (also `job.failed`) for each build, from its record;
- `job.blocked` once per job and reason: for jobs the plan lists BLOCKED, including the jobs that
  waited (directly or through others) for a build of this pass that ended FAILURE. The jobs already
  told about are remembered in `.git/reconciler/notified-blocked.json` (disposable: if it is lost,
  a blocked job is announced once more), so a daemon polling every 30 s does not repeat itself.

Nothing here can fail a pass: the Notifier never raises, and the memory file is best effort.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a pass without notify targets loads neither httpx nor the record models for this
    from reconciler.core.plan import Plan
    from reconciler.core.records import LedgerRecord
    from reconciler.core.redact import Redactor
    from reconciler.core.snapshot import Snapshot
    from reconciler.run.notify import Notifier

SEEN_FILE = "notified-blocked.json"
CLOSE_SECONDS = 5.0


class PassNotices:
    def __init__(self, state: Snapshot, env: dict[str, str], redactor: Redactor,
                 events: Callable[[str, dict[str, object]], None], state_dir: Path) -> None:
        self.state = state
        self.notifier: Notifier | None = None
        if state.settings.notify:
            from reconciler.run.notify import Notifier

            self.notifier = Notifier(state.settings.notify, env, redactor, events=events)
        self.seen_path = state_dir / SEEN_FILE

    def commit_of(self, job: str, record: LedgerRecord | None = None) -> str | None:
        """The job's commit: the one that added its file, else the commit its build was claimed from."""
        added = self.state.history.added.get(job)
        if added:
            return added[1]
        return record.desired_commit if record is not None else self.state.commit

    def build(self, event: str, record: LedgerRecord) -> None:
        if self.notifier is None:
            return
        from reconciler.core.listing import detail_of_record

        jf = self.state.desired.job_files.get(record.job)
        description = str((jf.data or {}).get("description", "")) if jf and isinstance(jf.data, dict) else ""
        detail = detail_of_record(record, path=jf.path if jf else None, description=description)
        self.notifier.emit(event, detail.as_json(), self.commit_of(record.job, record))

    def blocked(self, plan: Plan) -> None:
        """job.blocked for the jobs the plan lists BLOCKED (after `Plan.block_dependents_of` for the builds
        that just failed) that were not announced with this reason before."""
        if self.notifier is None:
            return
        now = {job: plan.reasons.get(job, "blocked") for job in plan.blocked}
        from reconciler.core.listing import job_detail

        seen = self._seen()
        for job, reason in sorted(now.items()):
            if seen.get(job) == reason:
                continue
            found = job_detail(self.state, job)
            detail: dict[str, Any] = found.as_json() if found else {"job": job}
            detail |= {"status": "BLOCKED", "reason": reason}
            self.notifier.emit("job.blocked", detail, self.commit_of(job))
        self._remember(now)

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close(CLOSE_SECONDS)

    def _seen(self) -> dict[str, str]:
        try:
            data = json.loads(self.seen_path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _remember(self, blocked: dict[str, str]) -> None:
        try:
            tmp = self.seen_path.with_name(f"{SEEN_FILE}.{os.getpid()}")
            tmp.write_text(json.dumps(blocked, sort_keys=True), "utf-8")
            os.replace(tmp, self.seen_path)
        except OSError:
            pass  # best effort: at worst a blocked job is announced again
