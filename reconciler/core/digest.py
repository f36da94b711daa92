"""The versioned semantic digest of a job: what it means, not how it is written.

Defaults are filled in and the result serialised canonically, so comments, key order, quoting,
flow style and line endings do not count. Old records keep the algorithm they were written
with: a new version is added beside the old ones, never in place of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from reconciler.core.timeutil import iso, parse_time

CURRENT = "v1"


def _amount(raw: Any) -> Any:
    """`3` or `"10%"` (also `"10.0%"`) in one form."""
    if isinstance(raw, str) and raw.endswith("%"):
        return str(Fraction(raw[:-1])) + "%"
    return raw


def _canonical_v1(data: dict[str, Any]) -> dict[str, Any]:
    """The meaning of a job. Keys added in 0.2 (`after`, a block's `rollout`) appear only when a job uses
    them: a job without them keeps the digest it always had, so no old record turns MODIFIED."""
    blocks = []
    for raw in data.get("blocks", []):
        block: dict[str, Any] = {
            "definition": raw.get("definition"),
            "server": raw.get("server"),
            "action": raw.get("action", "APPLY-AUTO"),
            "users": raw.get("users"),
            "content_tokens": raw.get("content_tokens") or {},
            "parameter_tokens": raw.get("parameter_tokens") or {},
            "user_tokens": {
                uid: {
                    "content_tokens": (ov or {}).get("content_tokens") or {},
                    "parameter_tokens": (ov or {}).get("parameter_tokens") or {},
                }
                for uid, ov in (raw.get("user_tokens") or {}).items()
            },
        }
        rollout = raw.get("rollout")
        if isinstance(rollout, dict):
            block["rollout"] = {"waves": [_amount(w) for w in rollout.get("waves") or []],
                                "max_failures": _amount(rollout.get("max_failures", 0))}
        blocks.append(block)
    run_at = data.get("run_at")
    canonical: dict[str, Any] = {
        "description": data.get("description", ""),
        "on_failure": data.get("on_failure", "skip"),
        "run_at": iso(parse_time(run_at)) if isinstance(run_at, str) else None,
        "suspend": bool(data.get("suspend", False)),
        "retry_of": data.get("retry_of"),
        "blocks": blocks,
    }
    if data.get("after"):  # the order jobs are named in does not count
        canonical["after"] = sorted(data["after"])
    return canonical


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # made once, not per job


def _v1(data: dict[str, Any]) -> str:
    text = _CANONICAL.encode(_canonical_v1(data))
    return "v1:sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


ALGORITHMS: dict[str, Callable[[dict[str, Any]], str]] = {"v1": _v1}


def spec_digest(data: dict[str, Any], version: str = CURRENT) -> str:
    return ALGORITHMS[version](data)


def same_meaning(data: dict[str, Any], recorded: str) -> bool | None:
    """Whether `data` still means what `recorded` was computed from; None if the version is unknown."""
    version = recorded.split(":", 1)[0]
    algorithm = ALGORITHMS.get(version)
    if algorithm is None:
        return None
    return algorithm(data) == recorded
