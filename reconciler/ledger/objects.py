"""Git objects written in-process: the other half of talking to git (the first is `git.py`).

A status commit changes a few files under the ledger directory. Building it with plumbing costs
several processes and an index rewrite that grows with the tree; here the blobs, the two or three
trees on the path to the ledger and the commit are written as loose objects directly (zlib plus a
hash, exactly what `git hash-object -w` does), so a commit of any size costs no process at all.
Reading trees goes through one `git cat-file --batch` (see `git.read_objects`).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import itertools
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import UserError

MODE_TREE = b"40000"
MODE_BLOB = b"100644"


class ObjectsUnwritable(UserError):
    """The object database cannot be written (full disk, read-only, permissions): an environment error."""


@dataclass(frozen=True)
class TreeEntry:
    mode: bytes
    name: bytes
    oid: bytes  # raw binary id

    @property
    def is_tree(self) -> bool:
        return self.mode == MODE_TREE


def parse_tree(data: bytes, width: int = 20) -> dict[bytes, TreeEntry]:
    """A tree object's entries by name (binary format: `<mode> <name>\\0<raw id>`; ids of `width` bytes)."""
    entries: dict[bytes, TreeEntry] = {}
    pos, size = 0, len(data)
    while pos < size:
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        entries[data[space + 1:nul]] = TreeEntry(data[pos:space], data[space + 1:nul], data[nul + 1:nul + 1 + width])
        pos = nul + 1 + width
    return entries


def _sort_key(entry: TreeEntry) -> bytes:
    """git orders tree entries by name, a tree's name compared as if it ended with '/'."""
    return entry.name + b"/" if entry.is_tree else entry.name


def tree_bytes(entries: Iterable[TreeEntry]) -> bytes:
    return b"".join(_chunk(e) for e in sorted(entries, key=_sort_key))


def _chunk(entry: TreeEntry) -> bytes:
    return entry.mode + b" " + entry.name + b"\0" + entry.oid


class TreeIndex:
    """A tree's entries kept in git's order, so that setting one entry of a 10,000-entry tree and writing it
    again costs a binary search and a join, not a sort."""

    def __init__(self, entries: dict[bytes, TreeEntry]) -> None:
        ordered = sorted(entries.values(), key=_sort_key)
        self._keys = [_sort_key(e) for e in ordered]
        self._chunks = [_chunk(e) for e in ordered]
        self.names = {e.name for e in ordered}

    def set(self, entry: TreeEntry) -> None:
        key = _sort_key(entry)
        at = bisect.bisect_left(self._keys, key)
        if at < len(self._keys) and self._keys[at] == key:
            self._chunks[at] = _chunk(entry)
        else:
            self._keys.insert(at, key)
            self._chunks.insert(at, _chunk(entry))
            self.names.add(entry.name)

    def data(self) -> bytes:
        return b"".join(self._chunks)


class ObjectWriter:
    """Writes loose objects into a repository's object database (atomically: write aside, rename)."""

    def __init__(self, objects_dir: Path, object_format: str = "sha1") -> None:
        self.dir = objects_dir
        self.algorithm = "sha256" if object_format == "sha256" else "sha1"
        self.width = 32 if self.algorithm == "sha256" else 20
        self._made: set[str] = set()
        self._folders: set[str] = set()
        self._serial = itertools.count()

    def hash(self, kind: bytes, data: bytes) -> bytes:
        return hashlib.new(self.algorithm, kind + b" %d\0" % len(data) + data, usedforsecurity=False).digest()

    def write(self, kind: bytes, data: bytes) -> bytes:
        """Store one object (blob, tree or commit); returns its raw id. Idempotent."""
        raw = kind + b" %d\0" % len(data) + data
        oid = hashlib.new(self.algorithm, raw, usedforsecurity=False).digest()
        hexid = oid.hex()
        if hexid in self._made:
            return oid
        folder = os.path.join(self.dir, hexid[:2])
        final = os.path.join(folder, hexid[2:])
        try:
            if not os.path.exists(final):
                if hexid[:2] not in self._folders:
                    os.makedirs(folder, exist_ok=True)
                    self._folders.add(hexid[:2])
                tmp = os.path.join(folder, f"tmp_obj_{os.getpid()}_{next(self._serial)}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(zlib.compress(raw, 1))
                    os.replace(tmp, final)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as exc:
            raise unwritable(exc, self.dir) from None
        self._made.add(hexid)
        return oid

    def blob(self, data: bytes) -> bytes:
        return self.write(b"blob", data)

    def tree(self, entries: Iterable[TreeEntry] | TreeIndex) -> bytes:
        data = entries.data() if isinstance(entries, TreeIndex) else tree_bytes(entries)
        return self.write(b"tree", data)

    def commit(self, tree: bytes, parent: str, message: str, author: tuple[str, str], when: int) -> str:
        name, email = author
        who = f"{name} <{email}> {when} +0000".encode()
        body = (b"tree " + tree.hex().encode() + b"\nparent " + parent.encode() + b"\nauthor " + who
                + b"\ncommitter " + who + b"\n\n" + message.encode("utf-8"))
        return self.write(b"commit", body).hex()


def unwritable(exc: OSError, where: Path) -> ObjectsUnwritable:
    """One line naming the cause and the fix, for the errors a machine (not the code) is to blame for."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))
    return ObjectsUnwritable(f"cannot write git objects in {where}: {reason}; fix that (free space, "
                             "permissions), then reconcile again (nothing was claimed by this write)")
