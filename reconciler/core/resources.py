"""Rules 1 and 2: each resource file on its own (safe YAML, its JSON Schema, its name).

`parse_resource` is pure and depends only on the file's bytes and kind, so its result can be
cached by git blob id; the path is attached afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reconciler.core import schemas, yamlsafe
from reconciler.core.yamlsafe import Document

NAME_RE = re.compile(r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$")
SUFFIXES = (".yaml", ".yml")

# Human wording for the schema's patterns, so nobody has to read a regular expression.
_PATTERN_WORDS = {
    "resource_name": "a name is lower-case letters, digits, '.', '_' or '-', starts with a letter or digit, "
    "is at most 63 characters and has no '..'",
    "user_id": "a user id is letters, digits and '._@-', 1 to 128 characters, not starting with '.', without '..'",
    "token_name": "a token name is lower-case letters, digits and '_', not starting with a digit, "
    "at most 63 characters",
    "timestamp": "a time is ISO 8601, e.g. 2026-11-21T12:00:00Z",
}


@dataclass(frozen=True)
class Finding:
    """A problem found inside one file, before its path is known."""

    line: int | None
    message: str
    code: str


@dataclass(frozen=True)
class Parsed:
    data: Any
    doc: Document | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


def _pattern_words() -> dict[str, str]:
    words: dict[str, str] = {}
    for kind in ("job", "definition", "server", "status", "settings"):
        for key, sub in schemas.schema(kind).get("$defs", {}).items():
            if key in _PATTERN_WORDS and "pattern" in sub:
                words[sub["pattern"]] = _PATTERN_WORDS[key]
    return words


_WORDS: dict[str, str] | None = None


def where(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_findings(kind: str, data: Any, doc: Document | None) -> list[Finding]:
    """Every schema violation of `data`, each at the most specific line."""
    global _WORDS
    if schemas.is_valid(kind, data):
        return []
    validator = schemas.validator(kind)
    if _WORDS is None:
        _WORDS = _pattern_words()
    found: list[Finding] = []
    for error in validator.iter_errors(data):
        found.extend(_explain(error, doc, _WORDS))
    return found


def _line(doc: Document | None, path: tuple[Any, ...], key: bool = False) -> int | None:
    if doc is None:
        return 1
    return doc.line_of(path, key=key)


def _explain(error: Any, doc: Document | None, words: dict[str, str]) -> list[Finding]:
    from jsonschema.exceptions import best_match

    path = tuple(error.absolute_path)
    kind = error.validator
    if kind in ("anyOf", "oneOf") and error.context:
        inner = best_match(error.context)
        if inner is not None and inner.validator not in ("type", "const"):
            return _explain(inner, doc, words)
        return [Finding(_line(doc, path), f"{where(path)}: {_brief(error.instance)} is not a valid value here "
                        f"({_anyof_words(error)})", "SCHEMA")]
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return [
            Finding(_line(doc, (*path, k), key=True), f"{where((*path, k))}: unknown key {k!r}{hint}", "SCHEMA")
            for k in extra
        ]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [Finding(_line(doc, path), f"{where(path)}: missing required key {missing!r}", "SCHEMA")]
    if kind == "pattern":
        explanation = words.get(error.validator_value, f"must match {error.validator_value}")
        return [Finding(_line(doc, path), f"{where(path)}: {_brief(error.instance)} is not valid: {explanation}",
                        "SCHEMA")]
    if kind == "propertyNames":
        return [Finding(_line(doc, path), f"{where(path)}: {error.message}", "SCHEMA")]
    if kind == "enum":
        options = ", ".join(str(v) for v in error.validator_value)
        return [Finding(_line(doc, path), f"{where(path)}: {_brief(error.instance)} is not one of: {options}",
                        "SCHEMA")]
    if kind == "type":
        return [Finding(_line(doc, path), f"{where(path)}: expected {_type_words(error.validator_value)}, "
                        f"got {_brief(error.instance)}", "SCHEMA")]
    return [Finding(_line(doc, path), f"{where(path)}: {error.message}", "SCHEMA")]


def _type_words(value: Any) -> str:
    names = value if isinstance(value, list) else [value]
    words = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "nothing"}
    return " or ".join(words.get(str(n), str(n)) for n in names)


def _anyof_words(error: Any) -> str:
    parts = []
    for sub in error.context:
        if sub.validator == "type":
            parts.append(_type_words(sub.validator_value))
        elif sub.validator == "const":
            parts.append(repr(sub.validator_value))
    return "expected " + " or ".join(dict.fromkeys(parts)) if parts else error.message


def _brief(value: Any) -> str:
    text = repr(value)
    if isinstance(value, dict):
        text = "a mapping"
    elif isinstance(value, list):
        text = "a list"
    elif value is None:
        text = "nothing (null)"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_resource(kind: str, raw: bytes) -> Parsed:
    """Load and schema-check one file's bytes. Never raises for bad input."""
    try:
        doc = yamlsafe.load(raw)
    except yamlsafe.YamlProblem as problem:
        return Parsed(None, None, (Finding(problem.line, problem.message, problem.code),))
    data = doc.data
    if data is None:
        return Parsed(None, doc, (Finding(1, f"file is empty; a {kind} is a mapping", "SCHEMA"),))
    if not isinstance(data, dict):
        return Parsed(None, doc, (Finding(1, f"a {kind} file must be a mapping, not {_brief(data)}", "SCHEMA"),))
    return Parsed(data, doc, tuple(schema_findings(kind, data, doc)))


def stem_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def name_findings(path: str, parsed: Parsed) -> list[Finding]:
    """The identity rules: the stem is a valid name and a `name:` key agrees with it."""
    stem = stem_of(path)
    found = []
    if not NAME_RE.match(stem):
        found.append(Finding(1, f"file name {stem!r} is not a valid resource name: "
                             f"{_PATTERN_WORDS['resource_name']}", "NAME_INVALID"))
    data = parsed.data
    if isinstance(data, dict) and "name" in data and data["name"] != stem:
        line = parsed.doc.line_of(("name",)) if parsed.doc else 1
        found.append(Finding(line, f"name {data['name']!r} does not match the file name {stem!r}", "NAME_MISMATCH"))
    return found
