"""Driver registry: built-in drivers plus plugins from the entry-point group `reconciler.drivers`.

Plugins come only from installed distributions (SPEC 9.1 rule 12): never from the current folder.
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache
from importlib.metadata import distributions
from typing import Any

from reconciler.core.settings import Settings
from reconciler.drivers.base import DeployRequest, Driver, DriverContext, Outcome, SettingsProblem

ENTRY_POINT_GROUP = "reconciler.drivers"
BUILTIN = {
    "local": "reconciler.drivers.local:LocalDriver",
    "http": "reconciler.drivers.http:HttpDriver",
    "command": "reconciler.drivers.command:CommandDriver",
}


def installed_locations() -> list[str]:
    """Where installed distributions are looked for: the absolute entries of `sys.path`. A relative entry
    (`''`, `.`) means whatever the current folder is, e.g. a pull request's checkout (SPEC 9.1 rule 12)."""
    return [p for p in sys.path if p and os.path.isabs(p)]


@cache
def _plugins() -> dict[str, Any]:
    found: dict[str, Any] = {}
    seen: set[str] = set()
    for dist in distributions(path=installed_locations()):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in seen:  # the first one on the path wins, as for imports
            continue
        seen.add(name)
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and ep.name not in BUILTIN:
                found.setdefault(ep.name, ep)
    return found


def known_types() -> set[str]:
    return set(BUILTIN) | set(_plugins())


def is_known(kind: str) -> bool:
    """Without reading every installed distribution's metadata when the type is built in (most servers)."""
    return kind in BUILTIN or kind in _plugins()


def driver_class(kind: str) -> type[Driver]:
    if kind in BUILTIN:
        module, _, attr = BUILTIN[kind].partition(":")
        cls = getattr(importlib.import_module(module), attr)
    else:
        cls = _plugins()[kind].load()
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise TypeError(f"driver {kind!r} does not implement reconciler.drivers.base.Driver")
    return cls


def settings_problems(kind: str, settings: dict[str, Any], repo: Settings) -> list[SettingsProblem]:
    try:
        return driver_class(kind).settings_problems(settings, repo)
    except Exception as exc:  # a broken plugin is a problem of the server that uses it, not a crash
        return [(("type",), f"driver {kind!r} cannot be loaded: {exc}", "DRIVER_UNKNOWN")]


class Unavailable(Driver):
    """Stands in for a driver that could not be created: every user fails with the reason, so the
    job's failure policy applies exactly as for any other driver error."""

    def __init__(self, settings: dict[str, Any], context: DriverContext, reason: str) -> None:
        super().__init__(settings, context)
        self.reason = reason

    def plan(self, request: DeployRequest) -> Outcome:
        return Outcome("FAILED", self.reason)

    apply = destroy = plan


def create(kind: str, settings: dict[str, Any], context: DriverContext) -> Driver:
    try:
        return driver_class(kind)(settings, context)
    except Exception as exc:  # a plugin that cannot load or start fails its users, never the pass
        return Unavailable(settings, context, f"driver {kind!r} could not start: {type(exc).__name__}: {exc}")
