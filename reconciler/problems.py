"""Validation problems are data: a file, a line, a message and a stable code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    line: int | None
    message: str
    code: str

    def as_text(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message} [{self.code}]"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


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
        return sorted(set(self.items), key=lambda p: (p.path, p.line or 0, p.code, p.message))

    def __bool__(self) -> bool:
        return bool(self.items)
