"""Loading one consistent state of a deployment repo: settings, desired state, ledger, history."""

from __future__ import annotations

import contextlib
import functools
import gc
import marshal
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import ParamSpec, TypeVar

from reconciler import drivers
from reconciler.core.files import SETTINGS_FILE, TOP_DIRS, Entry, RepoFiles, WorktreeFiles, read_one
from reconciler.core.problems import Problem
from reconciler.core.records import RUNNING, Ledger, LedgerRecord, RecordError, check_record, parse_record, record_paths
from reconciler.core.resources import SUFFIXES, stem_of
from reconciler.core.settings import Settings, parse_settings
from reconciler.core.snapshot import History, Snapshot
from reconciler.core.validate import load_desired
from reconciler.errors import UserError
from reconciler.ledger import git, parallel
from reconciler.ledger.branch import committed_settings
from reconciler.ledger.cache import BlobCache, RecordHead, open_cache, parse_many_uncached
from reconciler.ledger.history import job_history

P = ParamSpec("P")
R = TypeVar("R")


def _collector_paused(load: Callable[P, R]) -> Callable[P, R]:
    """Run `load` with the cyclic garbage collector paused. A load builds tens of thousands of small
    containers that all live on, so the collector walked them again and again and found nothing: a fifth of
    a cold `validate` at 10,000 jobs (2.0 s, 1.6 s paused). Reference counting still frees whatever is
    dropped; the collector resumes afterwards (unless something else had paused it)."""
    @functools.wraps(load)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        was = gc.isenabled()
        gc.disable()
        try:
            return load(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return paused


class BatchedFiles:
    """A `RepoFiles` that reads all of `definitions/` in one `git cat-file --batch` the first time any of it
    is read (validation reads each definition's content folder in turn; one process, not one each)."""

    PREFIX = "definitions/"

    def __init__(self, files: RepoFiles) -> None:
        self._files = files
        self._kept: dict[str, bytes] | None = None

    def entries(self) -> dict[str, Entry]:
        return self._files.entries()

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        if not any(p.startswith(self.PREFIX) for p in paths):
            return self._files.read_many(paths)
        if self._kept is None:
            wanted = [p for p in self.entries() if p.startswith(self.PREFIX)]
            self._kept = self._files.read_many(wanted)
        kept = self._kept
        others = [p for p in paths if p not in kept]
        found = self._files.read_many(others) if others else {}
        return {p: kept[p] if p in kept else found[p] for p in paths}


class LazyRecords(MutableMapping[str, LedgerRecord]):
    """Ledger records that are read and fully checked on first access.

    Loading keeps only each good record's summary (from the cache, or from the one full check made
    when its blob is new); `LedgerRecord`s, which are large, are built when somebody asks for one.
    """

    def __init__(self, files: RepoFiles, paths: dict[str, str]) -> None:
        self._files = files
        self._paths: dict[str, str] = {}
        self._loaded: dict[str, LedgerRecord] = {}
        self._all_paths = paths

    def expect(self, job: str) -> None:
        self._paths[job] = self._all_paths[job]

    def __getitem__(self, job: str) -> LedgerRecord:
        if job in self._loaded:
            return self._loaded[job]
        path = self._paths[job]  # KeyError: not a good record
        record = parse_record(job, read_one(self._files, path))
        self._loaded[job] = record
        return record

    def __setitem__(self, job: str, record: LedgerRecord) -> None:
        self._loaded[job] = record
        self._paths.setdefault(job, "")

    def __delitem__(self, job: str) -> None:
        del self._paths[job]
        self._loaded.pop(job, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, job: object) -> bool:
        return job in self._paths

    def preload(self, jobs: Iterable[str] | None = None) -> None:
        """Read every record not read yet (or those of `jobs`) with one batch read, not one git call each."""
        chosen = self._paths if jobs is None else {j: self._paths[j] for j in jobs if j in self._paths}
        wanted = {job: path for job, path in chosen.items() if job not in self._loaded and path}
        raw = self._files.read_many(list(wanted.values())) if wanted else {}
        for job, path in wanted.items():
            with contextlib.suppress(RecordError):  # left for __getitem__ to report
                self._loaded[job] = parse_record(job, raw[path])


def _head(record: LedgerRecord) -> RecordHead:
    return RecordHead(record.job_blob, record.spec_digest, record.build_id, record.status)


def _check_record(item: tuple[str, bytes]) -> bytes:
    """Every check of one record (`check_record`: what `parse_record` checks, without building the model), as
    the marshal of its head or of why it is unreadable."""
    job, raw = item
    try:
        return marshal.dumps(check_record(job, raw))
    except RecordError as exc:
        return marshal.dumps(("!", str(exc)))


def _checked(raw: bytes) -> RecordHead | str:
    found = marshal.loads(raw)
    return found[1] if found[0] == "!" else RecordHead(*found)


def load_ledger(files: RepoFiles, ledger_dir: str, blob_cache: BlobCache | None = None) -> Ledger:
    """Every record, checked once per blob id: a cached good record is only summarised, never re-read."""
    cached = blob_cache if blob_cache is not None else BlobCache(None)
    ledger = Ledger(ledger_dir)
    entries = files.entries()
    if ledger_dir in entries:  # SPEC 3 rule 6: the one case that refuses a whole pass
        raise UserError(f"{ledger_dir} is not a directory, so the ledger cannot be read; "
                        f"{ledger_dir}/ is written only by the reconciler: restore it", 2)
    paths = record_paths(entries, ledger_dir)
    records = LazyRecords(files, paths)
    ledger.records = records
    known: dict[str, RecordHead | str] = {}
    for job, path in paths.items():
        found = cached.record(job, entries[path].blob)
        if found is not None:
            known[job] = found
    missing = [job for job in paths if job not in known]
    raw = files.read_many([paths[job] for job in missing]) if missing else {}
    checked = parallel.map_encoded(_check_record, _checked, [(job, raw[paths[job]]) for job in missing])
    for job, result in zip(missing, checked, strict=True):
        known[job] = result
        cached.put_record(job, entries[paths[job]].blob, result)
    for job, path in paths.items():
        ledger.blobs[job] = entries[path].blob
        result = known[job]
        if isinstance(result, str):
            ledger.unreadable[job] = result
        else:
            ledger.heads[job] = result
            records.expect(job)
    return ledger


def settings_at(files: RepoFiles) -> tuple[Settings, list[Problem]]:
    entries = files.entries()
    raw = files.read_many([SETTINGS_FILE])[SETTINGS_FILE] if SETTINGS_FILE in entries else None
    return parse_settings(raw)


@_collector_paused
def load_commit_state(repo: git.Repo, commit: str, overrides: dict[str, object] | None = None, *,
                      skip_executed: bool = False, judged_by: Ledger | None = None,
                      jobs: set[str] | None = None) -> Snapshot:
    """The committed state at `commit`, parsing only blobs the cache (`.git/reconciler/`) has not seen.

    `skip_executed`: do not re-validate jobs whose finished record claimed exactly this blob; they can
    never run again, and an edit changes the blob, so a changed one is still checked (a reconcile pass).
    `judged_by`: decide that from another ledger (a pull request's head is judged by the base's ledger).
    `jobs`: validate only these jobs (every job file is still listed).
    """
    blob_cache = open_cache(repo.state_dir)
    settings, problems = committed_settings(repo, commit)
    settings = settings.override(**(overrides or {}))
    files = BatchedFiles(git.GitTree(repo, commit, (SETTINGS_FILE, *TOP_DIRS, settings.ledger_dir)))
    ledger = load_ledger(files, settings.ledger_dir, blob_cache)
    only_jobs = _unexecuted_jobs(files, judged_by or ledger) if skip_executed else jobs
    desired = load_desired(files, settings, blob_cache.parse, only_jobs=only_jobs, catalog=drivers,
                           parse_many=blob_cache.parse_many)
    history = job_history(repo, commit, settings.ledger_dir, blob_cache)
    ledger.tampered.update(history.tampered)  # SPEC 5.7: a record removed by hand is never re-run
    blob_cache.save({entry.blob for entry in files.entries().values()})
    return Snapshot(settings, desired, ledger, history, commit, files, problems)


def _unexecuted_jobs(files: RepoFiles, ledger: Ledger) -> set[str]:
    """Jobs that still need validating: every job file except those a finished record claimed as is."""
    done = {job: head.job_blob for job, head in ledger.heads.items() if head.status not in RUNNING}
    wanted = set()
    for path, entry in files.entries().items():
        if path.startswith("jobs/") and path.endswith(SUFFIXES) and "/" not in path[5:]:
            name = stem_of(path)
            if done.get(name) != entry.blob:
                wanted.add(name)
    return wanted


class _ValidatedFiles(WorktreeFiles):
    """The working tree as `validate` needs it: resources and ledger records, never the build logs
    (often most of the ledger's bytes: reading and hashing them cost seconds and 150 MiB at 10,000 jobs)."""

    def __init__(self, root: Path, ledger_dir: str, dirs: tuple[str, ...] | None = None) -> None:
        super().__init__(root, ledger_dir)
        if dirs is not None:
            self.dirs = dirs  # type: ignore[assignment]  # fewer folders than the base walks
        self._logs = f"{ledger_dir}/logs/"
        self.skip = (f"{ledger_dir}/logs",)

    def _add(self, found: dict[str, Entry], full: str | Path, rel: str) -> None:
        if not rel.startswith(self._logs):
            super()._add(found, full, rel)


@_collector_paused
def load_worktree_state(root: Path) -> Snapshot:
    if not root.is_dir():
        raise UserError(f"{root}: no such directory")
    probe = _ValidatedFiles(root, "status", dirs=())  # just reconciler.yaml
    settings, problems = settings_at(probe)
    files = _ValidatedFiles(root, settings.ledger_dir)
    ledger = load_ledger(files, settings.ledger_dir)
    desired = load_desired(files, settings, catalog=drivers, parse_many=parse_many_uncached)
    return Snapshot(settings, desired, ledger, History(), None, files, problems)
