"""Rollout waves and the failure budget of a block (`rollout:`, SPEC 9.4). Pure.

The engine calls, for each block that has a `rollout`:

    waves = plan_waves(recipients, block.rollout)        # list[list[str]]: the users each wave adds
    for i, wave in enumerate(waves):
        ... deploy the users of `wave` that have no result yet ...
        log(wave_summary(block.index, i, waves, results_of_block, block.rollout, len(recipients)))
        if budget_exceeded(so_far(waves, i, results_of_block), block.rollout, len(recipients)):
            ... every user without a result: NOT_RUN, reason HALTED; the job ends FAILURE; later blocks
            do not run (their users NOT_RUN, reason HALTED too) ...

`so_far` counts only the users of the waves done: a user the failure policy settled up front (SKIPPED
for broken assets) counts in its own wave, not before it.
`plan_waves(recipients, None)` is one wave of everybody, and `budget_exceeded(..., None, ...)` is always
False, so the engine can treat every block alike. A resumed build recomputes the same waves (they
depend only on the recipients and the rollout) and skips the users that already have a result.

Rules (the job schema and `validate` enforce the first three):
- A wave is a number of users (`3`) or a percentage of the block's recipients (`"10%"`), **cumulative**:
  `[1, "10%", "100%"]` means 1 user, then up to 10% of them in total, then everybody.
- Percentages are rounded **up** (`ceil`): "10%" of 5 users is 1 user, so a percentage wave above 0%
  always reaches someone. Counts larger than the block are capped at its size.
- Waves must grow: two counts or two percentages in a row that do not increase are a validation
  problem (ROLLOUT_WAVES), as is a percentage above 100% or of 0%. A wave that, once resolved for
  this block's size, adds nobody (`[1, "10%"]` for 5 users: both are 1) is merged into the one
  before it, so **every wave returned has at least one user**; a wave smaller than the one before
  it once resolved is a validation problem too.
- The last wave always reaches every recipient: when the waves written stop short (`[1, 5]` for 20
  users), a final wave of the remaining users is added, as progressive delivery tools promote to
  100% after their last step. `check` shows every wave, the added one included.
- The budget is `max_failures` (default 0): a number of users or a percentage of the **block's**
  recipients. After a wave, it is exceeded when more users of the block than that ended `FAILED` or
  `SKIPPED` (compared exactly, no rounding: "10%" of 15 users allows 1, since 2 > 1.5).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

from reconciler.core.model import Amount, Rollout

HALTED = "halted by rollout"
COUNTED = ("FAILED", "SKIPPED")  # what spends the failure budget (FORCED is a warning, not a failure)


def wave_targets(total: int, rollout: Rollout | None) -> list[int]:
    """Cumulative user counts after each wave, strictly increasing, the last one `total`."""
    if total <= 0:
        return []
    if rollout is None:
        return [total]
    targets: list[int] = []
    for wave in rollout.waves:
        reached = min(total, math.ceil(wave.of(total)))
        if reached > (targets[-1] if targets else 0):
            targets.append(reached)
    if not targets or targets[-1] < total:
        targets.append(total)
    return targets


def plan_waves(recipients: Sequence[str], rollout: Rollout | None) -> list[list[str]]:
    """The users each wave adds, in recipient order; together exactly `recipients`, none empty."""
    waves, start = [], 0
    for target in wave_targets(len(recipients), rollout):
        waves.append(list(recipients[start:target]))
        start = target
    return waves


def so_far(waves: Sequence[Sequence[str]], index: int, results: Mapping[str, str]) -> list[str]:
    """The statuses of the users of waves 0..index that have a result (what the budget is judged on)."""
    return [results[uid] for wave in waves[: index + 1] for uid in wave if uid in results]


def failures(statuses: Iterable[str]) -> int:
    return sum(1 for status in statuses if status in COUNTED)


def allowed(rollout: Rollout, total: int) -> float:
    """The budget in users (may be fractional for a percentage): more failures than this halt."""
    return float(rollout.max_failures.of(total))


def budget_exceeded(statuses: Iterable[str], rollout: Rollout | None, total: int) -> bool:
    """Whether the block must halt: more users than `max_failures` ended FAILED or SKIPPED.

    `statuses`: the results of the block's users so far (any iterable of user statuses, e.g. the
    values of the block's results mapping). `total`: the number of the block's recipients."""
    if rollout is None:
        return False
    return failures(statuses) > rollout.max_failures.of(total)


def wave_problems(waves: Sequence[Amount], total: int | None) -> list[tuple[int, str]]:
    """(index of the wave, why) for waves that are not cumulative and increasing. `total`: the block's
    recipients, when known (mixed counts and percentages can only be compared for a known size)."""
    found: list[tuple[int, str]] = []
    for index, wave in enumerate(waves):
        if wave.percent and not 0 < wave.value <= 100:
            found.append((index, f"wave {wave} must be a percentage above 0% and at most 100%"))
    if found:
        return found
    previous: dict[bool, Amount] = {}
    resolved: list[tuple[int, int]] = []
    for index, wave in enumerate(waves):
        last = previous.get(wave.percent)
        if last is not None and wave.value <= last.value:
            found.append((index, f"waves are cumulative: wave {wave} must be larger than the earlier wave "
                                 f"{last} (write the total reached after each wave, e.g. [1, \"10%\", \"100%\"])"))
        previous[wave.percent] = wave
        if total is not None:
            resolved.append((index, min(total, math.ceil(wave.of(total)))))
    if not found:
        for (_, before), (index, now) in itertools.pairwise(resolved):
            if now < before:
                found.append((index, f"waves are cumulative: wave {waves[index]} reaches {now} of {total} users, "
                                     f"fewer than the {before} of the wave before it"))
    return found


def describe(rollout: Rollout | None, recipients: Sequence[str]) -> str:
    """One line for plan and check: `3 waves: 1, 2, 7 users (max_failures 0)`."""
    sizes = [len(w) for w in plan_waves(recipients, rollout)]
    if rollout is None:
        return f"1 wave: {sizes[0] if sizes else 0} user(s)"
    return (f"{len(sizes)} wave(s): {', '.join(str(n) for n in sizes)} user(s) "
            f"(max_failures {rollout.max_failures})")


def wave_summary(block: int, index: int, waves: Sequence[Sequence[str]], results: Mapping[str, str],
                 rollout: Rollout | None, total: int) -> str:
    """The build log's line after a wave: `block 0 wave 2/3: 4 user(s): 3 DEPLOYED, 1 FAILED; 1 of 1
    failure(s) allowed`. `results`: user -> status, for the block's users so far."""
    wave = waves[index]
    counts: dict[str, int] = {}
    for uid in wave:
        if uid in results:
            counts[results[uid]] = counts.get(results[uid], 0) + 1
    shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no results"
    line = f"block {block} wave {index + 1}/{len(waves)}: {len(wave)} user(s): {shown}"
    if rollout is not None:
        statuses = so_far(waves, index, results)
        line += f"; {failures(statuses)} failure(s) so far, max_failures {rollout.max_failures}"
        if budget_exceeded(statuses, rollout, total):
            line += f" exceeded: {HALTED}"
    return line
