"""How times, build ids and quoted values are shown to people (terminal, page): pure and import-free, so the quick
paths of the command line (a no-op pass) can print without loading the listing and its models."""

from __future__ import annotations


def shown_time(value: str | None) -> str:
    """The one way a time is shown to people (terminal, page): 2026-11-21T12:04:10Z -> 2026-11-21 12:04 UTC."""
    return f"{value[:10]} {value[11:16]} UTC" if value and len(value) >= 16 else "-"


def short_build_id(build_id: str | None) -> str:
    """A build id's random part (like a short git commit id): unique enough beside the job's name."""
    return build_id.rsplit("-", 1)[-1] if build_id else "-"


def shown_value(text: str) -> str:
    """A value quoted in a one-line message: its repr, cut to 40 characters."""
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
