"""Remembering that a branch tip needs nothing, so the next pass at the same tip is instant.

A pass is a pure function of the tip commit (desired state, ledger and history all hang off it)
and of the time (a scheduled `run_at` falls due, a lease expires, an owner dies). After a pass
that found nothing to run, nothing in flight and no problem, we note the tip and the earliest
`run_at` still in the future. A later pass that finds the same tip before that time has provably
nothing to do, and stops before reading a single file. The note lives under `.git/reconciler/`,
is safe to delete, and is tied to the reconciler's version and code. It carries a checksum: a note
that is damaged in any way is no note at all (SPEC 9.1 rule 9), so the pass simply does its work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path

from reconciler import __version__
from reconciler.core.timeutil import iso, parse_time
from reconciler.ledger.statefile import read_regular, write_atomic

FILE_NAME = "quiet.json"


@cache
def _code_stamp() -> str:
    """The version plus the newest source file: an upgrade or a local edit forgets every note."""
    here = Path(__file__).resolve().parents[1]  # the whole package
    newest = max(p.stat().st_mtime_ns for p in here.rglob("*.py"))
    return f"{__version__}:{newest}"


def _checksum(note: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(note, sort_keys=True).encode()).hexdigest()


def _read_note(state_dir: Path) -> dict[str, object] | None:
    raw = read_regular(state_dir / FILE_NAME, 1 << 16)
    try:
        sealed = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(sealed, dict) or not isinstance(sealed.get("note"), dict):
        return None
    note: dict[str, object] = sealed["note"]
    return note if sealed.get("sha256") == _checksum(note) else None


def quiet_count(state_dir: Path, branch: str, tip: str, now: datetime) -> int | None:
    """The number of up-to-date jobs if `tip` is known to need nothing at `now`, else None."""
    note = _read_note(state_dir)
    if note is None or note.get("code") != _code_stamp() or note.get("branch") != branch or note.get("tip") != tip:
        return None
    until, count = note.get("until"), note.get("up_to_date")
    if not isinstance(count, int) or not (until is None or isinstance(until, str)):
        return None
    try:
        if until is not None and parse_time(until) <= now:
            return None
    except (ValueError, OverflowError):
        return None
    return count


def remember(state_dir: Path, branch: str, tip: str, up_to_date: int, until: datetime | None) -> None:
    note = {"code": _code_stamp(), "branch": branch, "tip": tip, "until": iso(until), "up_to_date": up_to_date}
    write_atomic(state_dir / FILE_NAME, json.dumps({"note": note, "sha256": _checksum(note)}).encode())
