"""Content tokens: finding placeholders, single-pass substitution, and broken-asset detection."""

from __future__ import annotations

import json
import re

import yaml

from reconciler.core.model import SecretRef, TokenValue

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


def as_text(data: bytes) -> str | None:
    """The file as text if it is UTF-8 without NUL bytes; binary assets are copied untouched."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def placeholders(text: str) -> list[tuple[str, int]]:
    """(token name, line) for every placeholder in `text`."""
    return [(m.group(1), text.count("\n", 0, m.start()) + 1) for m in PLACEHOLDER.finditer(text)]


def value_text(value: TokenValue | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretRef):  # pragma: no cover - callers resolve secrets first
        raise TypeError("secret references must be resolved before rendering")
    return str(value)


def render(text: str, values: dict[str, str]) -> str:
    """Substitute in one pass: an inserted value is never scanned again."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def broken_reason(relpath: str, data: bytes) -> str | None:
    """Why a rendered asset is broken, or None: .json/.yaml/.yml that does not parse."""
    lower = relpath.lower()
    if lower.endswith(".json"):
        try:
            json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return f"{relpath} is not valid JSON after rendering ({_short(exc)})"
    elif lower.endswith((".yaml", ".yml")):
        try:
            for _ in yaml.parse(data.decode("utf-8"), Loader=_Loader):
                pass
        except UnicodeDecodeError as exc:
            return f"{relpath} is not valid YAML after rendering ({_short(exc)})"
        except yaml.YAMLError as exc:  # never quote the text: it may hold a secret
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            return f"{relpath} is not valid YAML after rendering ({getattr(exc, 'problem', None) or 'error'}{at})"
    return None


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 120 else text[:117] + "..."
