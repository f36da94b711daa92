"""Where desired state is read from: a git commit (reconcile, check) or a working tree (validate).

Both look the same to validation: a set of files with git blob ids, readable in bulk.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reconciler.errors import UserError

MODE_FILE = "100644"
MODE_EXEC = "100755"
MODE_LINK = "120000"
TOP_DIRS = ("servers", "definitions", "jobs")
SETTINGS_FILE = "reconciler.yaml"
_READ_CAP = 8 * 1024 * 1024 + 1  # past any limit we enforce: enough for the size check to refuse it


@dataclass(frozen=True)
class Entry:
    path: str
    mode: str
    blob: str


def blob_id(data: bytes) -> str:
    """The git blob id (SHA-1 object format) of `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class RepoFiles(Protocol):
    """A read-only view of the files of a deployment repo at one state."""

    def entries(self) -> dict[str, Entry]: ...

    def read_many(self, paths: list[str]) -> dict[str, bytes]: ...


class MemoryFiles:
    """A RepoFiles over a mapping of path -> bytes (tests, and checks that never touch a disk)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)

    def entries(self) -> dict[str, Entry]:
        return {p: Entry(p, MODE_FILE, blob_id(d)) for p, d in self.files.items()}

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        return {p: self.files[p] for p in paths}


def read_one(files: RepoFiles, path: str) -> bytes:
    return files.read_many([path])[path]


def _unreadable(error: OSError) -> None:
    raise UserError(f"{error.filename}: cannot be read ({error.strerror}); fix its permissions", 2)


class WorktreeFiles:
    """The files on disk under `root` (only the folders a deployment repo uses)."""

    def __init__(self, root: Path, ledger_dir: str = "status") -> None:
        self.root = root
        self.dirs = (*TOP_DIRS, ledger_dir)
        self._entries: dict[str, Entry] | None = None
        self._data: dict[str, bytes] = {}

    #: folders (relative, `/`-separated) whose files are none of this view's business
    skip: tuple[str, ...] = ()

    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            found: dict[str, Entry] = {}
            root = str(self.root)
            settings = os.path.join(root, SETTINGS_FILE)
            if os.path.isfile(settings):
                self._add(found, settings, SETTINGS_FILE)
            for top in self.dirs:
                base = os.path.join(root, top)
                if top == self.dirs[-1] and (os.path.islink(base) or (os.path.exists(base)
                                                                     and not os.path.isdir(base))):
                    raise UserError(f"{top} is not a directory, so the ledger cannot be read; restore it", 2)
                if not os.path.isdir(base) or os.path.islink(base):
                    continue
                self._walk(found, base, top)
            self._entries = found
        return self._entries

    def _walk(self, found: dict[str, Entry], folder: str, rel_dir: str) -> None:
        """Files in name order, folders after their parent's files; a symlinked folder is a link, not walked."""
        try:
            with os.scandir(folder) as listing:
                children = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            _unreadable(exc)
            return
        folders = []
        for child in children:
            rel = f"{rel_dir}/{child.name}"
            if child.is_dir(follow_symlinks=False):
                if rel not in self.skip:
                    folders.append((child.path, rel))
            else:  # a file, or a link (to a folder too: reported as a link, never followed)
                self._add(found, child.path, rel)
        for path, rel in folders:
            self._walk(found, path, rel)

    def _add(self, found: dict[str, Entry], full: str | Path, rel: str) -> None:
        info = os.lstat(full)
        if stat.S_ISLNK(info.st_mode):
            data = os.readlink(full).encode("utf-8", "surrogateescape")
            mode = MODE_LINK
        elif stat.S_ISREG(info.st_mode):
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:  # never more than the size limit plus one byte into memory
                data = os.read(fd, min(info.st_size + 1, _READ_CAP)) if info.st_size else b""
                while len(data) <= info.st_size and len(data) < _READ_CAP:  # a file that grew while read
                    more = os.read(fd, _READ_CAP - len(data))
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
            mode = MODE_EXEC if info.st_mode & 0o111 else MODE_FILE
        else:
            return
        self._data[rel] = data
        found[rel] = Entry(rel, mode, blob_id(data))

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        self.entries()
        return {p: self._data[p] for p in paths}
