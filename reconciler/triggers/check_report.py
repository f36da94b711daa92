"""Rendering a `CheckResult`: terminal text, a pull-request comment (markdown), GitHub annotations.

Everything shown comes from the pull request and is escaped for its medium: job names are
validated, but messages may quote the author's YAML.
"""

from __future__ import annotations

import html

from reconciler.triggers.check import BlockPreview, CheckResult, JobPreview, UserPreview

COMMENT_MARKER = "<!-- reconciler-check -->"  # lets a workflow find and update its own comment


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
    out += [p.as_text() for p in result.problems]
    jobs, users, broken = _totals(result)
    verdict = f"{len(result.problems)} problem(s): the check fails" if result.problems else "ok"
    out.append(f"merging would run {jobs} job(s) for {users} user(s) ({broken} with broken assets); "
               f"{verdict}")
    return "\n".join(out) + "\n"


# -- markdown (a pull-request comment) -----------------------------------------------------------------

def _md(value: object) -> str:
    """Escape for a markdown table cell (also HTML: GitHub renders both)."""
    return html.escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def markdown(result: CheckResult) -> str:
    jobs, users, broken = _totals(result)
    head = "✅ ready to merge" if result.valid else f"❌ {len(result.problems)} problem(s)"
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
    out += ["</details>", ""]
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
    jobs, users, broken = _totals(result)
    verdict = f"{len(result.problems)} problem(s) must be fixed" if result.problems else "ready to merge"
    summary = f"merging would run {jobs} job(s) for {users} user(s), {broken} with broken assets; {verdict}"
    out.append(f"::notice title=reconciler check::{_gh_data(summary)}")
    return "\n".join(out) + "\n"
