"""Drivers' private scratch space under `.git/reconciler/work/` (never the working tree).

The command driver renders a user's content (which may hold secret token values) into
`<work root>/<build>-<user>-*/` and removes it after the user. A process killed mid-user leaves its
folder behind, so every pass starts by removing whatever is there (SPEC 9.1 rule 11); only one
pass per clone runs at a time (the repo lock), so nothing in use is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path


def remove_tree(path: Path) -> None:
    """Remove a folder however its content was left (read-only files and folders included)."""

    def make_writable_and_retry(function: object, name: str, exc_info: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name) or ".", stat.S_IRWXU)
            os.chmod(name, stat.S_IRWXU)
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(name) and not os.path.islink(name):
                shutil.rmtree(name, ignore_errors=True)
            else:
                os.unlink(name)

    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    shutil.rmtree(path, onerror=make_writable_and_retry)


def clear_work_root(root: Path) -> list[str]:
    """Remove every leftover under the drivers' work root; returns the names removed (for a log line)."""
    try:
        names = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        if root.is_file() or root.is_symlink():  # not ours to keep: the root must be a folder
            with contextlib.suppress(OSError):
                root.unlink()
        return []
    except PermissionError:
        with contextlib.suppress(OSError):
            os.chmod(root, stat.S_IRWXU)
        names = sorted(os.listdir(root))
    for name in names:
        remove_tree(root / name)
    return names
