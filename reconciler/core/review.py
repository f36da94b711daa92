"""What a reviewer of a pull request should look at besides the jobs: servers, settings, changed lines. Pure.

A merged job may hand any allowed secret to any server in the repo, and settings change how every
later job runs, so `check` calls out new and changed servers (driver type, URL host, secret names)
and settings that change how jobs run (`SETTINGS_CHANGE`).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.settings import Settings

# settings that change how every later job runs, and so need a reviewer even when everything is valid
REVIEWED_SETTINGS = ("branch", "remote", "secret_prefixes", "commit_author", "freeze")


@dataclass(frozen=True)
class ServerReview:
    path: str
    change: str  # added | changed | deleted
    driver: str | None  # driver type after the change (before, when deleted)
    host: str | None  # the URL's host, for drivers that have a `url`
    secrets: list[str] = field(default_factory=list)  # environment variables the driver settings name
    was: dict[str, Any] = field(default_factory=dict)  # what changed: {"driver"|"host"|"secrets": old value}


def secret_names(value: Any) -> list[str]:
    """Every `{secret: NAME}` inside driver settings, in order, once each."""
    found: list[str] = []
    if isinstance(value, dict):
        if set(value) == {"secret"} and isinstance(value["secret"], str):
            return [value["secret"]]
        for item in value.values():
            found += secret_names(item)
    elif isinstance(value, list):
        for item in value:
            found += secret_names(item)
    return list(dict.fromkeys(found))


def _driver_facts(data: Any) -> tuple[str | None, str | None, list[str]]:
    driver = data.get("driver") if isinstance(data, dict) else None
    if not isinstance(driver, dict):
        return None, None, []
    url = driver.get("url")
    host = urllib.parse.urlsplit(url).hostname if isinstance(url, str) else None
    kind = driver.get("type")
    return (str(kind) if kind is not None else None), host, secret_names(driver)


def server_review(path: str, before: Any, after: Any) -> ServerReview | None:
    """The review note of one server file (its parsed data before and after; None = absent or unreadable).
    None when nothing a reviewer must see changed (a description, a user's name)."""
    if after is None and before is None:
        return None
    if before is None:
        kind, host, secrets = _driver_facts(after)
        return ServerReview(path, "added", kind, host, secrets)
    if after is None:
        kind, host, secrets = _driver_facts(before)
        return ServerReview(path, "deleted", kind, host, secrets)
    old, new = _driver_facts(before), _driver_facts(after)
    was = {key: o for key, o, n in zip(("driver", "host", "secrets"), old, new, strict=True) if o != n}
    driver_changed = (before.get("driver") if isinstance(before, dict) else None) != (
        after.get("driver") if isinstance(after, dict) else None)
    if not was and not driver_changed:
        return None
    return ServerReview(path, "changed", new[0], new[1], new[2], was)


def settings_changes(base: Settings, head: Settings, base_freeze: Any = None, head_freeze: Any = None) -> list[str]:
    """The reviewed settings a pull request changes (`freeze` compared as written, when present)."""
    changed = []
    for name in REVIEWED_SETTINGS:
        if name == "commit_author":
            if (base.commit_name, base.commit_email) != (head.commit_name, head.commit_email):
                changed.append(name)
        elif name == "freeze":
            if base_freeze != head_freeze:
                changed.append(name)
        elif getattr(base, name) != getattr(head, name):
            changed.append(name)
    return changed


def first_change(old: Any, new: Any, at: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The path of the first place where `new` differs from `old` (in `new`'s order), None if equal.
    A key that was removed points at the mapping that lost it."""
    if type(old) is not type(new) and not (isinstance(old, int | float) and isinstance(new, int | float)):
        return at
    if isinstance(new, dict):
        for key, value in new.items():
            if key not in old:
                return (*at, key)
            found = first_change(old[key], value, (*at, key))
            if found is not None:
                return found
        return at if set(old) - set(new) else None
    if isinstance(new, list):
        for index, value in enumerate(new):
            if index >= len(old):
                return (*at, index)
            found = first_change(old[index], value, (*at, index))
            if found is not None:
                return found
        return at if len(old) > len(new) else None
    return None if old == new else at
