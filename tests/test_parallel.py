"""reconciler.ledger.parallel: the cold paths' parse on every core, with real forked workers.

The results must be those of the serial loop, in order, whatever happens to a worker, and a caller that
stops early must not leave worker processes behind. Each scenario runs in a process of its own
(tests/support/parallel_probe.py): a process with threads (as a test worker is) never forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.ledger import parallel

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the parallel path needs two cores")


def probe(scenario: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "tests.support.parallel_probe", scenario], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_parallel_map_gives_the_serial_results_in_order_from_other_processes() -> None:
    found = probe("all")
    assert found["right"]
    assert len(found["pids"]) >= 2 and found["here"] == 0
    assert found["left_behind"] == []


def test_a_worker_killed_mid_map_costs_nothing_but_time() -> None:
    found = probe("killed")
    assert found["right"]
    assert found["here"] > 0  # what the lost worker had not sent back was done in the caller's process
    assert found["left_behind"] == []


def test_a_worker_killed_while_it_writes_a_slice_back_costs_nothing_but_time() -> None:
    """Found by an attack: with a shared result queue (concurrent.futures) the reader waited forever for the rest
    of the message a killed worker had been writing. Each worker writes to a pipe of its own: its end is seen."""
    found = probe("killed-writing")
    assert found["right"]
    assert found["here"] > 0
    assert found["left_behind"] == []


def test_a_caller_that_stops_early_leaves_no_worker_behind() -> None:
    found = probe("stops-early")
    assert found["right"] and found["pids"]
    assert found["left_behind"] == []


def test_a_process_with_threads_or_a_small_batch_never_forks() -> None:
    # this test process has threads when xdist runs it; a small batch stays here in any process
    pid = os.getpid()
    assert parallel.map_encoded(lambda i: str(os.getpid()).encode(), bytes.decode,
                                list(range(parallel.MIN_BATCH - 1))) == [str(pid)] * (parallel.MIN_BATCH - 1)
