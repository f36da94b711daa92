"""Environment checks before a pass claims anything (SPEC 9.1 rule 7).

A stale lock file, a full disk, a read-only or unwritable folder would otherwise show up halfway
through a build. Found here, they stop the pass with exit 2 and one line naming the file or cause
and the fix, before any record is written, so nothing is spent by a pass that cannot write.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from pathlib import Path

from reconciler.errors import UserError
from reconciler.ledger import git

MIN_FREE_BYTES = 4 * 1024 * 1024  # room for a few status commits; below that a pass would die midway
LOCK_PATIENCE = 2.0  # a lock file held for a moment by someone's `git status` goes away; a stale one stays


def check(repo: git.Repo, branch: str, checked_out: bool) -> None:
    """Raise a UserError (exit 2) naming the cause and the fix, or return when the pass can write."""
    objects = git.object_store(repo)[0]
    locks = [repo.git_dir / f"refs/heads/{branch}.lock"]
    if checked_out:
        locks += [repo.git_dir / "index.lock", repo.git_dir / "HEAD.lock"]
    _no_stale_locks(locks)
    for folder, what in ((repo.state_dir, "the reconciler's state folder"), (objects, "the git object database")):
        _writable(folder, what)
    free = shutil.disk_usage(objects).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"only {free // 1024} KiB free on the disk holding {objects}: a pass needs room to commit "
                        "its status records; free some space, then reconcile again (nothing was claimed)")


def _no_stale_locks(locks: list[Path]) -> None:
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        present = [lock for lock in locks if lock.exists()]
        if not present:
            return
        if time.monotonic() >= deadline:
            lock = present[0]
            raise UserError(f"{lock} exists: another git command is running in this clone, or one crashed and left "
                            "it; if no git command is running here, remove that file, then reconcile again "
                            "(nothing was claimed)")
        time.sleep(0.1)


def _writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".reconciler-probe-")
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))
        raise UserError(f"cannot write {what} ({folder}): {reason}; fix that, then reconcile again "
                        "(nothing was claimed)") from None
