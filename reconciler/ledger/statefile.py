"""Reading and writing the reconciler's own files under `.git/reconciler/` (SPEC 9.1 rule 9).

Everything there is disposable: a file that is missing, truncated, flipped, replaced with garbage,
turned into a folder, a FIFO, a symlink or something unreadable reads as "absent" and is rebuilt
(written aside, then renamed over whatever is in the way). A checksum seals what is read back, so a
corrupt file is never mistaken for a good one: it cannot change an answer, only cost time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from pathlib import Path

MAGIC = b"reconciler-sealed-1\n"
_DIGEST = 32  # sha256


def read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of `path` if it is a readable regular file of at most `limit` bytes, else None.
    Never blocks (a FIFO or device put in its place is not read) and never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks = []
        remaining = info.st_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def seal(data: bytes) -> bytes:
    return MAGIC + hashlib.sha256(data).digest() + data


def unseal(raw: bytes | None) -> bytes | None:
    """The sealed payload, or None when `raw` is not exactly what `seal` wrote."""
    if raw is None or not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _DIGEST:
        return None
    digest, data = raw[len(MAGIC):len(MAGIC) + _DIGEST], raw[len(MAGIC) + _DIGEST:]
    return data if hashlib.sha256(data).digest() == digest else None


def read_sealed(path: Path, limit: int = 1 << 30) -> bytes | None:
    return unseal(read_regular(path, limit + len(MAGIC) + _DIGEST))


def clear_path(path: Path) -> None:
    """Remove whatever is at `path` (file, FIFO, symlink, or a whole folder); nothing there is fine."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(info.st_mode):
            for root, dirs, _files in os.walk(path):  # a folder made unreadable or unwritable
                for name in dirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, name), stat.S_IRWXU)
            with contextlib.suppress(OSError):
                os.chmod(path, stat.S_IRWXU)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def write_atomic(path: Path, data: bytes) -> bool:
    """Write aside, then rename over `path` (replacing whatever is in the way). False when it cannot be
    written (a read-only `.git` only costs speed)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        clear_path(tmp)
        tmp.write_bytes(data)
        try:
            os.replace(tmp, path)
        except OSError:  # a folder (or something else rename cannot replace) is in the way
            clear_path(path)
            os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False


def write_sealed(path: Path, data: bytes) -> bool:
    return write_atomic(path, seal(data))
