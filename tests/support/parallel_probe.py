"""Run one scenario of reconciler.ledger.parallel in a process of its own (no threads: the parallel path), and
print what happened as JSON: `python -m tests.support.parallel_probe SCENARIO`."""

from __future__ import annotations

import json
import marshal
import os
import signal
import sys
import time

from reconciler.ledger import parallel

PARENT = os.getpid()


def square(item: object) -> bytes:
    assert isinstance(item, int)
    return marshal.dumps((item * item, os.getpid()))


def dies_in_a_worker_at_700(item: object) -> bytes:
    if item == 700 and os.getpid() != PARENT:
        os.kill(os.getpid(), signal.SIGKILL)  # the way the world kills a worker: no cleanup, no exception
    return square(item)


def padded(item: object) -> bytes:
    assert isinstance(item, int)
    return marshal.dumps((item * item, os.getpid(), b"x" * 20_000))  # a slice is megabytes: more than a pipe holds


def children() -> list[int]:
    """This process's child processes, zombies (not reaped) included."""
    pid = os.getpid()
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
        return [int(found) for found in handle.read().split()]


def main(scenario: str) -> None:
    items = list(range(3000))
    if scenario == "all":
        out = parallel.map_encoded(square, marshal.loads, items)
    elif scenario == "killed":
        out = parallel.map_encoded(dies_in_a_worker_at_700, marshal.loads, items)
    elif scenario == "killed-writing":  # killed halfway through writing a slice back: the rest of it never comes
        stream = parallel.imap_encoded(padded, marshal.loads, items)
        out = [next(stream)]
        time.sleep(0.5)  # meanwhile the workers fill their pipes and wait, each in the middle of a slice
        os.kill(children()[0], signal.SIGKILL)
        out += list(stream)
        out = [value[:2] for value in out]
    elif scenario == "stops-early":
        stream = parallel.imap_encoded(square, marshal.loads, items)
        out = [next(stream)]
        stream.close()
        items = items[:1]
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps({
        "right": [value for value, _ in out] == [i * i for i in items],
        "pids": sorted({pid for _, pid in out} - {PARENT}),
        "here": sum(1 for _, pid in out if pid == PARENT),
        "left_behind": children(),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
