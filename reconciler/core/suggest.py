"""'Did you mean X?' for a mistyped name: the closest known one, when one is close. Pure."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_CANDIDATES = 20_000  # a server may have many users: beyond this, looking costs more than it helps


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' (to append to a message), or '' when nothing is close."""
    candidates = [k for k in dict.fromkeys(known) if k != name]
    if not candidates or len(candidates) > MAX_CANDIDATES:
        return ""
    folded = {k.lower(): k for k in candidates}
    if name.lower() in folded:  # only the case differs
        return f"; did you mean {folded[name.lower()]!r}?"
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {found[0]!r}?" if found else ""
