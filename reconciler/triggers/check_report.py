"""Rendering a `CheckResult`: terminal text, a pull-request comment (markdown), GitHub annotations.

Everything shown comes from the pull request and is escaped for its medium: job names are
validated, but messages may quote the author's YAML.
"""

from __future__ import annotations

import html
import json
from typing import Any

from reconciler.core.review import ServerReview
from reconciler.triggers.check import BlockPreview, CheckResult, JobPreview, UserPreview

COMMENT_MARKER = "<!-- reconciler-check -->"  # lets a workflow find and update its own comment
SHOWN_USERS = 50  # per block, in text and markdown (every user is in --format json)


def token_text(value: Any) -> str:
    """A resolved token value: a secret by name (never read, never shown), else as JSON."""
    if isinstance(value, dict) and set(value) == {"secret"}:
        return f"{{secret: {value['secret']}}}"
    return json.dumps(value, ensure_ascii=False)


def _tokens_line(user: UserPreview) -> str:
    return ", ".join(f"{name}={token_text(value)}" for name, value in user.tokens.items()) or "no tokens"


def _server_text(note: ServerReview) -> str:
    facts = [f"driver {note.driver or '?'}"]
    if note.host:
        facts.append(f"host {note.host}")
    facts.append(f"secrets {', '.join(note.secrets)}" if note.secrets else "no secrets")
    was = "; was " + ", ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in note.was.items()) \
        if note.was else ""
    return f"{note.path} ({note.change}): {', '.join(facts)}{was}"


def _verdict_text(result: CheckResult) -> str:
    if result.problems:
        return f"{len(result.problems)} problem(s): the check fails"
    if result.needs_review.settings:
        return f"needs review: changes {', '.join(result.needs_review.settings)} in reconciler.yaml"
    return "ok"


def _users(block: BlockPreview) -> str:
    return ", ".join(u.user for u in block.users) or "nobody"


def _state_text(job: JobPreview) -> str:
    if job.runs:
        return "runs on merge"
    if job.state in ("WAITING", "BLOCKED", "FROZEN") and job.reason:
        return job.reason + (f"; would run at {job.runs_at}" if job.state == "FROZEN" and job.runs_at else "")
    if job.state == "SCHEDULED" and job.runs_at and job.runs_at != job.run_at:
        return f"scheduled for {job.run_at}, in a freeze window: would run at {job.runs_at}"
    return {"MODIFIED": "refused: executed job changed", "INVALID": "invalid: never runs",
            "SCHEDULED": f"scheduled for {job.run_at}", "SUSPENDED": "suspended (draft)",
            "DELETED": "file deleted (record kept)", "-": "file deleted"}.get(job.state, job.state)


def _user_notes(user: UserPreview) -> list[str]:
    reads = [f"secret {s} would be read from the reconciler's environment" for s in user.secrets]
    return [*user.broken, *reads]


def _totals(result: CheckResult) -> tuple[int, int, int]:
    running = [j for j in result.jobs if j.runs]
    return len(running), sum(j.user_count for j in running), sum(j.broken_users for j in running)


# -- text ---------------------------------------------------------------------------------------------

def text(result: CheckResult) -> str:
    out = [f"check: base {result.base[:12]} ({result.base_ref}) <- head {result.head[:12]} "
           f"({result.head_ref}), merge base {result.merge_base[:12]}"]
    out += [f"note: {n}" for n in result.notes]
    for job in result.jobs:
        out.append(f"{job.job} ({job.change}): {job.state}, {_state_text(job)}")
        for block in job.blocks:
            out.append(f"  block {block.index}: {block.action} {block.definition} ({block.module_type}) on "
                       f"{block.server} [{block.environment} / {block.organization}] for {_users(block)}")
            if block.rollout:
                out.append(f"    rollout: {block.rollout['summary']}")
            for user in block.users:
                for note in _user_notes(user):
                    out.append(f"    {user.user}: {note}" + (f" -> {user.outcome}" if user.broken else ""))
            for user in block.users[:SHOWN_USERS]:
                out.append(f"    {user.user} tokens: {_tokens_line(user)}")
            if len(block.users) > SHOWN_USERS:
                out.append(f"    ... and {len(block.users) - SHOWN_USERS} more user(s) (see --format json)")
    out += [p.as_text() for p in result.problems]
    review = result.needs_review
    if review:
        out.append("needs review:")
        out += [f"  server {_server_text(note)}" for note in review.servers]
        if review.settings:
            out.append(f"  reconciler.yaml changes {', '.join(review.settings)}: how every later job runs")
    jobs, users, broken = _totals(result)
    verdict = _verdict_text(result)
    out.append(f"merging would run {jobs} job(s) for {users} user(s) ({broken} with broken assets); "
               f"{verdict}")
    return "\n".join(out) + "\n"


# -- markdown (a pull-request comment) -----------------------------------------------------------------

def _md(value: object) -> str:
    """Escape for a markdown table cell (also HTML: GitHub renders both)."""
    return html.escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def markdown(result: CheckResult) -> str:
    jobs, users, broken = _totals(result)
    head = (f"❌ {len(result.problems)} problem(s)" if result.problems else
            f"⚠️ needs review: changes {', '.join(result.needs_review.settings)}" if result.needs_review.settings
            else "✅ ready to merge")
    out = [COMMENT_MARKER, f"### reconciler check: {head}", ""]
    out.append(f"Base `{result.base[:12]}` ← head `{result.head[:12]}` "
               f"(merge base `{result.merge_base[:12]}`). "
               f"Merging would run **{jobs} job(s)** for **{users} user(s)**"
               + (f", {broken} of them with broken assets." if broken else "."))
    out.append("")
    if result.jobs:
        out += ["| Job | Change | After merge | Action | Module | Type | Server | Environment | Organization "
                "| Users | Broken |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --: | --: |"]
        for job in result.jobs:
            cells = [f"`{job.job}`", job.change, f"**{job.state}** ({_state_text(job)})"]
            if not job.blocks:
                out.append("| " + " | ".join([*map(_md, cells), *["–"] * 6, "–", "–"]) + " |")
            for block in job.blocks:
                row = [*cells, block.action, f"`{block.definition}`", block.module_type, f"`{block.server}`",
                       block.environment, block.organization, str(len(block.users)),
                       str(sum(1 for u in block.users if u.broken))]
                out.append("| " + " | ".join(_md(c) for c in row) + " |")
        out.append("")
    else:
        out += ["No job changes.", ""]
    if result.problems:
        out += ["#### Problems", "", "| File | Line | Code | Message |", "| --- | --: | --- | --- |"]
        out += [f"| `{_md(p.path)}` | {p.line if p.line is not None else ''} | {p.code} | {_md(p.message)} |"
                for p in result.problems]
        out.append("")
    if result.needs_review:
        out += _md_review(result)
    for note in result.notes:
        out += [f"> {_md(note)}", ""]
    for job in result.jobs:
        if job.blocks:
            out += _md_details(job)
    return "\n".join(out).rstrip("\n") + "\n"


def _md_details(job: JobPreview) -> list[str]:
    summary = f"<code>{_md(job.job)}</code>: {len(job.blocks)} block(s), {job.user_count} user(s)"
    if job.broken_users:
        summary += f", {job.broken_users} with broken assets"
    out = ["<details>", f"<summary>{summary}</summary>", ""]
    if job.description:
        out += [_md(job.description), ""]
    out += [f"on_failure: `{job.on_failure}`" + (f" · run_at: `{job.run_at}`" if job.run_at else ""), ""]
    for block in job.blocks:
        out += [f"**Block {block.index}**: {block.action} `{block.definition}` ({_md(block.module_type)}) on "
                f"`{block.server}` ({_md(block.environment)} / {_md(block.organization)}), driver "
                f"`{block.driver}`", ""]
        if block.rollout:
            out += [f"Rollout: {_md(block.rollout['summary'])}; a wave over the budget halts the rest "
                    "(\"halted by rollout\")", ""]
        out += ["| User | First pass | Notes |", "| --- | --- | --- |"]
        for user in block.users:
            notes = "<br>".join(_md(n) for n in _user_notes(user))
            out.append(f"| `{_md(user.user)}` | {user.outcome} | {notes} |")
        out.append("")
        out += _md_tokens(block)
    out += ["</details>", ""]
    return out


def _md_tokens(block: BlockPreview) -> list[str]:
    """Each user's resolved token values (secrets by name), one column per token."""
    names = list(dict.fromkeys(name for user in block.users for name in user.tokens))
    if not names:
        return []
    out = [f"Resolved tokens, block {block.index}:", "",
           "| User | " + " | ".join(f"`{_md(n)}`" for n in names) + " |",
           "| --- |" + " --- |" * len(names)]
    for user in block.users[:SHOWN_USERS]:
        cells = [_md(token_text(user.tokens[n])) if n in user.tokens else "–" for n in names]
        out.append(f"| `{_md(user.user)}` | " + " | ".join(cells) + " |")
    if len(block.users) > SHOWN_USERS:
        out.append(f"| … {len(block.users) - SHOWN_USERS} more (see `--format json`) |" + " |" * len(names))
    return [*out, ""]


def _md_review(result: CheckResult) -> list[str]:
    review = result.needs_review
    out = ["#### Needs review", ""]
    if review.servers:
        out += ["Servers this pull request adds or changes: merged jobs may send content and secrets there.", "",
                "| Server | Change | Driver | Host | Secrets | Was |", "| --- | --- | --- | --- | --- | --- |"]
        for note in review.servers:
            was = "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in note.was.items())
            out.append(f"| `{_md(note.path)}` | {note.change} | {_md(note.driver or '?')} | {_md(note.host or '–')} "
                       f"| {_md(', '.join(note.secrets) or '–')} | {_md(was or '–')} |")
        out.append("")
    if review.settings:
        out += [f"`reconciler.yaml` changes **{_md(', '.join(review.settings))}**: how every later job runs. "
                "This check does not approve such a change on its own: a person decides.", ""]
    return out


# -- GitHub workflow commands --------------------------------------------------------------------------

def _gh_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(value: str) -> str:
    return _gh_data(value).replace(":", "%3A").replace(",", "%2C")


def github(result: CheckResult) -> str:
    out = []
    for p in result.problems:
        where = f"file={_gh_prop(p.path)}" + (f",line={p.line}" if p.line is not None else "")
        out.append(f"::error {where},title={_gh_prop(p.code)}::{_gh_data(p.message)}")
    for job in result.jobs:
        for block in job.blocks:
            for user in block.users:
                if user.broken and job.path:
                    out.append(f"::warning file={_gh_prop(job.path)},title=broken assets::"
                               + _gh_data(f"job {job.job} block {block.index}, user {user.user} would be "
                                          f"{user.outcome}: " + "; ".join(user.broken)))
    for note in result.needs_review.servers:
        out.append(f"::warning file={_gh_prop(note.path)},title=needs review::" + _gh_data(_server_text(note)))
    jobs, users, broken = _totals(result)
    verdict = (f"{len(result.problems)} problem(s) must be fixed" if result.problems else
               f"needs review: changes {', '.join(result.needs_review.settings)}" if result.needs_review.settings
               else "ready to merge")
    summary = f"merging would run {jobs} job(s) for {users} user(s), {broken} with broken assets; {verdict}"
    out.append(f"::notice title=reconciler check::{_gh_data(summary)}")
    return "\n".join(out) + "\n"
