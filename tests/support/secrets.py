"""Every common form a secret could leak in: a test that finds none of them found no leak."""

from __future__ import annotations

import base64
import json
import urllib.parse


def secret_forms(secret: str) -> dict[str, str]:
    raw = secret.encode("utf-8")
    found = {
        "raw": secret,
        "url": urllib.parse.quote(secret, safe=""),
        "url-plus": urllib.parse.quote_plus(secret),
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "base64-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "json-ascii": json.dumps(secret)[1:-1],
        "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    # base64 of the secret inside longer text (e.g. Basic credentials): the aligned middle part
    for shift in (1, 2):
        found[f"base64-shift{shift}"] = base64.b64encode(b"\0" * shift + raw).decode()[4:-4]
    return found


def assert_no_form_of(secret: str, name: str, text: str) -> None:
    for kind, form in secret_forms(secret).items():
        assert form not in text, f"{name} shows the secret ({kind})"
