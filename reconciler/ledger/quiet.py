"""Remembering that a branch tip needs nothing, so the next pass at the same tip is instant.

A pass is a pure function of the tip commit (desired state, ledger and history all hang off it)
and of the time (a scheduled `run_at` falls due, a lease expires, an owner dies). After a pass
that found nothing to run, nothing in flight and no problem, we note the tip and the earliest
`run_at` still in the future. A later pass that finds the same tip before that time has provably
nothing to do, and stops before reading a single file. The note lives under `.git/reconciler/`,
is safe to delete, and is tied to the reconciler's version and code.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from functools import cache
from pathlib import Path

from reconciler import __version__
from reconciler.core.timeutil import iso, parse_time

FILE_NAME = "quiet.json"


@cache
def _code_stamp() -> str:
    """The version plus the newest source file: an upgrade or a local edit forgets every note."""
    here = Path(__file__).resolve().parents[1]  # the whole package
    newest = max(p.stat().st_mtime_ns for p in here.rglob("*.py"))
    return f"{__version__}:{newest}"


def quiet_count(state_dir: Path, branch: str, tip: str, now: datetime) -> int | None:
    """The number of up-to-date jobs if `tip` is known to need nothing at `now`, else None."""
    try:
        note = json.loads((state_dir / FILE_NAME).read_text("utf-8"))
        if note["code"] != _code_stamp() or note["branch"] != branch or note["tip"] != tip:
            return None
        if note["until"] is not None and parse_time(note["until"]) <= now:
            return None
        return int(note["up_to_date"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(state_dir: Path, branch: str, tip: str, up_to_date: int, until: datetime | None) -> None:
    note = {"code": _code_stamp(), "branch": branch, "tip": tip, "until": iso(until), "up_to_date": up_to_date}
    tmp = state_dir / f"{FILE_NAME}.{os.getpid()}"
    tmp.write_text(json.dumps(note), "utf-8")
    os.replace(tmp, state_dir / FILE_NAME)
