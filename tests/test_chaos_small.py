"""The chaos harness at its small size (2 clones, 6 or 12 jobs, 10 kills), under both `on_interrupt` policies;
the CI size and the checks of the checks are in test_chaos.py. `CHAOS_SEED=N` replays one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos_harness import assert_really_attacked, run_harness, verdict


@pytest.mark.timeout(600)
@pytest.mark.parametrize("on_interrupt", ["resume", "fail"])
def test_chaos_small(tmp_path: Path, on_interrupt: str) -> None:
    """2 clones, 6 jobs, 10 kills: for development, and for `on_interrupt: fail` (a user whose command had
    started is FAILED, never NOT_RUN)."""
    # under `fail` every build a kill lands in ends there: more jobs, so that both drivers still get work
    jobs = "6" if on_interrupt == "resume" else "12"
    report = run_harness(tmp_path / "chaos", "--clones", "2", "--jobs", jobs, "--users", "3", "--kills", "10",
                         "--pauses", "1", "--partitions", "1", "--on-interrupt", on_interrupt,
                         "--settle-timeout", "100", "--human-max-attempts", "8", timeout=540)
    assert_really_attacked(report, 10, http=on_interrupt == "resume")
    assert report["ok"], verdict(report)
