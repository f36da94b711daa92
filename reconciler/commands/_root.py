"""Finding the deployment repo from any folder inside it, like git finds its repository (no git call).

Kept free of heavy imports: every command that takes `--repo` runs it first.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import UserError

MARKERS = ("servers", "definitions", "jobs")
SETTINGS = "reconciler.yaml"


def looks_like_deployment_repo(folder: Path) -> bool:
    """A folder holding reconciler.yaml, or one of servers/, definitions/, jobs/ as a folder."""
    return (folder / SETTINGS).is_file() or any((folder / name).is_dir() for name in MARKERS)


def find_root(start: Path) -> Path:
    """The top of the git work tree `start` is in, else the nearest folder at or above it that looks like
    a deployment repo; `start` itself when neither is found (a bare repository, or a wrong folder:
    the command then says what is wrong)."""
    try:
        here = start.resolve()
    except OSError:
        return start
    if not here.is_dir():
        return start
    for folder in (here, *here.parents):
        if (folder / ".git").exists() or looks_like_deployment_repo(folder):
            return folder
        if (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir():
            return start  # a bare repository (or a .git folder): git itself takes it from here
    return start


def require_deployment_repo(root: Path, given: Path) -> None:
    """Exit 2 with a clear message when `root` is not a deployment repo (an empty or wrong folder)."""
    if not root.is_dir():
        raise UserError(f"{given}: no such directory")
    if not looks_like_deployment_repo(root):
        where = f"{given}" if root == given else f"{given} (repository top {root})"
        raise UserError(f"no deployment repo found in {where} or any folder above it: a deployment repo has "
                        "servers/, definitions/ and jobs/ folders (and optionally reconciler.yaml); create one "
                        "with `reconciler init DIR`, or pass --repo DIR")
