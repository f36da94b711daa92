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
from collections.abc import Callable, Iterator
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
    return list(imap_encoded(encode, decode, items))


def imap_encoded(encode: Callable[[T], bytes], decode: Callable[[bytes], R], items: list[T]) -> Iterator[R]:
    """`map_encoded` as an iterator: each result as soon as its slice is back, so the caller works on the first
    results while the workers encode the rest."""
    def here(rest: list[T]) -> Iterator[R]:
        return (decode(encode(item)) for item in rest)

    workers = min(os.cpu_count() or 1, 4)
    if (len(items) < MIN_BATCH or workers < 2 or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        yield from here(items)
        return
    global _work
    _work = (encode, items)  # type: ignore[assignment]  # items and encode are only read by the children
    try:
        step = -(-len(items) // (workers * 4))  # a few slices per worker: an uneven slice does not hold up the rest
        bounds = [(start, min(len(items), start + step)) for start in range(0, len(items), step)]
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
        chunks = pool.map(_slice, bounds)
    except (OSError, RuntimeError):  # no processes to be had here: do it in this one
        _work = None
        yield from here(items)
        return
    done = 0
    try:
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except (OSError, RuntimeError):  # a worker was lost (killed, out of memory): the rest in this process
                break
            for raw in chunk:
                yield decode(raw)
                done += 1
    finally:
        _work = None
        pool.shutdown(wait=True, cancel_futures=True)
    yield from here(items[done:])
