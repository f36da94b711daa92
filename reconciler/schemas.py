"""The shipped JSON Schemas, read with importlib.resources (never copies from a deployment repo)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

KINDS = ("job", "definition", "server", "status", "settings")


@cache
def schema(kind: str) -> dict[str, Any]:
    from reconciler.data import data_dir

    text = data_dir("schemas").joinpath(f"{kind}.schema.json").read_text("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


@cache
def validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(kind))
