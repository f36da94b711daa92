"""The job list's cache: what a row shows of each ledger record and job file, by blob id.

`status`, `/api/jobs` and the page list every job. Parsing and checking 9,000 records on every
listing costs seconds, yet what a row shows of a record depends only on the record's bytes, which
its blob id names. So each record's `RecordSummary` and each job file's `JobFacts` is kept in
`.git/reconciler/listing-v1.bin` (beside the main cache, written the same way: sealed with a
checksum, aside, then renamed; whatever damage it suffers reads as absent; safe to delete; never
trusted across versions or code changes). Misses are read with one
`git cat-file --batch` and the records are fully checked as always before they are summarised.
"""

from __future__ import annotations

import hashlib
import json
import marshal
from functools import cache
from pathlib import Path
from typing import Any

from reconciler.core.files import RepoFiles
from reconciler.core.listing import JobFacts, Listing, RecordSummary
from reconciler.core.resources import parse_resource
from reconciler.core.snapshot import Snapshot
from reconciler.ledger.cache import cache_key
from reconciler.ledger.statefile import read_sealed, write_sealed

FILE_NAME = "listing-v1.bin"


@cache
def listing_key() -> str:
    """The main cache's key (version, schemas, the code that checks records) plus the listing's own code."""
    digest = hashlib.sha256(cache_key().encode())
    here = Path(__file__).resolve().parents[1]
    for name in ("core/listing.py", "ledger/listing_cache.py"):
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()


class ListingCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.summaries: dict[str, tuple[object, ...]] = {}  # "<job>:<record blob>" -> RecordSummary tuple
        self.facts: dict[str, tuple[str, str | None]] = {}  # "<job file blob>" -> (description, retry_of)
        self.dirty = False
        if path is not None:
            raw = read_sealed(path)  # a regular file with a good checksum, else None: never blocks, never follows
            try:
                key, summaries, facts = marshal.loads(raw) if raw is not None else (None, {}, {})
            except (ValueError, EOFError, TypeError):
                return  # absent, unreadable or damaged: start empty, rebuilt on save
            if key == listing_key() and isinstance(summaries, dict) and isinstance(facts, dict):
                self.summaries, self.facts = summaries, facts
            else:
                self.dirty = True

    def save(self, keep_summaries: set[str], keep_facts: set[str]) -> None:
        """Keep only what the listed state holds; written aside and renamed into place."""
        summaries = {k: v for k, v in self.summaries.items() if k in keep_summaries}
        facts = {k: v for k, v in self.facts.items() if k in keep_facts}
        if self.path is None or (not self.dirty and len(summaries) == len(self.summaries)
                                 and len(facts) == len(self.facts)):
            return
        write_sealed(self.path, marshal.dumps((listing_key(), summaries, facts)))  # aside, then renamed


CHUNK = 500  # records or job files read per batch on a cold cache: memory stays flat


def load_listing(state: Snapshot, state_dir: Path | None) -> Listing:
    """The job list of `state`, reading only the records and job files this cache has not seen."""
    cached = ListingCache(state_dir / FILE_NAME if state_dir is not None else None)
    ledger = state.ledger
    wanted = {job: f"{job}:{ledger.blobs[job]}" for job in ledger.records if job in ledger.blobs}
    missing = [job for job, key in wanted.items() if key not in cached.summaries]
    if missing:
        _summarise(state, missing, wanted, cached)
    summaries = {job: RecordSummary.from_tuple(cached.summaries[key]) for job, key in wanted.items()
                 if key in cached.summaries}
    facts = _job_facts(state, cached)
    cached.save(set(wanted.values()), {jf.blob for jf in state.desired.job_files.values()})
    return Listing(state, summaries, facts)


def _summarise(state: Snapshot, jobs: list[str], keys: dict[str, str], cached: ListingCache) -> None:
    """Summaries of records not cached yet, read in batches. Every one of these blobs passed every check
    of `parse_record` when the ledger was loaded (or earlier, by blob id): the JSON is summarised as is."""
    files: RepoFiles = state.files
    for start in range(0, len(jobs), CHUNK):
        chunk = jobs[start:start + CHUNK]
        raw = files.read_many([state.ledger.path(job) for job in chunk])
        for job in chunk:
            try:
                summary = RecordSummary.of_data(json.loads(raw[state.ledger.path(job)]))
            except (KeyError, TypeError, ValueError):  # cannot happen for a checked blob: the full check decides
                summary = RecordSummary.of(state.ledger.records[job])
            cached.summaries[keys[job]] = summary.as_tuple()
        cached.dirty = True


def _job_facts(state: Snapshot, cached: ListingCache) -> dict[str, JobFacts]:
    """Description and `retry_of` of the job files this state did not parse: executed jobs whose finished
    record claimed exactly these bytes (validated then), so a plain safe load of two keys is enough."""
    unparsed = {name: jf for name, jf in state.desired.job_files.items() if jf.data is None}
    missing = [jf for jf in unparsed.values() if jf.blob not in cached.facts]
    files: RepoFiles = state.files
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start:start + CHUNK]
        raw = files.read_many([jf.path for jf in chunk])
        for jf in chunk:
            facts = JobFacts.of(_plain_load(raw[jf.path]))
            cached.facts[jf.blob] = (facts.description, facts.retry_of)
            cached.dirty = True
    return {name: JobFacts(*cached.facts[jf.blob]) for name, jf in unparsed.items()}


def _plain_load(raw: bytes) -> Any:
    """libyaml's safe loader (plain data only), falling back to the full line-keeping one on any doubt."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None and len(raw) <= 1024 * 1024:
        try:
            return yaml.load(raw, Loader=loader)  # a safe loader: plain data, no tags
        except (yaml.YAMLError, RecursionError, ValueError):
            pass
    return parse_resource("job", raw).data
