"""Git objects written in-process: the other half of talking to git (the first is `git.py`).

A status commit changes a few files under the ledger directory. Building it with plumbing costs
several processes and an index rewrite that grows with the tree; here the blobs, the two or three
trees on the path to the ledger and the commit are written as loose objects directly (zlib plus a
hash, exactly what `git hash-object -w` does), so a commit of any size costs no process at all.
Reading trees goes through one `git cat-file --batch` (see `git.read_objects`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
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
    return b"".join(e.mode + b" " + e.name + b"\0" + e.oid for e in sorted(entries, key=_sort_key))


class ObjectWriter:
    """Writes loose objects into a repository's object database (atomically: write aside, rename)."""

    def __init__(self, objects_dir: Path, object_format: str = "sha1") -> None:
        self.dir = objects_dir
        self.algorithm = "sha256" if object_format == "sha256" else "sha1"
        self.width = 32 if self.algorithm == "sha256" else 20
        self._made: set[str] = set()

    def hash(self, kind: bytes, data: bytes) -> bytes:
        return hashlib.new(self.algorithm, kind + b" %d\0" % len(data) + data, usedforsecurity=False).digest()

    def write(self, kind: bytes, data: bytes) -> bytes:
        """Store one object (blob, tree or commit); returns its raw id. Idempotent."""
        raw = kind + b" %d\0" % len(data) + data
        oid = hashlib.new(self.algorithm, raw, usedforsecurity=False).digest()
        hexid = oid.hex()
        if hexid in self._made:
            return oid
        folder = self.dir / hexid[:2]
        final = folder / hexid[2:]
        try:
            if not final.exists():
                folder.mkdir(exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=folder, prefix="tmp_obj_")
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(zlib.compress(raw, 1))
                    os.chmod(tmp, 0o444)
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

    def tree(self, entries: Iterable[TreeEntry]) -> bytes:
        return self.write(b"tree", tree_bytes(entries))

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
