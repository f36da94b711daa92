"""What one pass did, summarised once: for the CLI, the watch daemon, the push hook and the web runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reconciler.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS

if TYPE_CHECKING:
    from reconciler.core.problems import Problem
    from reconciler.run.reconcile_pass import PassResult


@dataclass(frozen=True)
class PassSummary:
    ran: list[tuple[str, str, str, dict[str, int]]]  # (job, status, build id, user counts)
    problems: list[Problem]
    to_run: list[str]
    left_in_flight: list[str]  # claimed by a live reconciler: left alone
    lost: list[str]  # claimed or taken over by another reconciler first
    up_to_date: int
    interrupted: bool
    extra: dict[str, Any] = field(default_factory=dict)
    held: list[tuple[str, str, str]] = field(default_factory=list)  # (job, WAITING|BLOCKED|FROZEN, why)

    @classmethod
    def of(cls, result: PassResult) -> PassSummary:
        plan = result.plan
        return cls(ran=[(r.job, r.status, r.build_id, {str(k): v for k, v in r.summary.items()}) for r in result.ran],
                   problems=list(plan.problems) if plan else [], to_run=list(plan.to_run) if plan else [],
                   left_in_flight=list(result.skipped_in_flight), lost=list(result.lost),
                   up_to_date=result.up_to_date, interrupted=result.interrupted,
                   held=[(job, plan.states[job], plan.reasons.get(job, "")) for job in
                         sorted([*plan.waiting, *plan.blocked, *plan.frozen])] + [
                             *result.held_back] if plan else [])

    @property
    def failed(self) -> bool:
        return any(status == "FAILURE" for _, status, _, _ in self.ran)

    @property
    def outcome(self) -> str:
        """ok | failure (a job ended FAILURE, or problems) | interrupted."""
        if self.interrupted:
            return "interrupted"
        return "failure" if self.failed else "ok"

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_PROBLEMS if self.failed or self.problems else EXIT_OK

    def lines(self) -> list[str]:
        """The human summary, one line per job run and one for the rest."""
        out = []
        for job, status, build_id, counts in self.ran:
            shown = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no users"
            out.append(f"{job}: {status} (build {build_id}; {shown})")
        out.extend(f"{job}: left alone, claimed by a live reconciler" for job in self.left_in_flight)
        out.extend(f"{job}: not run here, another reconciler owns it" for job in self.lost)
        out.extend(f"{job}: {state}, {why}" for job, state, why in self.held)
        if not self.ran:
            out.append(f"nothing to do: {self.up_to_date} job(s) up to date")
        return out

    def event(self) -> dict[str, Any]:
        """The `pass.finished` event's data."""
        return {"outcome": self.outcome, "ran": {job: status for job, status, _, _ in self.ran},
                "to_run": self.to_run, "problems": [p.as_text() for p in self.problems],
                "lost": self.lost, "left_in_flight": self.left_in_flight, "interrupted": self.interrupted,
                **self.extra}
