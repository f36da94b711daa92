"""Keeping the clone in step: the local branch, and its index and ledger files when it is checked out.

Every move of the local branch is journaled in `.git/reconciler/checkout.json` (from, to) before
the index or the working tree is touched, and the journal is removed once the branch points at
`to`. A pass killed anywhere in between leaves the journal; the next pass (under the repo lock)
finishes the move: ledger paths are forced to `to` (only the reconciler writes them); any other
path changed by the move is set to `to` when its index entry and its file still hold the `from` or
the `to` version, and is left alone (and reported) when a human has edited it meanwhile. So a
clone never stays behind because of a crash (SPEC 9.1 rule 8), and uncommitted human work is
never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from reconciler import faults
from reconciler.ledger import git

JOURNAL = "checkout.json"
Events = Callable[[str, dict[str, object]], None]


class Checkout:
    def __init__(self, repo: git.Repo, branch: str, ledger_dir: str, events: Events | None = None) -> None:
        self.repo = repo
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        self.ledger_dir = ledger_dir
        self.events = events or (lambda event, data: None)
        self.checked_out = repo.top is not None and git.head_branch(repo) == branch
        self.journal = repo.state_dir / JOURNAL

    # -- moves -------------------------------------------------------------------------------------
    def follow(self, commit: str, paths: list[str], current: str | None = None) -> None:
        """After a status commit: bring the local branch (and checkout) to `commit`.

        Without a remote the branch already points at `commit` (it was the compare-and-swap: pass
        `current=commit`); then only the ledger `paths` written are synced. With a remote the local
        branch fast-forwards."""
        current = current or git.resolve(self.repo, self.ref)
        if current == commit:
            if self.checked_out and paths:
                self._write({"from": None, "to": commit, "paths": paths})
                if self._sync_paths(commit, paths):
                    self._clear()
            return
        if current is not None and not git.is_ancestor(self.repo, current, commit):
            self.events("local.diverged", {"branch": self.branch})
            return  # local commits not on the remote: leave the local branch to its owner
        self.move(current, commit)

    def move(self, old: str | None, new: str) -> bool:
        """Move the local branch from `old` to `new` (index and files too when checked out). False when
        uncommitted changes are in the way of a path the move changes (nothing is overwritten then)."""
        self._write({"from": old, "to": new, "paths": None})
        if (self.checked_out and old is not None and not git.advance_worktree(self.repo, old, new)
                and not self._finish(old, new)):
            self.events("local.behind", {"branch": self.branch,
                                         "reason": "uncommitted changes to files the remote changed"})
            return False
        faults.point("checkout.moved", new)  # index and files at `new`, the branch still at `old`
        if not git.update_ref(self.repo, self.ref, new, old or git.ZERO):
            self.events("local.moved", {"branch": self.branch})
        self._clear()
        return True

    # -- repair ------------------------------------------------------------------------------------
    def repair(self) -> None:
        """Finish a move a crash interrupted (call under the repo lock, before anything else)."""
        if not self.journal.exists():
            return
        entry = self._read()
        if entry is None:  # unreadable journal: the ledger files are ours, so put them at the branch's state
            if self.checked_out:
                git.sync_worktree(self.repo, "HEAD", [self.ledger_dir])
            self._clear()
            return
        old, new, paths = entry.get("from"), entry.get("to"), entry.get("paths")
        if not isinstance(new, str) or git.resolve(self.repo, new) is None:
            self._clear()
            return
        current = git.resolve(self.repo, self.ref)
        if paths is not None and isinstance(paths, list):  # a ledger sync after a local compare-and-swap
            if self.checked_out and current == new:
                git.sync_worktree(self.repo, new, [str(p) for p in paths])
            self._clear()
            return
        if current not in (old, new):
            self._clear()  # the branch moved on since: nothing of ours is half done
            return
        if self.checked_out and isinstance(old, str) and current == old:
            if not git.advance_worktree(self.repo, old, new) and not self._finish(old, new):
                self.events("local.behind", {"branch": self.branch,
                                             "reason": "uncommitted changes to files the remote changed"})
                self._clear()
                return
        elif self.checked_out and isinstance(old, str):
            self._finish(old, new)
        if current != new:
            git.update_ref(self.repo, self.ref, new, current or git.ZERO)
        self.events("local.repaired", {"branch": self.branch, "to": new})
        self._clear()

    def _finish(self, old: str, new: str) -> bool:
        """Set every path the move changes to `new` where it still holds `old`'s or `new`'s version (a
        half-done move); False when a path holds something else (someone's uncommitted work)."""
        changed = git.changed_paths(self.repo, old, new)
        if not changed:
            return True
        before = git.tree_entries(self.repo, old, changed)
        after = git.tree_entries(self.repo, new, changed)
        index = git.index_entries(self.repo, changed)
        files = git.worktree_blobs(self.repo, changed)
        safe, blocked = [], []
        for path in changed:
            ours = path.startswith(self.ledger_dir + "/")
            known = {before.get(path), after.get(path)}
            if ours or (index.get(path) in known and files.get(path) in known):
                safe.append(path)
            else:
                blocked.append(path)
        if blocked:
            return False
        present = [p for p in safe if p in after]
        gone = [p for p in safe if p not in after]
        if present:
            git.sync_worktree(self.repo, new, present)
        if gone:
            git.remove_paths(self.repo, gone)
        return True

    # -- the journal -------------------------------------------------------------------------------
    def _write(self, entry: dict[str, object]) -> None:
        body = json.dumps(entry, sort_keys=True)
        data = json.dumps({"entry": entry, "sum": hashlib.sha256(body.encode()).hexdigest()})
        tmp = self.journal.with_name(f"{JOURNAL}.{os.getpid()}")
        tmp.write_text(data, "utf-8")
        os.replace(tmp, self.journal)

    def _read(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.journal.read_text("utf-8"))
            entry = data["entry"]
            body = json.dumps(entry, sort_keys=True)
            if hashlib.sha256(body.encode()).hexdigest() != data["sum"] or not isinstance(entry, dict):
                return None
            return entry
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None

    def _clear(self) -> None:
        try:
            self.journal.unlink(missing_ok=True)
        except IsADirectoryError:
            _remove_tree(self.journal)
        except OSError:
            pass

    def _sync_paths(self, commit: str, paths: list[str]) -> bool:
        try:
            git.sync_worktree(self.repo, commit, paths)
        except git.GitError as exc:  # e.g. someone's git holds .git/index.lock: the next pass repairs it
            self.events("local.behind", {"branch": self.branch, "reason": str(exc)[:200]})
            return False
        return True


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
