"""The `local` driver: deploys into `<path>/<user>/<definition>/` atomically, with a manifest."""

from __future__ import annotations

import json
import os
import posixpath
import secrets
import shutil
from pathlib import Path
from typing import Any

from reconciler.core.settings import Settings
from reconciler.drivers.base import DeployRequest, Driver, Outcome, SettingsProblem

MANIFEST = ".deployment.json"
_RESERVED = ("servers", "definitions", "jobs", ".git")


_SCALAR = json.JSONEncoder(sort_keys=True)  # the C encoder: no closures (json's indenting encoder makes cycles)


def pretty_json(value: Any, indent: str = "") -> str:
    """`json.dumps(value, indent=2, sort_keys=True)`, byte for byte, without the garbage it leaves: with an
    indent the standard library encodes through nested closures that refer to each other, so every call left a
    reference cycle (22 cells, functions, an encoder) for the cyclic collector: 4,000 per 1,000 jobs."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = sorted(value.items(), key=lambda item: item[0])
        return "{\n" + ",\n".join(f"{inner}{_SCALAR.encode(k if isinstance(k, str) else _SCALAR.encode(k))}: "
                                   f"{pretty_json(v, inner)}" for k, v in items) + f"\n{indent}}}"
    if isinstance(value, list | tuple) and value:
        return "[\n" + ",\n".join(inner + pretty_json(v, inner) for v in value) + f"\n{indent}]"
    return _SCALAR.encode(value)


class LocalDriver(Driver):
    idempotent_apply = True
    inline_calls = True  # a few file writes and renames per user

    @classmethod
    def settings_problems(cls, settings: dict[str, Any], repo: Settings) -> list[SettingsProblem]:
        raw = str(settings.get("path", ""))
        if raw.startswith("/"):
            return []
        norm = posixpath.normpath(raw)
        if norm == ".." or norm.startswith("../"):
            return [(("path",), f"target path {raw!r} leaves the repository; use an absolute path for "
                     "targets outside it", "PATH_ESCAPE")]
        top = norm.split("/", 1)[0]
        if norm == "." or top in (*_RESERVED, repo.ledger_dir):
            return [(("path",), f"target path {raw!r} would deploy into the deployment repo's own files",
                     "PATH_ESCAPE")]
        return []

    # -- paths -----------------------------------------------------------------------------------
    def _root(self) -> Path:
        cached: Path | None = getattr(self, "_resolved_root", None)
        if cached is not None:  # resolved once per driver (one block), not once per user: 10,000s of lstat calls
            return cached
        raw = str(self.settings["path"])
        root = (self.context.repo_root / raw).resolve()
        repo = self.context.repo_root.resolve()
        if not raw.startswith("/") and not root.is_relative_to(repo):  # e.g. a committed symlink `deploy -> /etc`
            raise ValueError(f"target path {raw!r} leads outside the repository (to {root}) through a symbolic "
                             "link; use an absolute path for targets outside it")
        self._resolved_root = root
        return root

    def _target(self, request: DeployRequest) -> Path:
        """`<root>/<user>/<definition>`: both names are validated (no `/`, no `..`, no leading `.`), so only a
        symbolic link planted at the user folder could lead elsewhere, and that is refused."""
        root = self._root()
        user_dir = root / request.user.id
        if user_dir.is_symlink():
            raise ValueError(f"target for user {request.user.id!r} is a symbolic link; it would leave {root}")
        target = user_dir / request.definition.name
        if target.parent.parent != root or "/" in request.user.id or request.user.id.startswith("."):
            raise ValueError(f"target for user {request.user.id!r} would leave {root}")
        return target

    @staticmethod
    def _safe_rel(rel: str) -> str:
        norm = posixpath.normpath(rel)
        if norm.startswith(("/", "../")) or norm in ("..", ".", MANIFEST):
            raise ValueError(f"asset path {rel!r} would leave the target folder")
        return norm

    @staticmethod
    def _existing(target: Path) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        if not target.is_dir():
            return found
        for dirpath, _, filenames in os.walk(target):
            for name in filenames:
                full = Path(dirpath, name)
                rel = full.relative_to(target).as_posix()
                if rel != MANIFEST:
                    found[rel] = full.read_bytes()
        return found

    @staticmethod
    def _manifest(target: Path) -> dict[str, Any] | None:
        try:
            with open(os.path.join(target, MANIFEST), "rb") as f:  # plain open: once per user, on the hot path
                data = json.loads(f.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _clean_leftovers(self, target: Path) -> None:
        """Remove staging and old folders a killed run left beside the target (`.<name>.tmp-*`, `.<name>.old-*`).
        Once per target and driver (one pass): only a crash leaves them, and this pass's own are removed as it goes."""
        cleaned: set[Path] = self.__dict__.setdefault("_cleaned", set())
        if target in cleaned:
            return
        cleaned.add(target)
        prefixes = (f".{target.name}.tmp-", f".{target.name}.old-")
        try:
            with os.scandir(target.parent) as found:
                stale = [entry.path for entry in found if entry.name.startswith(prefixes)]
        except OSError:
            return
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)

    # -- actions ---------------------------------------------------------------------------------
    def plan(self, request: DeployRequest) -> Outcome:
        target = self._target(request)
        existing = self._existing(target)
        wanted = {self._safe_rel(k): v for k, v in request.assets.items()}
        added = sorted(set(wanted) - set(existing))
        removed = sorted(set(existing) - set(wanted))
        changed = sorted(k for k in set(wanted) & set(existing) if wanted[k] != existing[k])
        for label, names in (("add", added), ("change", changed), ("remove", removed)):
            for name in names:
                request.log(f"plan {request.user.id}: would {label} {name}")
        manifest = self._manifest(target)
        params_changed = manifest is not None and manifest.get("parameters") != request.public_parameters
        extra = ", parameters change" if params_changed else ""
        return Outcome("PLANNED", f"{len(added)} to add, {len(changed)} to change, {len(removed)} to remove{extra}")

    def apply(self, request: DeployRequest) -> Outcome:
        target = self._target(request)
        manifest = self._manifest(target)
        if (manifest is not None and manifest.get("content_digest") == request.content_digest
                and manifest.get("parameters") == request.public_parameters):
            request.log(f"{request.user.id}: content unchanged at {target}")
            return Outcome("UNCHANGED", "identical content already deployed")
        files = {self._safe_rel(rel): data for rel, data in request.assets.items()}  # refused before anything is made
        fresh = not target.parent.exists()  # a first deployment for this user: nothing to clean or replace
        if fresh:
            target.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._clean_leftovers(target)
        token = secrets.token_hex(4)
        staging = target.parent / f".{target.name}.tmp-{token}"
        staging.mkdir()
        try:
            self._stage(staging, files, request)
        except BaseException:  # a file that cannot be written: no half-built folder is left beside the target
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old = target.parent / f".{target.name}.old-{token}"
        replacing = not fresh and target.exists()
        if replacing:
            os.rename(target, old)
        os.rename(staging, target)
        if replacing:
            shutil.rmtree(old, ignore_errors=True)
        request.log(f"{request.user.id}: deployed {len(request.assets)} file(s) to {target}")
        return Outcome("DEPLOYED", f"{len(request.assets)} file(s) deployed")

    @staticmethod
    def _stage(staging: Path, files: dict[str, bytes], request: DeployRequest) -> None:
        made = {staging}
        for rel, data in files.items():
            dest = staging / rel
            if dest.parent not in made:
                dest.parent.mkdir(parents=True, exist_ok=True)
                made.add(dest.parent)
            with open(dest, "wb") as f:
                f.write(data)
        record = {
            "job": request.job,
            "build_id": request.build_id,
            "definition": request.definition.name,
            "module_type": request.definition.module_type,
            "user": request.user.id,
            "content_digest": request.content_digest,
            "parameters": request.public_parameters,
        }
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as f:
            f.write(pretty_json(record) + "\n")

    def destroy(self, request: DeployRequest) -> Outcome:
        target = self._target(request)
        if not target.exists():
            return Outcome("UNCHANGED", "nothing was deployed")
        self._clean_leftovers(target)
        old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
        os.rename(target, old)
        shutil.rmtree(old, ignore_errors=True)
        request.log(f"{request.user.id}: removed {target}")
        return Outcome("DESTROYED", "deployment removed")
