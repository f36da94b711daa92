"""One redaction step between every driver and every output (log, record, message, terminal).

SPEC 9.1 rule 11, redaction is total:
- a secret is masked in every form a tool or a target may print it in: raw; URL-encoded (`quote`,
  `quote_plus`, `/` kept or not); JSON-escaped (ASCII or not, `/` as `\\/` or not); base64 (standard,
  URL-safe, padded or not, and the stable middle of it inside a longer encoded text such as Basic
  credentials); HTML-escaped (`&#x27;`, `&#39;`, `&apos;`, `&quot;`, `&#34;`);
- a multi-line secret is masked as a whole, and line by line (tools print it a line at a time);
- text is masked whole before it is cut (`clip`), and a cut never leaves the start of a secret;
- the 8-character minimum is enforced before claims (rule 10, `reconciler.core.secrets`): a shorter
  value that still reaches the redactor is masked anyway, however much of the log that hides.
"""

from __future__ import annotations

import base64
import html
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable

from reconciler.core.secrets import MIN_SECRET_LENGTH

MASK = "[REDACTED]"
TRUNCATED = "..."


def _html_forms(secret: str) -> set[str]:
    escaped = html.escape(secret, quote=False)
    forms = {escaped}
    quotes = [("'", ("&#x27;", "&#39;", "&apos;")), ('"', ("&quot;", "&#34;", "&#x22;"))]
    variants = {escaped}
    for char, entities in quotes:
        variants = {v.replace(char, e) for v in variants for e in entities} | variants
    forms |= variants
    return forms


def _json_forms(secret: str) -> set[str]:
    forms = {json.dumps(secret, ensure_ascii=flag)[1:-1] for flag in (True, False)}
    return forms | {f.replace("/", "\\/") for f in forms}


def _base64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for encoder in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encoder(raw).decode()
        forms |= {encoded, encoded.rstrip("=")}
        # base64 of a secret embedded in a longer text (e.g. Basic auth "user:secret") depends on its
        # alignment; cover the three alignments with their stable inner part
        aligned = raw[: len(raw) - len(raw) % 3]
        if len(aligned) >= 6:
            forms.add(encoder(aligned).decode())
        for shift in (1, 2):
            inner = encoder(b"\0" * shift + raw).decode()
            core = inner[4:-4] if len(inner) > 12 else ""
            if len(core) >= 8:
                forms.add(core)
    return forms


def forms_of(secret: str) -> set[str]:
    """Every printed form of one secret value that is masked."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret),
             urllib.parse.quote_plus(secret)}
    forms |= _json_forms(secret) | _html_forms(secret) | _base64_forms(secret.encode("utf-8"))
    return {f for f in forms if f}


class Redactor:
    """Replaces known secret values, in every form above, with a mask. Thread-safe; add() any time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._short_lines: set[str] = set()  # lines of a multi-line secret too short to mask anywhere
        self._pattern: re.Pattern[str] | None = None
        self._line_pattern: re.Pattern[str] | None = None

    def add(self, secret: str) -> None:
        if not secret:
            return
        forms = forms_of(secret)
        short: set[str] = set()
        lines = [line.strip("\r") for line in secret.split("\n")]
        if len(lines) > 1:
            for line in lines:
                if len(line.strip()) >= MIN_SECRET_LENGTH:
                    forms |= forms_of(line)
                elif line.strip():
                    short.add(line.strip())
        with self._lock:
            if forms <= self._forms and short <= self._short_lines:
                return
            self._forms |= forms
            self._short_lines |= short
            ordered = sorted(self._forms, key=lambda f: (-len(f), f))  # longest first: a form inside another
            self._pattern = re.compile("|".join(map(re.escape, ordered)))
            if self._short_lines:
                alternatives = "|".join(map(re.escape, sorted(self._short_lines, key=lambda f: (-len(f), f))))
                # a short line of the secret printed on a line of its own (after a log prefix such as "u1 stdout:")
                self._line_pattern = re.compile(rf"(?m)(^|: )[ \t]*(?:{alternatives})[ \t\r]*$")

    def __call__(self, text: str) -> str:
        pattern, line_pattern = self._pattern, self._line_pattern
        if pattern is None:
            return text
        text = pattern.sub(MASK, text)  # one pass: a mask is never scanned again
        if line_pattern is not None:
            text = line_pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def clip(self, text: str, limit: int, marker: str = TRUNCATED) -> str:
        """Mask the whole text, then cut it to `limit` characters (plus `marker`). What is kept never ends
        with the start of a secret."""
        masked = self(text)
        if len(masked) <= limit:
            return masked
        return self.without_partial_tail(masked[:limit]) + marker

    def without_partial_tail(self, text: str) -> str:
        """`text` without a trailing piece that is the beginning of a secret form."""
        with self._lock:
            forms: Iterable[str] = tuple(self._forms)
        cut = 0
        for form in forms:
            for size in range(min(len(form) - 1, len(text)), cut, -1):
                if text.endswith(form[:size]):
                    cut = size
                    break
        return text[: len(text) - cut] if cut else text

    def __bool__(self) -> bool:
        return self._pattern is not None
