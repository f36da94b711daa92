"""Matching token values against a definition's `pattern`, with a time limit.

Patterns come from definitions, which arrive by pull request like everything else. Python's `re`
can backtrack for minutes on a pattern such as `(a|aa)+`; the `regex` engine takes a timeout, so
a hostile pattern costs at most `MATCH_SECONDS` per value and becomes a validation problem.
"""

from __future__ import annotations

import regex

MATCH_SECONDS = 0.2


class PatternTimeout(Exception):
    """The pattern did not finish matching in time (catastrophic backtracking)."""


def fullmatch(pattern: str, value: str) -> bool:
    """Whether `value` matches all of `pattern`; raises PatternTimeout rather than hang."""
    try:
        return regex.fullmatch(pattern, value, timeout=MATCH_SECONDS) is not None
    except TimeoutError:
        raise PatternTimeout(f"matching took longer than {MATCH_SECONDS} s") from None
