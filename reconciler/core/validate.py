"""Desired state: load every resource, then rules 3, 4 and 7 across files.

`load_desired` never raises for bad input; problems are collected. An invalid job is recorded
with its problems and is never run; it never blocks another job.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from reconciler.core import digest, patterns
from reconciler.core.files import MODE_LINK, Entry, RepoFiles
from reconciler.core.model import (
    Block,
    Definition,
    Job,
    SecretRef,
    Server,
    TokenDecl,
    TokenValue,
    block_from_data,
    definition_from_data,
    server_from_data,
)
from reconciler.core.problems import Problem, ProblemList
from reconciler.core.render import as_text, placeholders
from reconciler.core.resources import SUFFIXES, Parsed, name_findings, parse_resource, stem_of
from reconciler.core.rollout_checks import after_lines, check_block_rollout
from reconciler.core.settings import Settings
from reconciler.core.shown import shown_value
from reconciler.core.suggest import did_you_mean
from reconciler.core.timeutil import parse_time

KIND_OF_DIR = {"servers": "server", "definitions": "definition", "jobs": "job"}
ParseFn = Callable[[str, str, bytes], Parsed]  # (kind, blob id, bytes) -> Parsed
ParseManyFn = Callable[[list[tuple[str, str, bytes]]], Iterable[Parsed]]  # the same for a batch, in order
SettingsProblem = tuple[tuple[str, ...], str, str]  # (key path under driver:, message, code)


class DriverCatalog(Protocol):
    """What validation needs to know of the installed drivers (`reconciler.drivers` is one)."""

    def known_types(self) -> set[str]: ...

    def is_known(self, kind: str) -> bool: ...

    def settings_problems(self, kind: str, settings: dict[str, Any], repo: Settings) -> list[SettingsProblem]: ...


@dataclass
class JobFile:
    """Every job file, valid or not."""

    name: str
    path: str
    blob: str
    data: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    job: Job | None = None
    after_lines: dict[str, int] = field(default_factory=dict)  # job named in `after:` -> its line

    @property
    def valid(self) -> bool:
        return self.job is not None and not self.problems


@dataclass
class Desired:
    settings: Settings
    servers: dict[str, Server]
    definitions: dict[str, Definition]
    job_files: dict[str, JobFile]
    content: dict[str, dict[str, Entry]]  # definition -> relative path -> entry
    problems: ProblemList
    files: RepoFiles

    @cached_property  # built once: callers ask for it once per job (10,000 jobs: seconds)
    def jobs(self) -> dict[str, Job]:
        return {name: jf.job for name, jf in self.job_files.items() if jf.valid and jf.job is not None}


def default_parse(kind: str, blob: str, raw: bytes) -> Parsed:
    return parse_resource(kind, raw)


def resource_entries(entries: dict[str, Entry]) -> list[tuple[str, str, Entry]]:
    """(kind, name, entry) for every resource file directly under servers/, definitions/, jobs/."""
    found = []
    for path, entry in entries.items():
        top, _, rest = path.partition("/")
        if top in KIND_OF_DIR and rest and "/" not in rest and rest.endswith(SUFFIXES):
            found.append((KIND_OF_DIR[top], stem_of(rest), entry))
    found.sort(key=lambda item: item[2].path)
    return found


def load_desired(files: RepoFiles, settings: Settings, parse: ParseFn = default_parse,
                 only_jobs: set[str] | None = None, *, catalog: DriverCatalog,
                 parse_many: ParseManyFn | None = None) -> Desired:
    """Load and validate desired state. `only_jobs`: validate just these jobs (others are listed).

    Servers and definitions are parsed first, then every job is checked as its parse arrives: with a parallel
    `parse_many` (an iterator) the cross-file checks of the first jobs overlap the parsing of the rest."""
    problems = ProblemList()
    entries = files.entries()
    by_path = resource_entries(entries)
    resources = sorted(by_path, key=lambda item: item[0] == "job")  # stable: servers and definitions first
    wanted = [e.path for kind, name, e in resources
              if kind != "job" or only_jobs is None or name in only_jobs]
    blobs = files.read_many(wanted)
    todo = [(kind, entry.blob, blobs[entry.path]) for kind, _, entry in resources
            if entry.path in blobs and entry.mode != MODE_LINK]
    done = iter(parse_many(todo) if parse_many is not None else [parse(*item) for item in todo])
    found: dict[str, list[Problem]] = {}  # path -> its problems

    def add(path: str, line: int | None, message: str, code: str) -> None:
        found.setdefault(path, []).append(problems.add(path, line, message, code))

    first: dict[tuple[str, str], str] = {}
    for kind, name, entry in by_path:  # ambiguous: neither file is used
        if (kind, name) in first:
            add(entry.path, 1, f"{kind} {name!r} is defined twice (also {first[(kind, name)]})", "NAME_DUPLICATE")
            add(first[(kind, name)], 1, f"{kind} {name!r} is defined twice (also {entry.path})", "NAME_DUPLICATE")
        else:
            first[(kind, name)] = entry.path

    def next_parsed(entry: Entry) -> Parsed | None:
        if entry.path not in blobs:
            return None
        if entry.mode == MODE_LINK:
            add(entry.path, 1, "a resource file may not be a symbolic link", "PATH_ESCAPE")
            return Parsed(None, None, ())
        result = next(done)
        for finding in (*result.findings, *name_findings(entry.path, result)):
            add(entry.path, finding.line, finding.message, finding.code)
        return result

    servers: dict[str, Server] = {}
    definitions: dict[str, Definition] = {}
    content: dict[str, dict[str, Entry]] = {}
    broken: dict[tuple[str, str], str] = {}
    job_files: dict[str, JobFile] = {}
    # content folders live under definitions/: scan that part of the tree once, not once per definition
    definition_entries = {p: e for p, e in entries.items() if p.startswith("definitions/")}
    others = [(kind, name, entry, next_parsed(entry)) for kind, name, entry in resources if kind != "job"]
    for kind, name, entry, result in others:
        if result is None or entry.path in found or result.data is None:
            broken[(kind, name)] = entry.path
            continue
        before = len(problems.items)
        if kind == "server":
            server = server_from_data(name, entry.path, result.data)
            _check_server(server, result, settings, problems, catalog)
            servers[name] = server
        else:
            definition = definition_from_data(name, entry.path, result.data)
            content[name] = _check_definition(definition, result, definition_entries, files, problems)
            definitions[name] = definition
        if len(problems.items) > before:
            broken[(kind, name)] = entry.path
            if kind == "server":
                servers.pop(name)
            else:
                definitions.pop(name)

    for kind, name, entry in resources:
        if kind != "job":
            continue
        job_parsed = next_parsed(entry)
        jf = JobFile(name, entry.path, entry.blob, job_parsed.data if job_parsed else None)
        jf.problems = list(found.get(entry.path, ()))
        if name in job_files:  # the duplicate (its problem is on both files)
            continue
        job_files[name] = jf
        if job_parsed is None or jf.problems or job_parsed.data is None:
            continue
        blocks = tuple(block_from_data(i, b) for i, b in enumerate(job_parsed.data["blocks"]))  # once: checked, kept
        jf.problems = _check_job(jf, job_parsed, blocks, servers, definitions, broken, settings)
        problems.extend(jf.problems)
        if not jf.problems:
            jf.job = _job_from(jf, job_parsed.data, blocks)
    return Desired(settings, servers, definitions, job_files, content, problems, files)


def _job_from(jf: JobFile, data: dict[str, Any], blocks: tuple[Block, ...]) -> Job:
    return Job(
        name=jf.name,
        path=jf.path,
        blob=jf.blob,
        description=data.get("description", ""),
        on_failure=data.get("on_failure", "skip"),
        run_at=parse_time(data["run_at"]) if "run_at" in data else None,
        suspend=bool(data.get("suspend", False)),
        retry_of=data.get("retry_of"),
        blocks=blocks,
        spec_digest=digest.spec_digest(data),
        after=tuple(data.get("after", ())),
    )


def _check_server(server: Server, parsed: Parsed, settings: Settings, problems: ProblemList,
                  catalog: DriverCatalog) -> None:
    doc = parsed.doc
    assert doc is not None
    seen: set[str] = set()
    for i, user in enumerate(server.users):
        if user.id in seen:
            problems.add(server.path, doc.line_of(("users", i, "id")), f"user id {user.id!r} is listed twice",
                         "USER_DUPLICATE")
        seen.add(user.id)
    line = doc.line_of(("driver", "type"))
    if not catalog.is_known(server.driver_type):
        problems.add(server.path, line, f"unknown driver type {server.driver_type!r}; installed: "
                     f"{', '.join(sorted(catalog.known_types()))}", "DRIVER_UNKNOWN")
        return
    for key, message, code in catalog.settings_problems(server.driver_type, server.driver, settings):
        problems.add(server.path, doc.line_of(("driver", *key)), message, code)


def _check_definition(definition: Definition, parsed: Parsed, entries: dict[str, Entry], files: RepoFiles,
                      problems: ProblemList) -> dict[str, Entry]:
    doc = parsed.doc
    assert doc is not None
    seen: set[str] = set()
    for kind, decls in (("content_tokens", definition.content_tokens),
                        ("parameter_tokens", definition.parameter_tokens)):
        for i, decl in enumerate(decls):
            line = doc.line_of((kind, i, "name"))
            if decl.name in seen:
                problems.add(definition.path, line, f"token {decl.name!r} is declared twice", "TOKEN_DUPLICATE")
            seen.add(decl.name)
            if decl.pattern is not None:
                try:
                    re.compile(decl.pattern)
                except re.error as exc:
                    problems.add(definition.path, doc.line_of((kind, i, "pattern")),
                                 f"pattern of token {decl.name!r} is not a valid regular expression: {exc}",
                                 "TOKEN_PATTERN")
                    continue
            if decl.has_default:
                if decl.secret:
                    problems.add(definition.path, doc.line_of((kind, i, "default")),
                                 f"secret token {decl.name!r} cannot have a literal default", "SECRET_REQUIRED")
                elif decl.kind == "parameter":
                    error = value_problem(decl, decl.default)
                    if error:
                        problems.add(definition.path, doc.line_of((kind, i, "default")),
                                     f"default of {decl.name!r}: {error}", "TOKEN_VALUE")
    if definition.content is None:
        return {}
    line = doc.line_of(("content",))
    folder = posixpath.normpath(posixpath.join("definitions", definition.content))
    if definition.content.startswith("/") or not folder.startswith("definitions/"):
        problems.add(definition.path, line, f"content {definition.content!r} leaves the definitions/ folder",
                     "PATH_ESCAPE")
        return {}
    prefix = folder + "/"
    files_in = {p[len(prefix):]: e for p, e in entries.items() if p.startswith(prefix)}
    if not files_in:
        link = entries.get(folder)
        if link is not None and link.mode == MODE_LINK:
            problems.add(definition.path, line, f"content folder {folder} is a symbolic link; links are not "
                         "followed", "PATH_ESCAPE")
        else:
            problems.add(definition.path, line, f"content folder {folder} is missing or empty", "CONTENT_MISSING")
        return {}
    declared = {d.name for d in definition.content_tokens}
    texts = files.read_many([e.path for e in files_in.values()])
    for _, entry in sorted(files_in.items()):
        if entry.mode == MODE_LINK:
            target = texts[entry.path].decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
            if target.startswith("/") or resolved.startswith("..") or not resolved.startswith(prefix):
                problems.add(entry.path, 1, f"symbolic link to {target!r} leaves the content folder of "
                             f"definition {definition.name!r}", "PATH_ESCAPE")
            continue
        text = as_text(texts[entry.path])
        if text is None:
            continue
        for token, tline in placeholders(text):
            if token not in declared:
                problems.add(entry.path, tline, f"placeholder {{{{ {token} }}}} is not a content token of "
                             f"definition {definition.name!r}", "CONTENT_TOKEN_UNDECLARED")
    return files_in


_PY_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def value_problem(decl: TokenDecl, value: Any) -> str | None:
    """Why a literal value does not fit the declared type/enum/pattern, or None."""
    if decl.kind == "content":
        return None
    if not _PY_TYPES[decl.type](value):
        hint = " (quote it to make it a string)" if decl.type == "string" else ""
        return f"{value!r} is not of type {decl.type}{hint}"
    if decl.enum is not None and value not in decl.enum:
        return f"{value!r} is not one of: {', '.join(repr(v) for v in decl.enum)}"
    if decl.pattern is not None and isinstance(value, str):
        try:
            if not patterns.fullmatch(decl.pattern, value):
                return f"{value!r} does not match the pattern {decl.pattern!r}"
        except patterns.PatternTimeout:
            return (f"{shown_value(value)} could not be checked against the pattern {decl.pattern!r} in time (it "
                    "backtracks catastrophically); simplify the pattern in the definition")
    return None


def _check_job(jf: JobFile, parsed: Parsed, blocks: tuple[Block, ...], servers: dict[str, Server],
               definitions: dict[str, Definition], broken: dict[tuple[str, str], str], settings: Settings
               ) -> list[Problem]:
    doc = parsed.doc
    assert doc is not None and jf.data is not None
    out = ProblemList()
    path = jf.path
    run_at = jf.data.get("run_at")
    if isinstance(run_at, str):  # the schema's pattern lets through e.g. 2026-02-30 and +99:99
        try:
            parse_time(run_at)
        except (ValueError, OverflowError) as exc:
            out.add(path, doc.line_of(("run_at",)), f"run_at: {run_at!r} is not a valid time ({exc})", "SCHEMA")
    jf.after_lines = after_lines(jf.data, doc)
    for block in blocks:
        at: tuple[Any, ...] = ("blocks", block.index)
        server = servers.get(block.server)
        definition = definitions.get(block.definition)
        for kind, name, found in (("server", block.server, server), ("definition", block.definition, definition)):
            if found is None:
                if (kind, name) in broken:
                    out.add(path, doc.line_of((*at, kind)), f"{kind} {name!r} is invalid (see {broken[(kind, name)]})",
                            "REF_INVALID")
                else:
                    known = [*(servers if kind == "server" else definitions), *(n for k, n in broken if k == kind)]
                    out.add(path, doc.line_of((*at, kind)), f"{kind} {name!r} does not exist "
                            f"({'servers' if kind == 'server' else 'definitions'}/{name}.yaml)"
                            + did_you_mean(str(name), known), f"REF_{kind.upper()}")
        _check_secret_names(block, at, path, doc, settings, out)
        if server is None or definition is None:
            continue
        recipients = _check_users(block, server, at, path, doc, out)
        check_block_rollout(block, recipients, at, path, doc, out)
        _check_token_values(block, definition, at, path, doc, out)
        _check_configured(block, definition, recipients, at, path, doc, out)
    return out.items


def _check_users(block: Block, server: Server, at: tuple[Any, ...], path: str, doc: Any,
                 out: ProblemList) -> list[str]:
    ids = server.user_ids
    if block.users == "all":
        recipients = list(ids)
    else:
        known = set(ids)
        recipients = []
        for i, uid in enumerate(block.users):
            if uid in known:
                recipients.append(uid)
            else:
                out.add(path, doc.line_of((*at, "users", i)), f"user {uid!r} does not exist on server "
                        f"{server.name!r}" + did_you_mean(str(uid), ids), "REF_USER")
    chosen = set(recipients)
    for uid in block.user_tokens:
        if uid not in chosen:
            out.add(path, doc.line_of((*at, "user_tokens", uid), key=True),
                    f"user_tokens names {uid!r}, who is not a user of this block" + did_you_mean(str(uid), chosen),
                    "REF_USER")
    return recipients


def _token_sources(block: Block) -> list[tuple[tuple[Any, ...], str, dict[str, TokenValue]]]:
    sources: list[tuple[tuple[Any, ...], str, dict[str, TokenValue]]] = [
        ((), "content", block.content_tokens), ((), "parameter", block.parameter_tokens)]
    for uid, override in block.user_tokens.items():
        sources.append((("user_tokens", uid), "content", override.content_tokens))
        sources.append((("user_tokens", uid), "parameter", override.parameter_tokens))
    return sources


def _check_secret_names(block: Block, at: tuple[Any, ...], path: str, doc: Any, settings: Settings,
                        out: ProblemList) -> None:
    for prefix, kind, values in _token_sources(block):
        for name, value in values.items():
            if isinstance(value, SecretRef) and not settings.secret_allowed(value.env):
                out.add(path, doc.line_of((*at, *prefix, f"{kind}_tokens", name, "secret")),
                        f"secret {value.env!r} is not allowed: secret variables must start with "
                        f"{' or '.join(settings.secret_prefixes)}", "SECRET_PREFIX")


def _check_token_values(block: Block, definition: Definition, at: tuple[Any, ...], path: str, doc: Any,
                        out: ProblemList) -> None:
    for prefix, kind, values in _token_sources(block):
        for name, value in values.items():
            where = (*at, *prefix, f"{kind}_tokens", name)
            decl = definition.token(kind, name)
            if decl is None:
                other = "parameter" if kind == "content" else "content"
                hint = (f"; it is a {other} token: set it under {other}_tokens"
                        if definition.token(other, name) is not None else did_you_mean(
                            str(name), [d.name for d in (definition.content_tokens if kind == "content"
                                                         else definition.parameter_tokens)]))
                out.add(path, doc.line_of(where, key=True), f"{kind} token {name!r} is not declared by definition "
                        f"{definition.name!r}" + hint, "TOKEN_UNDECLARED")
                continue
            if isinstance(value, SecretRef):
                continue
            if decl.secret:
                out.add(path, doc.line_of(where), f"token {name!r} is secret: give it as {{secret: ENV_NAME}}, "
                        "never as a literal", "SECRET_REQUIRED")
                continue
            error = value_problem(decl, value)
            if error:
                out.add(path, doc.line_of(where), f"{kind} token {name!r}: {error}", "TOKEN_VALUE")


def _check_configured(block: Block, definition: Definition, recipients: list[str], at: tuple[Any, ...],
                      path: str, doc: Any, out: ProblemList) -> None:
    """Rule 4: every needed token has a value for every recipient."""
    needed = [d for d in definition.parameter_tokens if not d.has_default]
    if block.action != "DESTROY":
        needed = [d for d in definition.content_tokens if not d.has_default] + needed
    for decl in needed:
        block_values = block.content_tokens if decl.kind == "content" else block.parameter_tokens
        if decl.name in block_values:
            continue
        missing = []
        for uid in recipients:
            override = block.user_tokens.get(uid)
            values = (override.content_tokens if decl.kind == "content" else override.parameter_tokens) \
                if override else {}
            if decl.name not in values:
                missing.append(uid)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            who = "user" if len(missing) == 1 else "users"
            out.add(path, doc.line_of(at), f"{decl.kind} token {decl.name!r} has no value for {who} {shown} "
                    f"(set it in blocks[{block.index}].{decl.kind}_tokens, in user_tokens, or give the token a "
                    "default)", "TOKEN_UNCONFIGURED")
