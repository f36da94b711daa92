"""The shipped JSON Schemas, read with importlib.resources (never copies from a deployment repo)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

KINDS = ("job", "definition", "server", "status", "settings")


@cache
def schema(kind: str) -> dict[str, Any]:
    from reconciler.core.package_data import data_dir

    text = data_dir("schemas").joinpath(f"{kind}.schema.json").read_text("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


@cache
def validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(kind))


@cache
def _fast_validator(kind: str) -> Any:
    """The Rust validator (jsonschema_rs) for the yes/no answer, or None when it is not installed."""
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - the dependency is declared; tolerate a stripped install
        return None
    return jsonschema_rs.Draft202012Validator(schema(kind), validate_formats=False)


def is_valid(kind: str, data: Any) -> bool:
    """Whether `data` matches the shipped schema. The fast validator answers yes; a no (or anything it
    cannot represent, such as integers beyond 64 bits) is always decided by `jsonschema` itself, so the
    answer never differs from the reference validator's."""
    fast = _fast_validator(kind)
    if fast is not None:
        try:
            if fast.is_valid(data):
                return True
        except Exception:  # unrepresentable data: the reference validator decides
            pass
    return bool(validator(kind).is_valid(data))


@cache
def fingerprint() -> str:
    """A hash of every shipped schema: part of every cache key, so a schema change invalidates caches."""
    import hashlib

    digest = hashlib.sha256()
    for kind in KINDS:
        digest.update(json.dumps(schema(kind), sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:16]
