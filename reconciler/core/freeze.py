"""Freeze windows (`freeze:` in reconciler.yaml, SPEC 9.4): when no job may be claimed on an environment.

Pure: every answer is a function of the windows, the environments a job deploys to, and a moment.
All times are UTC. A window covers `[start, end)`: a job is claimable again at the very second the
window ends, so "the first pass after the window" runs it.

- absolute: `{from: 2026-12-23T18:00:00Z, to: 2027-01-04T08:00:00Z, environments: [prod], reason: ...}`
- weekly: `{weekly: {day: FRI, at: "18:00", for: 64h}, environments: [prod], reason: ...}`: every week
  from that weekday and time (UTC) for that long (at most 7 days, so a window never overlaps itself).

A window without `environments` freezes every environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.timeutil import parse_time

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
DEFAULT_REASON = "deployment freeze"
MAX_WEEKLY = timedelta(days=7)
_DURATION = re.compile(r"^(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?$")
_HORIZON = 1000  # windows chained one after another that `thaws_at` follows before it gives up


@dataclass(frozen=True)
class FreezeWindow:
    reason: str
    environments: frozenset[str] | None  # None: every environment
    start: datetime | None = None  # absolute window
    end: datetime | None = None
    weekday: int | None = None  # weekly window: 0 = Monday
    at: timedelta | None = None  # time of day the weekly window starts
    length: timedelta | None = None

    def applies_to(self, environment: str) -> bool:
        return self.environments is None or environment in self.environments

    def covering(self, moment: datetime) -> tuple[datetime, datetime] | None:
        """The occurrence of this window that covers `moment` (start, end), or None."""
        if self.start is not None and self.end is not None:
            return (self.start, self.end) if self.start <= moment < self.end else None
        assert self.weekday is not None and self.at is not None and self.length is not None
        midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        this_week = midnight - timedelta(days=moment.weekday()) + timedelta(days=self.weekday) + self.at
        for start in (this_week - timedelta(days=7), this_week):  # the one that began last week may still run
            if start <= moment < start + self.length:
                return start, start + self.length
        return None

    def describe(self) -> str:
        if self.start is not None:
            return f"{_iso(self.start)} to {_iso(self.end)}"
        assert self.weekday is not None and self.at is not None and self.length is not None
        minutes = int(self.at.total_seconds()) // 60
        return f"every {DAYS[self.weekday]} {minutes // 60:02d}:{minutes % 60:02d} UTC for {_duration(self.length)}"


@dataclass(frozen=True)
class Frozen:
    """Why a job is not claimed now, and when it could be."""

    reason: str
    until: datetime | None  # the first moment no window holds any of its environments (None: not within reach)
    environments: tuple[str, ...]  # the job's environments frozen now

    def message(self) -> str:
        when = f"until {_iso(self.until)}" if self.until else "with no end in sight (every moment is frozen)"
        return f"frozen {when} on {', '.join(self.environments)}: {self.reason}"


def parse_duration(text: str) -> timedelta | None:
    match = _DURATION.match(text)
    if not text or match is None:
        return None
    return timedelta(days=int(match["d"] or 0), hours=int(match["h"] or 0), minutes=int(match["m"] or 0))


def window_from_data(raw: dict[str, Any]) -> tuple[FreezeWindow | None, str | None, tuple[str, ...]]:
    """A window from a schema-valid entry; or (None, why it is wrong, the key path to blame)."""
    envs = frozenset(raw["environments"]) if raw.get("environments") else None
    reason = str(raw.get("reason") or DEFAULT_REASON)
    if "weekly" in raw:
        weekly = raw["weekly"]
        length = parse_duration(weekly["for"])
        if length is None or length <= timedelta(0) or length > MAX_WEEKLY:
            return None, f"weekly window: for {weekly['for']!r} must be longer than 0 and at most 7d", ("weekly", "for")
        hours, minutes = (int(part) for part in weekly["at"].split(":"))
        return FreezeWindow(reason, envs, weekday=DAYS.index(weekly["day"]),
                            at=timedelta(hours=hours, minutes=minutes), length=length), None, ()
    try:
        start, end = parse_time(raw["from"]), parse_time(raw["to"])
    except (ValueError, OverflowError) as exc:
        return None, f"freeze window: not a valid time ({exc})", ("from",)
    if end <= start:
        return None, f"freeze window: to ({raw['to']}) must be later than from ({raw['from']})", ("to",)
    return FreezeWindow(reason, envs, start=start, end=end), None, ()


def frozen(windows: Iterable[FreezeWindow], environments: Iterable[str], now: datetime) -> Frozen | None:
    """Whether a job deploying to `environments` is frozen at `now`; None when it may be claimed."""
    windows = tuple(windows)
    envs = tuple(dict.fromkeys(environments))
    hits = [(w, e) for w in windows for e in envs if w.applies_to(e) and w.covering(now) is not None]
    if not hits:
        return None
    reasons = list(dict.fromkeys(w.reason for w, _ in hits))
    return Frozen("; ".join(reasons), thaws_at(windows, envs, now), tuple(dict.fromkeys(e for _, e in hits)))


def thaws_at(windows: Iterable[FreezeWindow], environments: Iterable[str], moment: datetime) -> datetime | None:
    """The first moment at or after `moment` when no window holds any of `environments`.

    Windows may overlap or follow each other (a weekly window inside a holiday freeze): each step jumps
    to the end of every occurrence covering the moment. None if the windows leave no gap in reach."""
    relevant = [w for w in windows if any(w.applies_to(e) for e in environments)]
    for _ in range(_HORIZON):
        ends = [span[1] for w in relevant if (span := w.covering(moment)) is not None]
        if not ends:
            return moment
        moment = max(ends)
    return None


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _duration(length: timedelta) -> str:
    minutes = int(length.total_seconds()) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n) or "0m"
