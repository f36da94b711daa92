"""The deployment branch: which branch it is, its settings at a commit, and a build's log on it."""

from __future__ import annotations

import re

from reconciler.core.files import SETTINGS_FILE
from reconciler.core.problems import Problem
from reconciler.core.settings import Settings, parse_settings
from reconciler.errors import UserError
from reconciler.ledger import git

BUILD_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z0-9][a-z0-9._-]{0,62}-[0-9a-f]{6}$")


def committed_settings(repo: git.Repo, rev: str) -> tuple[Settings, list[Problem]]:
    """reconciler.yaml as committed at `rev` (one `git cat-file`); the defaults when there is none."""
    return parse_settings(git.read_path(repo, rev, SETTINGS_FILE))


def deployment_branch(repo: git.Repo, flag: str | None = None, settings: Settings | None = None) -> str:
    """The deployment branch: the flag, else `branch:` in HEAD's reconciler.yaml, else HEAD's branch."""
    if flag:
        return flag
    configured = (settings or committed_settings(repo, "HEAD")[0]).branch
    name = configured or git.head_branch(repo)
    if name is None:
        raise UserError("HEAD is detached and no branch is configured; set `branch:` in reconciler.yaml "
                        "or check out the deployment branch")
    return name


def build_log(repo: git.Repo, commit: str, build_id: str, ledger_dir: str | None = None) -> str | None:
    """The log of `build_id` as committed at `commit` (one `git cat-file`; nothing else is loaded)."""
    if not BUILD_ID.match(build_id):
        return None
    ledger_dir = ledger_dir or committed_settings(repo, commit)[0].ledger_dir
    raw = git.read_path(repo, commit, f"{ledger_dir}/logs/{build_id}.log")
    return raw.decode("utf-8", "replace") if raw is not None else None
