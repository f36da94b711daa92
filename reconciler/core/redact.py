"""One redaction step between every driver and every output (log, record, message, terminal)."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse

MASK = "[REDACTED]"


class Redactor:
    """Replaces known secret values, and their URL-, JSON- and base64-encoded forms, with a mask."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._lock = threading.Lock()
        self._ordered: list[str] = []

    def add(self, secret: str) -> None:
        if len(secret) < 3:  # masking 1-2 characters everywhere would destroy every log; refuse to pretend
            return
        forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
        # as a tool printing JSON writes it: quotes and backslashes escaped, non-ASCII as \uXXXX or not
        forms |= {json.dumps(secret, ensure_ascii=flag)[1:-1] for flag in (True, False)}
        raw = secret.encode("utf-8")
        for encoder in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encoder(raw).decode()
            forms.add(encoded)
            forms.add(encoded.rstrip("="))
        # base64 of a secret embedded in a longer text (e.g. Basic auth "user:secret") shifts alignment;
        # cover the three alignments with their stable inner part. At alignment 0 the whole 3-byte
        # groups are stable; only the last partial group depends on what follows.
        aligned = raw[: len(raw) - len(raw) % 3]
        if len(aligned) >= 6:
            for encoder in (base64.b64encode, base64.urlsafe_b64encode):
                forms.add(encoder(aligned).decode())
        for shift in (1, 2):
            inner = base64.b64encode(b"\0" * shift + raw).decode()
            core = inner[4:-4] if len(inner) > 12 else ""
            if len(core) >= 8:
                forms.add(core)
        with self._lock:
            self._forms |= {f for f in forms if len(f) >= 3}
            self._ordered = sorted(self._forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._ordered:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._ordered)
