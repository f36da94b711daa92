"""Loading one consistent state of a deployment repo: settings, desired state, ledger, history."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reconciler import git
from reconciler.errors import UserError
from reconciler.ledger import Ledger, RecordError, parse_record, record_paths
from reconciler.plan import Plan, plan
from reconciler.problems import Problem
from reconciler.settings import Settings, parse_settings
from reconciler.source import SETTINGS_FILE, TOP_DIRS, RepoFiles, WorktreeFiles
from reconciler.timeutil import utcnow
from reconciler.validate import Desired, load_desired


@dataclass
class History:
    """Per job: (order, commit, unix time) of the commit that last added its file; tampered records."""

    added: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    tampered: dict[str, str] = field(default_factory=dict)

    def order(self) -> dict[str, tuple[int, str]]:
        return {job: (seq, commit) for job, (seq, commit, _) in self.added.items()}


@dataclass
class RepoState:
    settings: Settings
    desired: Desired
    ledger: Ledger
    history: History
    commit: str | None
    files: RepoFiles
    settings_problems: list[Problem]

    def plan(self) -> Plan:
        result = plan(self.desired, self.ledger, utcnow(), self.history.order())
        if self.settings_problems:
            result.problems = sorted([*self.settings_problems, *result.problems],
                                     key=lambda p: (p.path, p.line or 0))
        return result


def load_ledger(files: RepoFiles, ledger_dir: str) -> Ledger:
    ledger = Ledger(ledger_dir)
    entries = files.entries()
    paths = record_paths(entries, ledger_dir)
    raw = files.read_many(list(paths.values()))
    for job, path in paths.items():
        ledger.blobs[job] = entries[path].blob
        try:
            ledger.records[job] = parse_record(job, raw[path])
        except RecordError as exc:
            ledger.unreadable[job] = str(exc)
    return ledger


def job_history(repo: git.Repo, commit: str, ledger_dir: str) -> History:
    history = History()
    seq = 0
    for change in git.changes(repo, commit, ("jobs", ledger_dir)):
        seq += 1
        top, _, name = change.path.partition("/")
        if top == "jobs" and "/" not in name and change.status == "A":
            stem = name.rsplit(".", 1)[0]
            history.added[stem] = (seq, change.commit, change.time)
        elif top == ledger_dir and "/" not in name and name.endswith(".json"):
            job = name[:-5]
            if change.status == "D" and not change.by_reconciler:
                history.tampered[job] = (f"ledger record {change.path} was removed by commit {change.commit[:12]}, "
                                         "which the reconciler did not make; the job will not run again "
                                         "(write a new job to deploy again)")
            elif change.status in ("A", "M"):
                history.tampered.pop(job, None)
    return history


def settings_at(files: RepoFiles) -> tuple[Settings, list[Problem]]:
    entries = files.entries()
    raw = files.read_many([SETTINGS_FILE])[SETTINGS_FILE] if SETTINGS_FILE in entries else None
    return parse_settings(raw)


def load_commit_state(repo: git.Repo, commit: str, overrides: dict[str, object] | None = None) -> RepoState:
    settings_files = git.GitTree(repo, commit, (SETTINGS_FILE,))
    settings, problems = settings_at(settings_files)
    settings = settings.override(**(overrides or {}))
    files = git.GitTree(repo, commit, (SETTINGS_FILE, *TOP_DIRS, settings.ledger_dir))
    ledger = load_ledger(files, settings.ledger_dir)
    desired = load_desired(files, settings)
    history = job_history(repo, commit, settings.ledger_dir)
    ledger.tampered.update(history.tampered)  # SPEC 5.7: a record removed by hand is never re-run
    return RepoState(settings, desired, ledger, history, commit, files, problems)


def load_worktree_state(root: Path) -> RepoState:
    if not root.is_dir():
        raise UserError(f"{root}: no such directory")
    probe = WorktreeFiles(root)
    settings, problems = settings_at(probe)
    files = WorktreeFiles(root, settings.ledger_dir)
    ledger = load_ledger(files, settings.ledger_dir)
    desired = load_desired(files, settings)
    return RepoState(settings, desired, ledger, History(), None, files, problems)
