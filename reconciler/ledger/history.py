"""The history walk: who added each job file, and ledger files changed by commits the reconciler did not make.

SPEC 5.7 and 9.1 rule 6 (tampering, wherever it hides): a ledger record or build log added, changed or
deleted by any commit without the `Reconciler-Build:` trailer makes its job `LEDGER_TAMPERED`, and the job
never runs again. Merge commits are judged too, since `git log` shows no files for them:

- a merge is clean when its ledger is exactly what a trivial three-way (or octopus) merge of its parents
  gives, each path taken from the one side that changed it since the merge base: a human's ordinary
  `git pull` that brings the reconciler's status commits is such a merge;
- a merge that drops, reverts or edits a ledger path otherwise (or resolves a path two sides changed
  differently) is tampering.

Cost: one `log --diff-filter=A -- jobs` for the additions, one `rev-list --invert-grep` for the commits
without the trailer and one `diff-tree --stdin` over those; merges that touch the ledger cost one
`merge-base` each and one shared `diff-tree --stdin`. The walk is cached at the commit it reached and
continued from there when only plain commits lie between.
"""

from __future__ import annotations

import re
from typing import Any

from reconciler.core.snapshot import History
from reconciler.ledger import git
from reconciler.ledger.cache import BlobCache

_LOG = re.compile(r"^\d{8}T\d{6}Z-(?P<job>[a-z0-9][a-z0-9._-]*)-[0-9a-f]{6}\.log$")


def job_of(path: str, ledger_dir: str) -> str | None:
    """The job a ledger path belongs to: `<dir>/<job>.json` or `<dir>/logs/<build id>.log`."""
    rest = path[len(ledger_dir) + 1:] if path.startswith(ledger_dir + "/") else None
    if rest is None:
        return None
    if "/" not in rest and rest.endswith(".json"):
        return rest[:-5]
    if rest.startswith("logs/") and (match := _LOG.match(rest[5:])):
        return match.group("job")
    return None


def _verb(change: git.TreeChange) -> str:
    return "added" if not change.old else "deleted" if not change.new else "changed"


def _tampering(path: str, commit: str, how: str) -> str:
    return (f"ledger file {path} was {how} by commit {commit[:12]}, which the reconciler did not make; the job "
            "will not run again (write a new job to deploy again)")


def _judge_merges(repo: git.Repo, merges: dict[str, tuple[str, ...]], ledger_dir: str,
                  touched: dict[str, list[git.TreeChange]]) -> list[tuple[str, str, str]]:
    """(commit, path, how) for every ledger path a merge does not take as a trivial merge would."""
    bases = {sha: git.merge_base_of(repo, parents) for sha, parents in merges.items()}
    pairs: list[tuple[str, str]] = []
    for sha, parents in merges.items():
        pairs += [(parent, sha) for parent in parents]
        base = bases[sha]
        if base is not None:
            pairs.append((base, sha))
    diffs = iter(git.diffs_against(repo, pairs, ledger_dir))
    found = []
    for sha, parents in merges.items():
        against = [next(diffs) for _ in parents]
        from_base = next(diffs) if bases[sha] is not None else None  # None: unrelated histories, nothing at base
        for path in sorted({c.path for c in touched[sha]}):
            merged = _in_commit(path, against)
            base = "" if from_base is None else from_base[path].new if path in from_base else merged
            sides = [d[path].new if path in d else merged for d in against]
            changed = {side for side in sides if side != base}
            if len(changed) > 1:
                found.append((sha, path, "merged from conflicting changes of its parents"))
            elif merged != (changed.pop() if changed else base):
                how = "deleted" if not merged else "reverted" if merged == base else "changed"
                found.append((sha, path, f"{how} in a merge"))
    return found


def _in_commit(path: str, against: list[dict[str, git.TreeChange]]) -> str:
    """The merge commit's own blob at `path` ('' when absent), from a parent diff that names the path."""
    for diff in against:
        if path in diff:
            return diff[path].old
    return ""


def walk(repo: git.Repo, commit: str, ledger_dir: str, since: str | None, seq: int,
         history: History) -> int:
    """Extend `history` with the commits reachable from `commit` and not from `since`; returns the last seq."""
    for sha, when, path in git.additions(repo, commit, "jobs", since=since):
        name = path[len("jobs/"):]
        if "/" not in name:
            seq += 1
            history.added[name.rsplit(".", 1)[0]] = (seq, sha, when)
    foreign = git.commits_without_trailer(repo, commit, since=since)
    touched = git.ledger_changes(repo, [sha for sha, _ in foreign], ledger_dir)
    merges = {sha: parents for sha, parents in foreign if len(parents) > 1 and sha in touched}
    findings = [(sha, c.path, _verb(c)) for sha, parents in foreign if len(parents) <= 1
                for c in touched.get(sha, [])]
    findings += _judge_merges(repo, merges, ledger_dir, touched) if merges else []
    for sha, path, how in findings:
        job = job_of(path, ledger_dir)
        if job is not None and job not in history.tampered:
            history.tampered[job] = _tampering(path, sha, how)
    return seq


def job_history(repo: git.Repo, commit: str, ledger_dir: str, blob_cache: BlobCache | None = None) -> History:
    """Who added each job file, and ledger files changed by hand; continued from the cached walk."""
    saved = [h for h in blob_cache.histories if h.get("ledger_dir") == ledger_dir] if blob_cache else []
    for found in saved:
        if found.get("commit") == commit:
            if blob_cache is not None:
                blob_cache.set_history(found)
            return _history_from(found)
    history, seq, since = History(), 0, None
    for found in saved:  # continue the walk of an ancestor, when nothing but plain commits lie between
        # (the order of additions on merged side branches must not depend on where a walk started)
        if git.is_ancestor(repo, found["commit"], commit) and git.linear_since(repo, found["commit"], commit):
            history, seq, since = _history_from(found), int(found["seq"]), found["commit"]
            break
    seq = walk(repo, commit, ledger_dir, since, seq, history)
    if blob_cache is not None:
        blob_cache.set_history({"commit": commit, "ledger_dir": ledger_dir, "seq": seq,
                                "added": dict(history.added), "tampered": dict(history.tampered)})
    return history


def _history_from(saved: dict[str, Any]) -> History:
    return History(added=dict(saved["added"]), tampered=dict(saved["tampered"]))  # marshal keeps the tuples
