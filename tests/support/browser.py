"""Debian's chromium (apt-get install chromium), driven by Playwright without a browser download of its own."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
