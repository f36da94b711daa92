"""The failure policy (the "Deploy" dialog, made declarative), in one place. Pure.

The engine, fleet workers' collector and the pull-request check all decide with these functions,
so what a check promises is what a pass does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.core.prepare import Prepared

ABORTED_EARLIER = "not run: the job was aborted by an earlier failure"
ABORTED_BLOCK = "not run: the block was aborted (broken assets for another user)"
ABORTED_FAILURE = "not run: the job was aborted by a failure"


@dataclass
class Triage:
    """What happens to the users of one block before any driver call."""

    deploy: list[Prepared] = field(default_factory=list)  # in recipient order; `forced` says which are broken
    settled: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (status, reason), final now
    warnings: list[str] = field(default_factory=list)  # for the build log
    aborted: bool = False  # on_failure: abort fired; later blocks do not run

    def forced(self, prepared: Prepared) -> bool:
        return bool(prepared.broken)


def triage(prepared: Sequence[Prepared], on_failure: str) -> Triage:
    """Decide per user from the rendered content: deploy, SKIPPED (skip), or the whole block stops (abort)."""
    result = Triage()
    if on_failure == "abort" and any(p.broken for p in prepared):
        result.aborted = True
        for p in prepared:
            if p.broken:
                result.settled[p.user] = ("FAILED", "broken assets: " + "; ".join(p.broken))
            else:
                result.settled[p.user] = ("NOT_RUN", ABORTED_BLOCK)
        return result
    for p in prepared:
        if p.broken and on_failure == "skip":
            result.settled[p.user] = ("SKIPPED", "skipped, broken assets: " + "; ".join(p.broken))
        else:
            if p.broken:
                result.warnings.append(f"WARNING {p.user}: deploying despite broken assets (on_failure: force): "
                                       + "; ".join(p.broken))
            result.deploy.append(p)
    return result


def after_deploy(prepared: Prepared, status: str, reason: str) -> tuple[str, str]:
    """The user's result once its driver call returned: a broken user deployed anyway is FORCED."""
    if status != "FAILED" and prepared.broken:
        return "FORCED", "deployed despite broken assets: " + "; ".join(prepared.broken)
    return status, reason


def stops_job(status: str, on_failure: str) -> bool:
    """A driver failure under `abort` stops every user not started yet, in this and later blocks."""
    return status == "FAILED" and on_failure == "abort"


def interrupted_started(driver_type: str) -> tuple[str, str]:
    """A user whose non-idempotent deployment began before a crash: never run twice."""
    return ("FAILED", f"interrupted while its deployment was running; not run again because the {driver_type} "
                      "driver cannot absorb a second run (see `reconciler retry`)")
