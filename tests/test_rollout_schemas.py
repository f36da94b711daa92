"""The shipped schemas accept and refuse the 0.2 rollout keys (SPEC 9.4): job `after`, block `rollout`,
server `max_parallel`, settings `freeze` and `notify`. Checked with the reference validator against the
shipped files and through `reconciler.core.schemas` (what validation uses)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler.core import schemas
from tests.support.repos import ROOT

BLOCK = {"definition": "app", "server": "srv", "users": "all"}
SERVER = {"environment": "e", "organization": "o", "driver": {"type": "local", "path": "x"}, "users": []}
HOOK = "https://hooks.example.com/x"

CASES: list[tuple[str, Any, bool]] = [
    ("job", {"after": ["a", "b"], "blocks": [BLOCK]}, True),
    ("job", {"after": [], "blocks": [BLOCK]}, True),
    ("job", {"after": ["a", "a"], "blocks": [BLOCK]}, False),  # unique
    ("job", {"after": ["Not A Name"], "blocks": [BLOCK]}, False),
    ("job", {"after": "a", "blocks": [BLOCK]}, False),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": [1, "10%", "100%"], "max_failures": 0}}]}, True),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": ["12.5%"], "max_failures": "5%"}}]}, True),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": [1]}}]}, True),  # max_failures defaults to 0
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": []}}]}, False),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": [0]}}]}, False),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": ["ten%"]}}]}, False),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": ["10"]}}]}, False),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": [1], "max_failures": -1}}]}, False),
    ("job", {"blocks": [{**BLOCK, "rollout": {"max_failures": 1}}]}, False),
    ("job", {"blocks": [{**BLOCK, "rollout": {"waves": [1], "pause": "1h"}}]}, False),
    ("server", {**SERVER, "max_parallel": 2}, True),
    ("server", {**SERVER, "max_parallel": 0}, False),
    ("server", {**SERVER, "max_parallel": "2"}, False),
    ("settings", {"freeze": [{"from": "2026-12-23T18:00:00Z", "to": "2027-01-04T08:00:00Z",
                              "environments": ["production"], "reason": "year end"}]}, True),
    ("settings", {"freeze": [{"weekly": {"day": "FRI", "at": "18:00", "for": "64h"}}]}, True),
    ("settings", {"freeze": [{"weekly": {"day": "FRI", "at": "18:00", "for": "1d2h30m"},
                              "environments": ["a", "b"], "reason": "r"}]}, True),
    ("settings", {"freeze": [{"weekly": {"day": "FRIDAY", "at": "18:00", "for": "64h"}}]}, False),
    ("settings", {"freeze": [{"weekly": {"day": "FRI", "at": "24:00", "for": "64h"}}]}, False),
    ("settings", {"freeze": [{"weekly": {"day": "FRI", "at": "18:00", "for": "h"}}]}, False),
    ("settings", {"freeze": [{"weekly": {"day": "FRI", "at": "18:00"}}]}, False),
    ("settings", {"freeze": [{"from": "2026-12-23T18:00:00Z"}]}, False),
    ("settings", {"freeze": [{"from": "tomorrow", "to": "2027-01-04T08:00:00Z"}]}, False),
    ("settings", {"freeze": [{"from": "2026-12-23T18:00:00Z", "to": "2027-01-04T08:00:00Z", "environments": []}]},
     False),
    ("settings", {"notify": [{"url": HOOK, "events": ["job.failed"]}]}, True),
    ("settings", {"notify": [{"url": HOOK, "events": ["job.claimed", "job.finished", "job.failed", "job.blocked"],
                              "secret": {"secret": "DEPLOY_SECRET_HMAC"}, "format": "json"}]}, True),
    ("settings", {"notify": [{"url": {"secret": "DEPLOY_SECRET_SLACK"}, "events": ["job.failed"],
                              "format": "slack", "page_url": "https://reconciler.example.com"}]}, True),
    ("settings", {"notify": [{"url": "https://api.github.com", "events": ["job.finished"], "format": "github-status",
                              "repository": "acme/deploy", "secret": {"secret": "DEPLOY_SECRET_GH"}}]}, True),
    ("settings", {"notify": [{"url": "https://api.github.com", "events": ["job.finished"],
                              "format": "github-status", "secret": {"secret": "DEPLOY_SECRET_GH"}}]}, False),
    ("settings", {"notify": [{"url": "https://api.github.com", "events": ["job.finished"],
                              "format": "github-status", "repository": "acme/deploy"}]}, False),
    ("settings", {"notify": [{"url": HOOK, "events": []}]}, False),
    ("settings", {"notify": [{"url": HOOK, "events": ["job.started"]}]}, False),
    ("settings", {"notify": [{"url": "ftp://example.com", "events": ["job.failed"]}]}, False),
    ("settings", {"notify": [{"url": HOOK, "events": ["job.failed"], "format": "teams"}]}, False),
    ("settings", {"notify": [{"url": HOOK, "events": ["job.failed"], "secret": "literal-secret"}]}, False),
    ("settings", {"notify": [{"events": ["job.failed"]}]}, False),
]


@pytest.mark.parametrize("kind, document, valid", CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)])
def test_rollout_keys_in_the_shipped_schemas(kind: str, document: Any, valid: bool) -> None:
    shipped = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text("utf-8"))
    assert Draft202012Validator(shipped).is_valid(document) is valid
    assert schemas.is_valid(kind, document) is valid  # the fast validator agrees with the reference one
