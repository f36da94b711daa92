"""Waves and the failure budget (reconciler.core.rollout), freeze windows (reconciler.core.freeze), and their
validation through the real CLI. Pure functions, tested exhaustively with hypothesis."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.freeze import FreezeWindow, frozen, parse_duration, thaws_at
from reconciler.core.model import Amount, Rollout
from reconciler.core.rollout import (
    HALTED,
    budget_exceeded,
    describe,
    plan_waves,
    so_far,
    wave_problems,
    wave_summary,
    wave_targets,
)
from tests.support.cli import run_main
from tests.support.repos import write


def rollout(*waves: int | str, max_failures: int | str = 0) -> Rollout:
    return Rollout(tuple(Amount.parse(w) for w in waves), Amount.parse(max_failures))


USERS = [f"u{i}" for i in range(10)]


def test_waves_from_counts_and_percentages() -> None:
    assert plan_waves(USERS, rollout(1, "10%", "100%")) == [["u0"], USERS[1:]]  # 10% of 10 is 1: merged
    assert plan_waves(USERS, rollout(1, "30%", "100%")) == [["u0"], ["u1", "u2"], USERS[3:]]
    assert plan_waves(USERS[:5], rollout("10%", "50%")) == [["u0"], ["u1", "u2"], ["u3", "u4"]]  # ceil; rest added
    assert plan_waves(USERS, rollout(2, 50)) == [["u0", "u1"], USERS[2:]]  # counts beyond the block are capped
    assert plan_waves(USERS, None) == [USERS]
    assert plan_waves([], rollout(1, "100%")) == []
    assert wave_targets(3, rollout("1%")) == [1, 3]


def test_budget_counts_failed_and_skipped_exactly() -> None:
    assert not budget_exceeded(["DEPLOYED", "FORCED", "UNCHANGED"], rollout(1), 10)
    assert budget_exceeded(["FAILED"], rollout(1), 10)
    assert budget_exceeded(["SKIPPED"], rollout(1), 10)
    assert not budget_exceeded(["FAILED", "DEPLOYED"], rollout(1, max_failures=1), 10)
    assert budget_exceeded(["FAILED", "SKIPPED"], rollout(1, max_failures=1), 10)
    assert not budget_exceeded(["FAILED"], rollout(1, max_failures="10%"), 15)  # 1 <= 1.5
    assert budget_exceeded(["FAILED", "FAILED"], rollout(1, max_failures="10%"), 15)  # 2 > 1.5
    assert not budget_exceeded(["FAILED"] * 5, None, 5)
    assert HALTED == "halted by rollout"


def test_wave_problems() -> None:
    def problems(*waves: int | str, total: int | None = 10) -> list[int]:
        return [i for i, _ in wave_problems(tuple(Amount.parse(w) for w in waves), total)]

    assert problems(1, "10%", "100%") == []
    assert problems(5, 3) == [1]
    assert problems("50%", "50%") == [1]
    assert problems("0%", "150%") == [0, 1]
    assert problems(8, "50%") == [1]  # 50% of 10 = 5 < 8
    assert problems(8, "50%", total=None) == []  # mixed: only comparable for a known size
    assert problems(1, "1%") == []  # both 1 user: merged, not an error


WAVE = st.one_of(st.integers(1, 40), st.integers(1, 100).map(lambda p: f"{p}%"),
                 st.decimals("0.01", "100", places=2).map(lambda d: f"{d}%"))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 60), st.lists(WAVE, min_size=1, max_size=6))
def test_waves_partition_the_recipients_in_order(n: int, waves: list[int | str]) -> None:
    recipients = [f"user{i}" for i in range(n)]
    plan = plan_waves(recipients, rollout(*waves))
    assert [u for wave in plan for u in wave] == recipients  # every recipient once, in recipient order
    assert all(plan)  # no empty wave
    targets = wave_targets(n, rollout(*waves))
    assert targets == sorted(set(targets)) and (not n or targets[-1] == n)
    for wave in waves:  # no wave goes past what was asked for by the point it was written
        asked = min(n, math.ceil(Amount.parse(wave).of(n)))
        assert asked in targets or asked < (targets[0] if targets else 0) or asked == 0 or \
            any(t > asked for t in targets)


STATUSES = st.lists(st.sampled_from(["DEPLOYED", "FAILED", "SKIPPED", "FORCED", "UNCHANGED"]), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60), STATUSES, st.one_of(st.integers(0, 10), st.integers(0, 100).map(lambda p: f"{p}%")))
def test_budget_is_more_than_max_failures(total: int, statuses: list[str], budget: int | str) -> None:
    spent = sum(1 for s in statuses if s in ("FAILED", "SKIPPED"))
    limit = Amount.parse(budget).of(total)
    assert budget_exceeded(statuses, rollout("100%", max_failures=budget), total) == (spent > limit)
    more = [*statuses, "FAILED"]  # monotone: one more failure never un-halts
    if budget_exceeded(statuses, rollout("100%", max_failures=budget), total):
        assert budget_exceeded(more, rollout("100%", max_failures=budget), total)


def test_describe() -> None:
    assert describe(rollout(1, "50%"), USERS) == "3 wave(s): 1, 4, 5 user(s) (max_failures 0)"
    assert describe(rollout(1, max_failures="12.5%"), USERS) == "2 wave(s): 1, 9 user(s) (max_failures 12.5%)"
    assert Amount.parse("12.5%").value == Fraction(25, 2)


# --------------------------------------------------------------------------------------------- freeze
FRI = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)


def weekly(day: int, hour: int, length: timedelta, envs: set[str] | None = None) -> FreezeWindow:
    return FreezeWindow("weekend", frozenset(envs) if envs else None, weekday=day,
                        at=timedelta(hours=hour), length=length)


def test_weekly_window_covers_the_weekend_and_thaws_on_monday() -> None:
    window = weekly(4, 18, timedelta(hours=64), {"prod"})
    assert frozen([window], ["prod"], FRI - timedelta(seconds=1)) is None
    hold = frozen([window], ["lab", "prod"], FRI)
    assert hold is not None and hold.until == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert hold.environments == ("prod",)
    assert frozen([window], ["prod"], datetime(2026, 11, 23, 9, 59, tzinfo=UTC)) is not None  # Monday morning
    assert frozen([window], ["prod"], datetime(2026, 11, 23, 10, 0, tzinfo=UTC)) is None
    assert frozen([window], ["lab"], FRI) is None
    assert frozen([window], ["prod"], FRI + timedelta(days=7)) is not None  # every week


def test_chained_windows_thaw_at_the_end_of_the_last() -> None:
    holiday = FreezeWindow("holidays", None, start=FRI - timedelta(days=1), end=FRI + timedelta(hours=1))
    window = weekly(4, 18, timedelta(hours=64))
    assert thaws_at([holiday, window], ["prod"], FRI - timedelta(hours=2)) == datetime(2026, 11, 23, 10, tzinfo=UTC)
    always = weekly(0, 0, timedelta(days=7))
    assert thaws_at([always], ["prod"], FRI) is None
    assert frozen([always], ["prod"], FRI) is not None and "no end in sight" in frozen([always], ["x"], FRI).message()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.integers(0, 23), st.integers(1, 7 * 24 * 60),
       st.integers(0, 60 * 24 * 60 * 60).map(lambda s: FRI + timedelta(seconds=s)))
def test_weekly_thaw_is_the_first_free_moment(day: int, hour: int, minutes: int, moment: datetime) -> None:
    window = weekly(day, hour, timedelta(minutes=minutes))
    thaw = thaws_at([window], ["e"], moment)
    if minutes == 7 * 24 * 60:
        assert thaw is None
        return
    assert thaw is not None and thaw >= moment
    assert frozen([window], ["e"], thaw) is None
    if thaw > moment:
        assert frozen([window], ["e"], thaw - timedelta(seconds=1)) is not None
        assert frozen([window], ["e"], moment) is not None


def test_durations() -> None:
    assert parse_duration("64h") == timedelta(hours=64)
    assert parse_duration("1d2h30m") == timedelta(days=1, hours=2, minutes=30)
    assert parse_duration("") is None and parse_duration("5x") is None


# ----------------------------------------------------------------------------------- validation (CLI)
def _validate(repo: Path) -> list[tuple[str, int | None, str]]:
    result = run_main("validate", "--format", "json", "--repo", str(repo))
    return [(p["path"], p["line"], p["code"]) for p in json.loads(result.stdout)["problems"]]


def test_validate_reports_rollout_and_after_problems(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(jobs={
        "waves": "blocks:\n  - definition: app\n    server: srv\n    users: all\n    content_tokens: {greeting: hi}\n"
                 "    rollout:\n      waves: [2, 1, '100%']\n",
        "pct": "blocks:\n  - definition: app\n    server: srv\n    users: all\n    content_tokens: {greeting: hi}\n"
               "    rollout: {waves: ['150%'], max_failures: '101%'}\n",
        "ok": "after: [waves]\nblocks:\n  - definition: app\n    server: srv\n    users: all\n"
              "    content_tokens: {greeting: hi}\n    rollout: {waves: [1, '50%'], max_failures: 1}\n",
        "lost": "after:\n  - ok\n  - nope\nblocks:\n  - {definition: app, server: srv, users: all, "
                "content_tokens: {greeting: hi}}\n",
    })
    assert _validate(repo) == [
        ("jobs/lost.yaml", 2, "AFTER_BLOCKED"),  # ok is blocked (transitively)
        ("jobs/lost.yaml", 3, "AFTER_BLOCKED"),  # unknown job named in after:
        ("jobs/ok.yaml", 1, "AFTER_BLOCKED"),  # waves is invalid
        ("jobs/pct.yaml", 6, "ROLLOUT_WAVES"), ("jobs/pct.yaml", 6, "ROLLOUT_WAVES"),
        ("jobs/waves.yaml", 7, "ROLLOUT_WAVES"),
    ]
    text = run_main("validate", "--repo", str(repo)).stdout
    assert "jobs/lost.yaml:2: job 'lost' will not run: job ok is blocked (job waves is invalid)" in text


def test_validate_reports_settings_problems(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    write(repo, "reconciler.yaml", "freeze:\n  - {from: 2026-12-02T00:00:00Z, to: 2026-12-01T00:00:00Z}\n"
                                   "notify:\n  - url: https://example.invalid/hook\n    events: [job.failed]\n"
                                   "    secret: {secret: HOME}\n")
    assert _validate(repo) == [("reconciler.yaml", 2, "SCHEMA"), ("reconciler.yaml", 6, "SECRET_PREFIX")]
    write(repo, "reconciler.yaml", "freeze:\n  - weekly: {day: FRIDAY, at: '18:00', for: 64h}\n")
    assert [code for *_, code in _validate(repo)] == ["SCHEMA"]


@pytest.mark.parametrize("users", ["all", "[u1, u2]"])
def test_a_valid_rollout_job_validates(make_repo: Callable[..., Path], users: str) -> None:
    repo = make_repo(jobs={"j": f"blocks:\n  - definition: app\n    server: srv\n    users: {users}\n"
                                "    content_tokens: {greeting: hi}\n"
                                "    rollout: {waves: [1, '50%', '100%'], max_failures: '10%'}\n"})
    write(repo, "servers/srv.yaml", (repo / "servers/srv.yaml").read_text() + "max_parallel: 2\n")
    assert _validate(repo) == []


def test_wave_summary_for_the_build_log() -> None:
    plan = rollout(1, "50%", max_failures=0)
    waves = plan_waves(["a", "b", "c", "d"], plan)
    assert so_far(waves, 0, {"a": "DEPLOYED", "d": "SKIPPED"}) == ["DEPLOYED"]  # d's wave has not come
    assert wave_summary(0, 0, waves, {"a": "DEPLOYED", "d": "SKIPPED"}, plan, 4) == (
        "block 0 wave 1/3: 1 user(s): 1 DEPLOYED; 0 failure(s) so far, max_failures 0")
    assert wave_summary(0, 1, waves, {"a": "DEPLOYED", "b": "FAILED"}, plan, 4) == (
        "block 0 wave 2/3: 1 user(s): 1 FAILED; 1 failure(s) so far, max_failures 0 exceeded: halted by rollout")
    assert wave_summary(2, 0, [["x", "y"]], {"x": "DEPLOYED", "y": "UNCHANGED"}, None, 2) == (
        "block 2 wave 1/1: 2 user(s): 1 DEPLOYED, 1 UNCHANGED")
