"""The versioned semantic digest of a job: what it means, not how it is written.

Defaults are filled in and the result serialised canonically, so comments, key order, quoting,
flow style and line endings do not count. Old records keep the algorithm they were written
with: a new version is added beside the old ones, never in place of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from reconciler.core.timeutil import iso, parse_time

CURRENT = "v1"


def _canonical_v1(data: dict[str, Any]) -> dict[str, Any]:
    blocks = []
    for raw in data.get("blocks", []):
        blocks.append(
            {
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
        )
    run_at = data.get("run_at")
    return {
        "description": data.get("description", ""),
        "on_failure": data.get("on_failure", "skip"),
        "run_at": iso(parse_time(run_at)) if isinstance(run_at, str) else None,
        "suspend": bool(data.get("suspend", False)),
        "retry_of": data.get("retry_of"),
        "blocks": blocks,
    }


def _v1(data: dict[str, Any]) -> str:
    text = json.dumps(_canonical_v1(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
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
