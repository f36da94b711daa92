"""Parsing many files on every core: the cold paths (`validate`, a first pass without a cache).

Safe YAML with line numbers and the schema checks are CPU work per file that needs nothing from the
other files, so a large batch is split over forked worker processes (each parses the slices it already
holds, copy on write) and the results come back in `marshal` form, with line maps left packed until
a problem needs one. Small batches, one core, or a process that already runs threads (a fork would
copy their locks in whatever state they are) stay in this process.

Each worker writes to a pipe of its own, one length-prefixed message per slice, so a worker that dies
(SIGKILL, the kernel's out-of-memory killer), even halfway through a message, is seen as the end of its
pipe: what it did not deliver is done in this process, and nothing waits for it. (A shared result queue,
as in `concurrent.futures`, waits forever for the rest of a message a killed worker was writing.)
"""

from __future__ import annotations

import contextlib
import marshal
import os
import selectors
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
MIN_BATCH = 800  # below this a fork costs more than it saves
_HEADER = struct.Struct("<Q")
_F_SETPIPE_SZ = 1031  # Linux: a larger pipe lets a worker run ahead of the reader
_PIPE_BYTES = 1 << 20


def map_encoded(encode: Callable[[T], bytes], decode: Callable[[bytes], R], items: list[T]) -> list[R]:
    """`[decode(encode(item)) for item in items]`, the encoding done on every core when it pays."""
    return list(imap_encoded(encode, decode, items))


def imap_encoded(encode: Callable[[T], bytes], decode: Callable[[bytes], R], items: list[T]) -> Iterator[R]:
    """`map_encoded` as an iterator: each result as soon as its slice is back, so the caller works on the first
    results while the workers encode the rest."""
    workers = min(os.cpu_count() or 1, 4)
    if len(items) < MIN_BATCH or workers < 2 or threading.active_count() > 1 or not hasattr(os, "fork"):
        yield from (decode(encode(item)) for item in items)
        return
    step = -(-len(items) // (workers * 4))  # a few slices per worker: an uneven slice does not hold up the rest
    bounds = [(start, min(len(items), start + step)) for start in range(0, len(items), step)]
    pool = _Workers(encode, items, bounds, workers)
    try:
        for index, (start, end) in enumerate(bounds):
            chunk = pool.result(index)
            if chunk is None:  # its worker was lost (killed, out of memory), or none could be started: here
                yield from (decode(encode(item)) for item in items[start:end])
                continue
            for n, raw in enumerate(chunk):
                if n % 64 == 0:
                    pool.drain()  # keep the pipes from filling while the caller works: the workers go on
                yield decode(raw)
    finally:
        pool.close()


class _Workers:
    """Forked workers; worker w encodes slices w, w + n, w + 2n ... and writes each to its own pipe, in order."""

    def __init__(self, encode: Callable[[T], bytes], items: list[T], bounds: list[tuple[int, int]],
                 workers: int) -> None:
        self.pids: list[int] = []
        self.readers: list[int] = []
        self.buffers: list[bytearray] = []
        self.done: list[list[list[bytes]]] = []  # per worker: the slices it delivered, in order, not yet taken
        self.open: list[bool] = []
        self.selector = selectors.DefaultSelector()
        self.planned = workers
        self.workers = 0  # started
        for w in range(workers):
            try:
                read, write = os.pipe()
            except OSError:
                break
            try:
                pid = os.fork()
            except OSError:
                os.close(read)
                os.close(write)
                break
            if pid == 0:  # the worker: never returns
                os.close(read)
                for fd in self.readers:
                    os.close(fd)
                _work(encode, items, bounds[w::workers], write)
            os.close(write)
            try:
                import fcntl

                fcntl.fcntl(read, _F_SETPIPE_SZ, _PIPE_BYTES)
            except OSError:
                pass  # the default size is enough, only slower
            os.set_blocking(read, False)
            self.selector.register(read, selectors.EVENT_READ, w)
            self.pids.append(pid)
            self.readers.append(read)
            self.buffers.append(bytearray())
            self.done.append([])
            self.open.append(True)
            self.workers += 1

    def result(self, index: int) -> list[bytes] | None:
        """Slice `index`, waiting for its worker; None when its worker cannot deliver it."""
        w = index % self.planned
        if w >= self.workers:  # fewer workers could be started than planned: their slices are done here
            return None
        while not self.done[w] and self.open[w]:
            self._read(timeout=None)
        if not self.done[w]:
            return None
        return self.done[w].pop(0)

    def drain(self) -> None:
        """Whatever the workers have written so far, without waiting."""
        if any(self.open):
            self._read(timeout=0)

    def _read(self, timeout: float | None) -> None:
        for key, _ in self.selector.select(timeout):
            w = key.data
            while True:
                try:
                    data = os.read(self.readers[w], _PIPE_BYTES)
                except BlockingIOError:
                    break
                if not data:  # the worker is gone; a message it did not finish is dropped (its slice: here)
                    self.selector.unregister(self.readers[w])
                    self.open[w] = False
                    break
                self.buffers[w] += data
                self._messages(w)

    def _messages(self, w: int) -> None:
        buffer = self.buffers[w]
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                return
            self.done[w].append(marshal.loads(bytes(buffer[_HEADER.size:_HEADER.size + size])))
            del buffer[:_HEADER.size + size]

    def close(self) -> None:
        """Stop the workers (a caller that stops early does not wait for the rest) and reap them."""
        for w, pid in enumerate(self.pids):
            if self.open[w]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for fd in self.readers:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
            os.close(fd)
        self.selector.close()


def _work(encode: Callable[[T], bytes], items: list[T], bounds: list[tuple[int, int]], fd: int) -> None:
    """In a forked worker: encode each slice, write it as one message, exit without running the parent's
    clean-up (atexit handlers, buffered files, locks it copied)."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Ctrl-C ends the worker at once; the parent reports it
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with os.fdopen(fd, "wb", buffering=0) as out:
            for start, end in bounds:
                payload = marshal.dumps([encode(item) for item in items[start:end]])
                view = memoryview(_HEADER.pack(len(payload)) + payload)
                while view:
                    view = view[out.write(view) or 0:]
    except BaseException:  # the parent sees the pipe end and does this worker's rest itself (and meets the error)
        code = 1
    os._exit(code)
