"""Event lines on stderr: one JSON object per line for machines, a readable line on a terminal."""

from __future__ import annotations

import json
import sys
from typing import Any

from reconciler.core.timeutil import iso, utcnow


def json_line(event: str, data: dict[str, Any]) -> None:
    """Always JSON (a pass's events when stderr is a pipe or a log file)."""
    sys.stderr.write(json.dumps({"time": iso(utcnow()), "event": event, **data}, default=str) + "\n")
    sys.stderr.flush()


def human_line(event: str, data: dict[str, Any]) -> None:
    """`12:04:10 pass finished: outcome=ok seconds=1.2 ran=job-a:SUCCESS`; problems on lines of their own."""
    time = (iso(utcnow()) or "")[11:19]
    details = []
    below = []
    for key, value in data.items():
        if key == "problems" and isinstance(value, list):
            if value:
                details.append(f"{len(value)} problem(s):")
                below += [f"    {problem}" for problem in value]
            continue
        if value is None or value == [] or value == {} or value == "":
            continue  # nothing to say
        details.append(f"{key}={_short(value)}")
    head = f"{time} {event.replace('.', ' ')}" + (": " + " ".join(details) if details else "")
    sys.stderr.write("\n".join([head, *below]) + "\n")
    sys.stderr.flush()


def emit(event: str, data: dict[str, Any]) -> None:
    """Human-readable on a terminal, JSON otherwise (daemons: watch, serve)."""
    (human_line if sys.stderr.isatty() else json_line)(event, data)


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "-"
    return str(value)
