"""Running the chaos harness (benchmarks/chaos.py) from tests, and judging its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.chaos_world import ROOT

HARNESS = ROOT / "benchmarks" / "chaos.py"


def run_harness(work: Path, *args: str, timeout: float) -> dict[str, Any]:
    seed = os.environ.get("CHAOS_SEED")
    argv = [sys.executable, str(HARNESS), "--work", str(work), *args, *(["--seed", seed] if seed else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert proc.stdout.strip(), f"the harness printed no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    print(json.dumps(report, indent=1)[:6000])
    assert proc.returncode == (0 if report["ok"] else 1), proc.stderr[-3000:]
    return report


def assert_really_attacked(report: dict[str, Any], kills: int, http: bool = True) -> None:
    """The run cannot pass by doing nothing: every kill landed, and the drivers had work (`http`: the http
    target too; under `on_interrupt: fail` a small run's kills can end every http build before its calls)."""
    assert report["kills"]["done"] == kills, report["kills"]
    assert report["passes"]["killed"] == kills, report["passes"]
    assert report["effects"]["command_effects"] > 0, report["effects"]
    assert not http or report["effects"]["http_puts"] > 0, report["effects"]
    assert report["human"]["pushes"] > 0, report["human"]


def verdict(report: dict[str, Any]) -> str:
    failed = {name: report["checks"][name] for name in report["failed"]}
    return (f"seed {report['config']['seed']}: guarantees broken: {json.dumps(failed)}\n"
            f"(details in {report['config']['work']}/report-full.json and timeline.jsonl)")
