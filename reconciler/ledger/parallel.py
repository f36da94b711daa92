"""Parsing many files on every core: the cold paths (`validate`, a first pass without a cache).

Safe YAML with line numbers and the schema checks are CPU work per file that needs nothing from the
other files, so a large batch is split over forked worker processes (each parses a slice it already
holds, copy on write) and the results come back in `marshal` form, with line maps left packed until
a problem needs one. Small batches, one core, or a process that already runs threads (a fork would
copy their locks in whatever state they are) stay in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
MIN_BATCH = 800  # below this a fork costs more than it saves

_work: tuple[Callable[[object], bytes], list[object]] | None = None  # what the forked children read


def _slice(bounds: tuple[int, int]) -> list[bytes]:
    assert _work is not None
    encode, items = _work
    return [encode(item) for item in items[bounds[0]:bounds[1]]]


def map_encoded(encode: Callable[[T], bytes], decode: Callable[[bytes], R], items: list[T]) -> list[R]:
    """`[decode(encode(item)) for item in items]`, the encoding done on every core when it pays."""
    workers = min(os.cpu_count() or 1, 4)
    if (len(items) < MIN_BATCH or workers < 2 or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        return [decode(encode(item)) for item in items]
    global _work
    _work = (encode, items)  # type: ignore[assignment]  # items and encode are only read by the children
    try:
        step = -(-len(items) // (workers * 4))  # a few slices per worker: an uneven slice does not hold up the rest
        bounds = [(start, min(len(items), start + step)) for start in range(0, len(items), step)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return [decode(raw) for chunk in pool.map(_slice, bounds) for raw in chunk]
    except (OSError, RuntimeError):  # no processes to be had here: do it in this one
        return [decode(encode(item)) for item in items]
    finally:
        _work = None


