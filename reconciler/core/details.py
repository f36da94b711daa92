"""Per-user details of a job (Qrvey's "Details"): what one user got, block by block.

Every resolved token value (secrets as `{secret: NAME}`, never the value), the digest of each file
rendered for that user, and the user's result. Computed with `prepare_user` and an empty
environment, the one place that resolves and renders, so the page, `status JOB --user ID` and the
engine agree; a file that uses a secret is rendered with that secret left empty, and says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler.core.model import Job, recipients
from reconciler.core.prepare import ContentCache, prepare_user, uses_content_secrets
from reconciler.core.records import LedgerRecord
from reconciler.core.validate import Desired


@dataclass(frozen=True)
class UserDetail:
    block: int
    definition: str
    server: str
    action: str
    tokens: dict[str, Any]  # every token's resolved value; a secret as {"secret": NAME}
    files: dict[str, str]  # rendered file -> "sha256:<hex>" of its bytes
    content_digest: str  # the digest the local driver's manifest and the http request carry
    secrets_left_empty: bool  # content uses a secret: the digests are of the content without its value
    status: str | None  # the user's result, None before the block ran for them
    reason: str | None
    broken: list[str] = field(default_factory=list)  # why rendered assets do not parse

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def user_details(desired: Desired, job: Job, record: LedgerRecord | None, uid: str) -> list[UserDetail]:
    """One entry per block of `job` that deploys to `uid` (none when the user is in no block)."""
    content = ContentCache(desired)
    out = []
    for block in job.blocks:
        server = desired.servers.get(block.server)
        definition = desired.definitions.get(block.definition)
        if server is None or definition is None or uid not in recipients(block, server):
            continue
        prepared = prepare_user(block, definition, uid, content.of(definition), {})
        result = None
        if record is not None and block.index < len(record.blocks):
            result = record.blocks[block.index].users.get(uid)
        out.append(UserDetail(
            block=block.index, definition=definition.name, server=server.name, action=block.action,
            tokens=dict(sorted(prepared.public_tokens.items())),
            files={rel: "sha256:" + hashlib.sha256(data).hexdigest() for rel, data in sorted(prepared.assets.items())},
            content_digest=prepared.content_digest, secrets_left_empty=uses_content_secrets(block, uid),
            status=result.status if result else None, reason=result.reason if result else None,
            broken=list(prepared.broken)))
    return out
