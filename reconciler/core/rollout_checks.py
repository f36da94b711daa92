"""Validation rules of the 0.2 rollout keys of a job (SPEC 9.4), called by `validate._check_job`.

What needs the ledger (a named job that failed, is unknown, or a cycle of `after`) is the plan's
(`reconciler.core.gates`); what the job file alone decides is here.
"""

from __future__ import annotations

from typing import Any

from reconciler.core.model import Block
from reconciler.core.problems import ProblemList
from reconciler.core.rollout import wave_problems


def after_lines(data: dict[str, Any], doc: Any) -> dict[str, int]:
    """Line of each job named in `after:` ("" -> the line of `after:` itself), for the plan's problems."""
    names = data.get("after") or []
    if not names:
        return {}
    found = {"": doc.line_of(("after",), key=True)}
    for index, name in enumerate(names):
        found[str(name)] = doc.line_of(("after", index))
    return found


def check_block_rollout(block: Block, recipients: list[str], at: tuple[Any, ...], path: str, doc: Any,
                        out: ProblemList) -> None:
    """Waves cumulative and increasing, percentages in (0%, 100%] (see reconciler.core.rollout)."""
    if block.rollout is None:
        return
    for index, message in wave_problems(block.rollout.waves, len(recipients)):
        out.add(path, doc.line_of((*at, "rollout", "waves", index)), message, "ROLLOUT_WAVES")
    budget = block.rollout.max_failures
    if budget.percent and budget.value > 100:
        out.add(path, doc.line_of((*at, "rollout", "max_failures")),
                f"max_failures {budget} must be a percentage of at most 100%", "ROLLOUT_WAVES")
