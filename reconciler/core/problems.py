"""Validation problems are data: a file, a line, a message and a stable code."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    line: int | None
    message: str
    code: str

    def as_text(self) -> str:
        """One printable line, whatever a hostile file name or value holds (newlines, escapes, bad bytes)."""
        path = printable(self.path)
        where = f"{path}:{self.line}" if self.line is not None else path
        return f"{where}: {printable(self.message)} [{self.code}]"

    def sort_key(self) -> tuple[str, int, str, str]:
        """The one order problems are reported in: file, line, code, message."""
        return (self.path, self.line or 0, self.code, self.message)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"], data["message"] = encodable(self.path), encodable(self.message)
        return data


def printable(text: str) -> str:
    """Control characters and undecodable bytes as escapes (`\\n`, `\\udcff`); other text unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def encodable(text: str) -> str:
    """Text that encodes as UTF-8: a file name's undecodable bytes (lone surrogates) become escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(repr(c)[1:-1] if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


@dataclass
class ProblemList:
    """Problems gathered during one run; ordered by file then line when reported."""

    items: list[Problem] = field(default_factory=list)

    def add(self, path: str, line: int | None, message: str, code: str) -> Problem:
        problem = Problem(path, line, message, code)
        self.items.append(problem)
        return problem

    def extend(self, problems: list[Problem]) -> None:
        self.items.extend(problems)

    def sorted(self) -> list[Problem]:
        return sort_problems(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems without duplicates, in report order (`Problem.sort_key`)."""
    return sorted(set(problems), key=Problem.sort_key)
