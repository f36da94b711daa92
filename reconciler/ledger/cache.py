"""A cache of per-blob work under `.git/reconciler/`, so a pass parses only what changed.

What a git blob id names never changes, so results that depend only on a file's bytes are cached
by blob id: the safe-YAML parse plus schema check of a resource file (`parse_resource`), and the
summary of a ledger record that passed every check (`parse_record`). The job history walk is
cached at the commit it reached, and continued from there.

The cache is one file, written atomically (write aside, then rename), that is safe to delete at
any time. It is never trusted across reconciler versions: its key holds `reconciler.__version__`,
a hash of the shipped schemas and a hash of the modules whose code decides the cached results, so
an upgrade (or an edit in a development checkout) starts from empty. It is stored with `marshal`
(plain data only: no code is ever loaded from it) and sealed with a checksum (`statefile`): a file
that is missing, unreadable, corrupt in any way or of the wrong shape is ignored and rebuilt; it
never changes an answer (SPEC 9.1 rule 9).
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.core import schemas
from reconciler.core.resources import Finding, Parsed, parse_resource
from reconciler.core.yamlsafe import Document
from reconciler.ledger import parallel
from reconciler.ledger.statefile import read_sealed, write_sealed

FILE_NAME = "cache-v1.bin"
HISTORIES = 4
_FORMAT = 5
_CODE = ("core/yamlsafe.py", "core/resources.py", "core/schemas.py", "core/records.py", "core/timeutil.py",
         "core/digest.py", "ledger/cache.py", "ledger/load.py", "ledger/history.py")


@cache
def cache_key() -> str:
    """Everything a cached result depends on besides the blob: version, schemas, deciding code."""
    digest = hashlib.sha256(f"{_FORMAT}:{__version__}:{schemas.fingerprint()}".encode())
    here = Path(__file__).resolve().parents[1]  # the package
    for name in _CODE:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class RecordHead:
    """What planning needs of a ledger record that passed every check (the full record is read on demand)."""

    job_blob: str
    spec_digest: str
    build_id: str
    status: str


class _LazyDocument(Document):
    """A cached `Document` whose line maps are unpacked on first use: only a problem needs a line."""

    def __init__(self, data: Any, packed_lines: bytes) -> None:
        self.data = data
        self._packed = packed_lines

    def __getattr__(self, name: str) -> Any:  # called only for attributes not set yet
        if name in ("value_lines", "key_lines") and "_packed" in self.__dict__:
            self.value_lines, self.key_lines = marshal.loads(self.__dict__.pop("_packed"))
            return getattr(self, name)
        raise AttributeError(name)


def dump_parsed(parsed: Parsed) -> bytes:
    doc = parsed.doc
    lines = marshal.dumps((doc.value_lines, doc.key_lines)) if doc is not None else None
    findings = tuple((f.line, f.message, f.code) for f in parsed.findings)
    return marshal.dumps((parsed.data, lines, findings))


def load_parsed(raw: bytes) -> Parsed:
    data, lines, findings = marshal.loads(raw)
    doc = None if lines is None else _LazyDocument(data, lines)
    return Parsed(data, doc, tuple(Finding(*f) for f in findings))


class BlobCache:
    """Cached results by blob id. `parse` is a drop-in `ParseFn` for `load_desired`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._parsed: dict[str, bytes] = {}
        self._records: dict[str, tuple[str, ...]] = {}
        self.histories: list[dict[str, Any]] = []  # job-history walks, newest first (a few commits)
        self._used_parsed: set[str] = set()
        self._used_records: set[str] = set()
        self.dirty = False
        self.hits = 0
        self.misses = 0
        if path is not None:
            self._read(path)

    def _read(self, path: Path) -> None:
        data = read_sealed(path)
        loaded = _well_formed(data) if data is not None else None
        if loaded is None or loaded[0] != cache_key():
            self.dirty = True  # absent, unreadable, corrupt or another version's: start empty, rebuild on save
            return
        _, self._parsed, self._records, self.histories = loaded

    # -- resources ---------------------------------------------------------------------------------
    def parse(self, kind: str, blob: str, raw: bytes) -> Parsed:
        key = f"{kind}:{blob}"
        self._used_parsed.add(key)
        stored = self._parsed.get(key)
        if stored is not None:
            self.hits += 1
            return load_parsed(stored)
        self.misses += 1
        result = parse_resource(kind, raw)
        self._parsed[key] = dump_parsed(result)
        self.dirty = True
        return result

    def parse_many(self, items: list[tuple[str, str, bytes]]) -> list[Parsed]:
        """`parse` over a batch: what is not cached is parsed on every core (reconciler.ledger.parallel)."""
        keys = [f"{kind}:{blob}" for kind, blob, _ in items]
        self._used_parsed.update(keys)
        missing = [(key, kind, raw) for key, (kind, _, raw) in zip(keys, items, strict=True) if key not in self._parsed]
        if missing:
            fresh = parallel.map_encoded(_parse_dumped, lambda raw: raw, [(kind, raw) for _, kind, raw in missing])
            for (key, _, _), raw in zip(missing, fresh, strict=True):
                self._parsed[key] = raw
            self.dirty = True
        self.misses += len(missing)
        self.hits += len(items) - len(missing)
        return [load_parsed(self._parsed[key]) for key in keys]

    # -- ledger records ----------------------------------------------------------------------------
    def record(self, job: str, blob: str) -> RecordHead | str | None:
        """The cached head of a good record, the reason a bad one is unreadable, or None (not cached)."""
        key = f"{job}:{blob}"
        stored = self._records.get(key)
        if stored is None:
            return None
        self._used_records.add(key)
        self.hits += 1
        if stored[0] == "!":
            return stored[1]
        return RecordHead(*stored)

    def put_record(self, job: str, blob: str, result: RecordHead | str) -> None:
        key = f"{job}:{blob}"
        self._used_records.add(key)
        self.misses += 1
        if isinstance(result, str):
            self._records[key] = ("!", result)
        else:
            self._records[key] = (result.job_blob, result.spec_digest, result.build_id, result.status)
        self.dirty = True

    def set_history(self, value: dict[str, Any]) -> None:
        """Remember a walk; a few are kept, so `check` (base and head) and `reconcile` do not evict each other."""
        if self.histories and self.histories[0] == value:
            return
        others = [h for h in self.histories if h.get("commit") != value.get("commit")]
        self.histories = [value, *others][:HISTORIES]
        self.dirty = True

    # -- saving ------------------------------------------------------------------------------------
    def save(self, present: set[str] | frozenset[str] = frozenset()) -> None:
        """Keep what this load used or what is still in the tree (`present` blob ids); drop the rest.
        Written aside and renamed into place."""
        if self.path is None:
            return

        def keep(key: str, used: set[str]) -> bool:
            return key in used or key.rsplit(":", 1)[1] in present

        parsed = {k: v for k, v in self._parsed.items() if keep(k, self._used_parsed)}
        records = {k: v for k, v in self._records.items() if keep(k, self._used_records)}
        if not self.dirty and len(parsed) == len(self._parsed) and len(records) == len(self._records):
            return
        write_sealed(self.path, marshal.dumps((cache_key(), parsed, records, self.histories)))


def _well_formed(data: bytes) -> tuple[str, dict[str, bytes], dict[str, tuple[str, ...]],
                                       list[dict[str, Any]]] | None:
    """The cache's four parts if `data` holds them in the shapes this module writes, else None."""
    try:
        key, parsed, records, history = marshal.loads(data)
    except Exception:  # whatever a damaged file makes marshal raise: it is only a cache
        return None
    if not (isinstance(key, str) and isinstance(parsed, dict) and isinstance(records, dict)
            and isinstance(history, list)):
        return None
    if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in parsed.items()):
        return None
    if not all(isinstance(k, str) and isinstance(v, tuple) and v and all(isinstance(x, str) for x in v)
               for k, v in records.items()):
        return None
    if not all(isinstance(h, dict) for h in history):
        return None
    return key, parsed, records, history


def _parse_dumped(item: tuple[str, bytes]) -> bytes:
    kind, raw = item
    return dump_parsed(parse_resource(kind, raw))


def parse_many_uncached(items: list[tuple[str, str, bytes]]) -> Iterator[Parsed]:
    """Parse a batch without a cache (the working tree, for `validate`), on every core, results as they come."""
    return parallel.imap_encoded(_parse_dumped, load_parsed, [(kind, raw) for kind, _, raw in items])


def open_cache(state_dir: Path | None) -> BlobCache:
    """The cache of a repository (`.git/reconciler/`), or a throw-away one when there is no place for it."""
    return BlobCache(state_dir / FILE_NAME if state_dir is not None else None)
