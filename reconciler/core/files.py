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

    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            found: dict[str, Entry] = {}
            settings = self.root / SETTINGS_FILE
            if settings.is_file():
                self._add(found, settings, SETTINGS_FILE)
            for top in self.dirs:
                base = self.root / top
                if top == self.dirs[-1] and (base.is_symlink() or (base.exists() and not base.is_dir())):
                    raise UserError(f"{top} is not a directory, so the ledger cannot be read; restore it", 2)
                if not base.is_dir() or base.is_symlink():
                    continue
                for dirpath, dirnames, filenames in os.walk(base, onerror=_unreadable):
                    dirnames.sort()
                    rel_dir = Path(dirpath).relative_to(self.root).as_posix()
                    for name in list(dirnames):
                        full = Path(dirpath, name)
                        if full.is_symlink():  # a symlinked folder is reported as a link, never walked
                            dirnames.remove(name)
                            self._add(found, full, f"{rel_dir}/{name}")
                    for name in sorted(filenames):
                        self._add(found, Path(dirpath, name), f"{rel_dir}/{name}")
            self._entries = found
        return self._entries

    def _add(self, found: dict[str, Entry], full: Path, rel: str) -> None:
        info = full.lstat()
        if stat.S_ISLNK(info.st_mode):
            data = os.readlink(full).encode("utf-8", "surrogateescape")
            mode = MODE_LINK
        elif stat.S_ISREG(info.st_mode):
            with full.open("rb") as handle:  # never more than the size limit plus one byte into memory
                data = handle.read(_READ_CAP)
            mode = MODE_EXEC if info.st_mode & 0o111 else MODE_FILE
        else:
            return
        self._data[rel] = data
        found[rel] = Entry(rel, mode, blob_id(data))

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        self.entries()
        return {p: self._data[p] for p in paths}
