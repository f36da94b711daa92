"""Writing the ledger: status-only commits on the deployment branch, pushed when there is a remote.

The remote's atomic ref update is the arbiter between reconcilers: a claim counts only once it
is pushed, and a rejected push is answered by fetching, checking that the job is still ours to
claim, and replaying our status-only change on top of the new tip. Nothing is ever force-pushed,
and a human commit is never lost: we always build on top of what the remote has.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from reconciler import faults
from reconciler.core.records import LedgerRecord
from reconciler.core.redact import Redactor
from reconciler.errors import UserError
from reconciler.ledger import git

MAX_ATTEMPTS = 25


class ClaimLost(Exception):
    """The job is no longer ours to run: another reconciler claimed it, or its file changed."""


def backoff(attempt: int) -> float:
    """Bounded exponential backoff with full jitter (seconds)."""
    return random.uniform(0, min(2.0, 0.05 * (2 ** min(attempt, 6))))


class BranchStore:
    def __init__(self, repo: git.Repo, branch: str, tip: str, ledger_dir: str, author: tuple[str, str],
                 redactor: Redactor, remote: str | None = None,
                 events: Callable[[str, dict[str, object]], None] | None = None) -> None:
        self.repo = repo
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        self.tip = tip  # what we build on: the remote's lineage when there is a remote
        self.local = git.resolve(repo, self.ref)
        self.ledger_dir = ledger_dir
        self.author = author
        self.redactor = redactor
        self.remote = remote
        self.events = events or (lambda event, data: None)
        self.checked_out = repo.top is not None and git.head_branch(repo) == branch
        self.commits = 0
        self.unpushed = False

    # -- paths -------------------------------------------------------------------------------------
    def record_path(self, job: str) -> str:
        return f"{self.ledger_dir}/{job}.json"

    def _record_at(self, commit: str, job: str) -> dict[str, object] | None:
        path = self.record_path(job)
        found = git.tree_entries(self.repo, commit, [path])
        if path not in found:
            return None
        try:
            data = json.loads(git.read_blobs(self.repo, [found[path]])[found[path]])
        except ValueError:
            return {"build_id": None}
        return data if isinstance(data, dict) else {"build_id": None}

    # -- checks ------------------------------------------------------------------------------------
    def _check(self, record: LedgerRecord, claim: bool, job_path: str | None) -> None:
        theirs = self._record_at(self.tip, record.job)
        if claim:
            if theirs is not None:
                raise ClaimLost(f"job {record.job} was claimed meanwhile (build {theirs.get('build_id')})")
            if job_path is not None:
                blob = git.tree_entries(self.repo, self.tip, [job_path]).get(job_path)
                if blob != record.job_blob:
                    raise ClaimLost(f"job {record.job} changed on the branch meanwhile; the next pass re-plans it")
        elif theirs is None or theirs.get("build_id") != record.build_id:
            raise ClaimLost(f"the record of job {record.job} no longer belongs to build {record.build_id}")

    # -- writing -----------------------------------------------------------------------------------
    def save(self, record: LedgerRecord, log_text: str, message: str, *, claim: bool = False,
             job_path: str | None = None) -> None:
        """Commit the record and its log; with a remote, push. Claims raise ClaimLost when beaten."""
        files = {
            self.record_path(record.job): self.redactor(record.to_json()).encode("utf-8"),
            record.log: self.redactor(log_text).encode("utf-8"),
        }
        body = f"{message}\n\n{git.TRAILER} {record.build_id}\n"
        kind = "claim" if claim else "save"
        for attempt in range(MAX_ATTEMPTS):
            self._check(record, claim, job_path)
            faults.point(f"{kind}.before-commit", record.job)
            commit = git.commit_files(self.repo, parent=self.tip, files=files, message=body, author=self.author)
            if self.remote is not None:
                faults.point(f"{kind}.before-push", record.job)
                try:
                    pushed = git.push(self.repo, self.remote, commit, self.branch)
                except git.RemoteUnreachable as exc:
                    if claim:  # a claim that is not on the remote is no claim: do not deploy
                        raise UserError(f"cannot claim {record.job}: {exc}") from None
                    self.events("push.deferred", {"job": record.job, "reason": str(exc)[:200]})
                    self.unpushed = True
                    self._advance(commit)
                    return
                if not pushed:
                    self.events("push.rejected", {"job": record.job, "attempt": attempt + 1})
                    time.sleep(backoff(attempt))
                    self._rebase_on_remote()
                    continue
                self.unpushed = False
            elif not self._local_cas(commit, list(files)):
                moved = git.resolve(self.repo, self.ref)
                if moved is None:
                    raise UserError(f"branch {self.branch} disappeared during the pass")
                self.tip = moved
                continue
            self._advance(commit)
            faults.point(f"{kind}.after-commit", record.job)
            return
        raise UserError(f"could not write the status of {record.job}: the branch keeps moving; try again")

    def _local_cas(self, commit: str, paths: list[str]) -> bool:
        """Without a remote the local branch is the arbiter: compare-and-swap it, then sync our paths."""
        if self.local != self.tip:
            return False
        if self.checked_out:
            git.mark_ledger_sync(self.repo, True)
        if not git.update_ref(self.repo, self.ref, commit, self.tip):
            return False
        if self.checked_out:  # a status-only commit: only the ledger paths we wrote differ
            git.sync_worktree(self.repo, commit, paths)
            git.mark_ledger_sync(self.repo, False)
        return True

    def _advance(self, commit: str) -> None:
        """Move our tip, and the local branch when it can follow without touching anyone's work."""
        self.tip = commit
        self.commits += 1
        if self.remote is None:
            self.local = commit
            return
        self.follow_local(commit)

    def follow_local(self, commit: str) -> None:
        current = git.resolve(self.repo, self.ref)
        if current == commit:
            self.local = commit
            return
        if current is not None and not git.is_ancestor(self.repo, current, commit):
            self.events("local.diverged", {"branch": self.branch})
            return  # local commits not on the remote: leave the local branch to its owner
        if self.checked_out and current is not None and not git.advance_worktree(self.repo, current, commit):
            self.events("local.behind", {"branch": self.branch, "reason": "uncommitted changes in the way"})
            return
        if git.update_ref(self.repo, self.ref, commit, current or "0" * 40):
            self.local = commit

    def _rebase_on_remote(self) -> None:
        assert self.remote is not None
        remote_tip = git.fetch(self.repo, self.remote, self.branch)
        if remote_tip is None:
            raise UserError(f"branch {self.branch} is gone from remote {self.remote}")
        self.carry_onto(remote_tip)

    def carry_onto(self, new_base: str) -> None:
        """Replay our unpushed status-only changes (if any) on top of `new_base`; human commits never move."""
        base = git.merge_base(self.repo, self.tip, new_base)
        if base is None:
            raise UserError(f"branch {self.branch} has no history in common with the remote")
        if base == self.tip:
            self.tip = new_base
            return
        mine = [p for p in git.changed_paths(self.repo, base, self.tip) if p.startswith(self.ledger_dir + "/")]
        if not mine:
            self.tip = new_base
            return
        ours = git.tree_entries(self.repo, self.tip, mine)
        blobs = git.read_blobs(self.repo, list(ours.values()))
        files = {p: blobs[b] for p, b in ours.items()}
        for path in [p for p in files if p.endswith(".json") and p.count("/") == 1]:
            job = path.split("/", 1)[1][:-5]
            theirs = self._record_at(new_base, job)
            try:
                mine_build = json.loads(files[path]).get("build_id")
            except ValueError:
                mine_build = None
            if theirs is not None and theirs.get("build_id") != mine_build:
                files.pop(path)  # another reconciler owns this job's record on the remote: theirs stands
                files.pop(f"{self.ledger_dir}/logs/{mine_build}.log", None)
        if not files:
            self.tip = new_base
            return
        commit = git.commit_files(self.repo, parent=new_base, files=files,
                                  message=f"status: replay unpushed status records\n\n{git.TRAILER} replay\n",
                                  author=self.author)
        self.tip = commit
