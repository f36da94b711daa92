"""One user's deployment, prepared: tokens resolved, content rendered, broken assets found.

Used alike by the engine (before a driver call), by fleet workers and by the pull-request check
(which renders with an empty environment). Missing secrets are data (`missing_secrets`), never
text to be matched.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.files import MODE_LINK
from reconciler.core.model import Block, Definition, SecretRef, TokenDecl, TokenValue
from reconciler.core.render import as_text, broken_reason, render, value_text
from reconciler.core.validate import Desired


@dataclass(frozen=True)
class Prepared:
    """What one user of a block receives, or why it cannot be deployed as is."""

    user: str
    assets: dict[str, bytes]
    content_digest: str
    parameters: dict[str, Any]  # secrets resolved: handed to the driver, never written anywhere
    public_parameters: dict[str, Any]  # secrets as {"secret": NAME}: for manifests, logs and pages
    tokens: dict[str, str]  # every token (content and parameter) as text, secrets resolved
    public_tokens: dict[str, Any]  # every token's resolved value, secrets as {"secret": NAME}
    broken: tuple[str, ...] = ()  # why rendered assets are broken (.json/.yaml that does not parse)
    missing_secrets: tuple[str, ...] = ()  # environment variables named by a token but not set


def _merged(decls: tuple[TokenDecl, ...], block_values: dict[str, TokenValue],
            user_values: dict[str, TokenValue]) -> dict[str, TokenValue]:
    values: dict[str, TokenValue] = {d.name: d.default for d in decls if d.has_default}
    values.update(block_values)
    values.update(user_values)
    return values


def token_values(block: Block, definition: Definition, uid: str) -> tuple[dict[str, TokenValue],
                                                                          dict[str, TokenValue]]:
    """(content tokens, parameter tokens) for one user: definition default, block value, user override."""
    override = block.user_tokens.get(uid)
    content = _merged(definition.content_tokens, block.content_tokens, override.content_tokens if override else {})
    params = _merged(definition.parameter_tokens, block.parameter_tokens,
                     override.parameter_tokens if override else {})
    return content, params


def uses_content_secrets(block: Block, uid: str) -> bool:
    values = list(block.content_tokens.values())
    override = block.user_tokens.get(uid)
    if override is not None:
        values += list(override.content_tokens.values())
    return any(isinstance(v, SecretRef) for v in values)


def public(value: TokenValue) -> Any:
    return {"secret": value.env} if isinstance(value, SecretRef) else value


def prepare_user(block: Block, definition: Definition, uid: str, content: dict[str, bytes],
                 env: Mapping[str, str], on_secret: Callable[[str], None] = lambda value: None) -> Prepared:
    """Resolve and render for one user. `on_secret` sees every secret value before it is used (the
    redactor); a secret that is not set renders as empty text and is listed in `missing_secrets`."""
    content_values, param_values = token_values(block, definition, uid)
    missing: list[str] = []

    def resolve(value: TokenValue) -> Any:
        if isinstance(value, SecretRef):
            secret = env.get(value.env)
            if secret is None:
                missing.append(value.env)
                return ""
            on_secret(secret)
            return secret
        return value

    content_text = {k: value_text(resolve(v)) for k, v in content_values.items()}
    params = {k: resolve(v) for k, v in param_values.items()}
    broken: list[str] = []
    assets: dict[str, bytes] = {}
    for rel, data in sorted(content.items()):
        text = as_text(data)
        rendered = data if text is None else render(text, content_text).encode("utf-8")
        # DESTROY needs no content tokens (SPEC 3.4): its content (e.g. a Terraform module) is handed over
        # as far as it renders, and never judged broken
        reason = broken_reason(rel, rendered) if text is not None and block.action != "DESTROY" else None
        if reason:
            broken.append(reason)
        assets[rel] = rendered
    digest = hashlib.sha256()
    for rel, data in sorted(assets.items()):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return Prepared(
        user=uid, assets=assets, content_digest="sha256:" + digest.hexdigest(), parameters=params,
        public_parameters={k: public(v) for k, v in param_values.items()},
        tokens={**content_text, **{k: value_text(v) for k, v in params.items()}},
        public_tokens={**{k: public(v) for k, v in content_values.items()},
                       **{k: public(v) for k, v in param_values.items()}},
        broken=tuple(broken), missing_secrets=tuple(dict.fromkeys(missing)))


class ContentCache:
    """The content files of each definition of one `Desired`, read once (a block may have 10,000 users).

    It belongs to the desired state it reads: a build resumed from another commit gets its own.
    """

    def __init__(self, desired: Desired) -> None:
        self.desired = desired
        self._content: dict[str, dict[str, bytes]] = {}

    def of(self, definition: Definition) -> dict[str, bytes]:
        if definition.name not in self._content:
            self._content[definition.name] = self._read(definition)
        return self._content[definition.name]

    def _read(self, definition: Definition) -> dict[str, bytes]:
        entries = self.desired.content.get(definition.name, {})
        files = self.desired.files
        all_entries = files.entries()
        wanted = {rel: e.path for rel, e in entries.items() if e.mode != MODE_LINK}
        links = {rel: e for rel, e in entries.items() if e.mode == MODE_LINK}
        data = files.read_many(list(wanted.values())) if wanted else {}
        assets = {rel: data[path] for rel, path in wanted.items()}
        for rel, entry in links.items():  # validation allowed only links inside the content folder
            target = files.read_many([entry.path])[entry.path].decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
            if resolved in all_entries and all_entries[resolved].mode != MODE_LINK:
                assets[rel] = files.read_many([resolved])[resolved]
        return assets
