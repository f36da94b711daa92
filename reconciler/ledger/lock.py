"""The repo lock: one pass per clone at a time.

An advisory `flock` on a file under `.git/reconciler/`: the kernel releases it when its holder
dies, so a crash never leaves a stale lock, and a live holder's lock is never taken away. The
file names the owner (host, pid, start) so a refusal can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from types import TracebackType

from reconciler.core.timeutil import iso, utcnow
from reconciler.errors import UserError
from reconciler.ledger.statefile import clear_path, read_regular


class RepoLock:
    def __init__(self, state_dir: Path, wait: float = 10.0) -> None:
        self.path = state_dir / "lock"
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> RepoLock:
        fd = self._open()
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    os.close(fd)
                    raise UserError(f"another reconcile pass holds the repo lock ({holder}); "
                                    "wait for it to finish, or stop it") from None
                time.sleep(0.1)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": iso(utcnow())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self._fd = fd
        return self

    def _open(self) -> int:
        """The lock file, opened. Only a regular file can be a live holder's lock: anything else left in
        its place (a folder, a FIFO, a symlink) is removed and the file made anew (rule 9)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o644)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        except OSError:
            pass
        clear_path(self.path)
        return os.open(self.path, flags | os.O_EXCL, 0o644)

    def holder(self) -> str:
        try:
            data = json.loads(read_regular(self.path, 4096) or b"{}")
            return f"host {data.get('host')}, pid {data.get('pid')}, since {data.get('started_at')}"
        except (ValueError, AttributeError):
            return "owner unknown"

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
