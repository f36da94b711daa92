"""The pull-request check: what merging `head` into `base` would do, computed without running anything.

The head is untrusted input: its files are read as data (validated, planned, rendered in memory)
and nothing from it is executed. Settings (ledger directory, secret prefixes) come from the base,
and immutability is judged against the base's ledger, since that is what the reconciler will use
after the merge.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.core import policy
from reconciler.core.files import SETTINGS_FILE
from reconciler.core.listing import rollout_json
from reconciler.core.model import Job, recipients
from reconciler.core.plan import Plan, plan
from reconciler.core.prepare import ContentCache, prepare_user, uses_content_secrets
from reconciler.core.problems import Problem, sort_problems
from reconciler.core.resources import SUFFIXES, parse_resource, stem_of
from reconciler.core.review import ServerReview, first_change, server_review, settings_changes
from reconciler.core.secrets import SECRET_CODES, SecretEnv
from reconciler.core.snapshot import Snapshot
from reconciler.core.timeutil import iso
from reconciler.errors import UserError
from reconciler.ledger import git
from reconciler.ledger.branch import committed_settings
from reconciler.ledger.load import load_commit_state


@dataclass
class UserPreview:
    user: str
    outcome: str  # what the first pass would do: deploy, plan, destroy, SKIPPED, FORCED, FAILED, NOT_RUN
    broken: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # environment variables read at run time
    tokens: dict[str, Any] = field(default_factory=dict)  # every token's resolved value; secrets as {secret: NAME}


@dataclass
class BlockPreview:
    index: int
    definition: str
    module_type: str
    server: str
    environment: str
    organization: str
    action: str
    driver: str
    users: list[UserPreview]
    rollout: dict[str, Any] | None = None  # waves (users each adds) and budget; None: one wave, no budget


@dataclass
class JobPreview:
    job: str
    path: str | None
    change: str  # added | changed | deleted | unchanged
    state: str  # listing state after the merge (PENDING, MODIFIED, INVALID, SCHEDULED, ...)
    runs: bool  # merging would run it on the next pass
    description: str = ""
    on_failure: str | None = None
    run_at: str | None = None
    build_id: str | None = None  # the base's record, for executed jobs
    reason: str | None = None  # why it is WAITING, BLOCKED or FROZEN after the merge
    runs_at: str | None = None  # a frozen or scheduled job: the earliest moment it would run
    blocks: list[BlockPreview] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def broken_users(self) -> int:
        return sum(1 for b in self.blocks for u in b.users if u.broken)

    @property
    def user_count(self) -> int:
        return sum(len(b.users) for b in self.blocks)


@dataclass
class NeedsReview:
    """What a reviewer should look at even when every check passes."""

    servers: list[ServerReview] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # reviewed settings changed by a settings-only PR

    def __bool__(self) -> bool:
        return bool(self.servers or self.settings)


@dataclass
class CheckResult:
    base_ref: str
    head_ref: str
    base: str
    head: str
    merge_base: str
    problems: list[Problem]
    to_run: list[str]
    jobs: list[JobPreview]
    notes: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    needs_review: NeedsReview = field(default_factory=NeedsReview)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def ready(self) -> bool:
        """May the check say "ready to merge"? Never about a settings change (SETTINGS_CHANGE)."""
        return self.valid and not self.needs_review.settings

    def as_json(self) -> dict[str, Any]:
        def job_json(j: JobPreview) -> dict[str, Any]:
            data = dataclasses.asdict(j)
            data["problems"] = [p.as_json() for p in j.problems]
            return data

        return {"valid": self.valid, "problems": [p.as_json() for p in self.problems], "to_run": self.to_run,
                "base": self.base, "head": self.head, "merge_base": self.merge_base,
                "base_ref": self.base_ref, "head_ref": self.head_ref, "notes": self.notes,
                "changed_files": self.changed_files, "jobs": [job_json(j) for j in self.jobs],
                "needs_review": dataclasses.asdict(self.needs_review), "ready": self.ready}


def _resolve(repo: git.Repo, ref: str, what: str) -> str:
    commit = git.resolve(repo, ref)
    if commit is None:
        raise UserError(f"{what} {ref!r} is not a commit in this repository (fetch it first, e.g. "
                        f"`git fetch origin {ref.removeprefix('origin/')}`)")
    return commit


def run_check(repo: git.Repo, base_ref: str, head_ref: str, now: datetime) -> CheckResult:
    base = _resolve(repo, base_ref, "base")
    head = _resolve(repo, head_ref, "head")
    fork = git.merge_base(repo, base, head)
    if fork is None:
        raise UserError(f"{base_ref} and {head_ref} have no common history; is --base the deployment branch?")
    base_state = load_commit_state(repo, base, jobs=set())  # its settings, ledger and job names
    # the head may not change how it is judged (shallow: freeze windows and notify targets stay objects)
    trusted = {f.name: getattr(base_state.settings, f.name) for f in dataclasses.fields(base_state.settings)}
    # jobs the base's ledger shows executed, unchanged in the head, can never run again: not re-judged
    head_state = load_commit_state(repo, head, trusted, skip_executed=True, judged_by=base_state.ledger)
    ledger_dir = base_state.settings.ledger_dir
    changed = git.changed_paths(repo, fork, head)
    problems = [*head_state.settings_problems, *_ledger_edits(repo, fork, head, ledger_dir, changed)]
    notes = []
    head_settings = committed_settings(repo, head)[0]
    review = NeedsReview(servers=_server_reviews(repo, fork, head, changed))
    if SETTINGS_FILE in changed:
        if head_settings.ledger_dir != ledger_dir:
            problems.append(Problem(
                SETTINGS_FILE, 1, f"the pull request moves the ledger from {ledger_dir!r} to "
                f"{head_settings.ledger_dir!r}: every executed job would run again; the ledger "
                "directory cannot be changed by a pull request", "LEDGER_EDIT"))
        problems += _settings_change(repo, fork, head, changed, ledger_dir, review)
        notes.append(f"{SETTINGS_FILE} changes: this check used the base's settings; the new ones take "
                     "effect after the merge")
    # secrets are set on the reconciler, not here (an empty environment): shown for reviewers, never failing
    result_plan = plan(head_state.desired, base_state.ledger, now, head_state.history.order(), SecretEnv({}))
    notes += [p.message for p in result_plan.problems if p.code in SECRET_CODES]
    result_plan = dataclasses.replace(result_plan, to_run=result_plan.due,
                                      problems=[p for p in result_plan.problems if p.code not in SECRET_CODES])
    problems.extend(_modified_at_changed_line(repo, result_plan.problems, head_state, base_state))
    problems = sort_problems(problems)
    jobs = _previews(head_state, base_state, result_plan, changed, problems, repo.root)
    return CheckResult(base_ref, head_ref, base, head, fork, problems, result_plan.to_run, jobs, notes,
                       [p for p in changed if not p.startswith(ledger_dir + "/")], review)


def _data_at(repo: git.Repo, rev: str, path: str, kind: str) -> Any:
    raw = git.read_path(repo, rev, path)
    return parse_resource(kind, raw).data if raw is not None else None


def _server_reviews(repo: git.Repo, fork: str, head: str, changed: list[str]) -> list[ServerReview]:
    """New, changed and removed servers: where merged jobs could send content and secrets."""
    found = []
    for path in changed:
        top, _, rest = path.partition("/")
        if top != "servers" or "/" in rest or not rest.endswith(SUFFIXES):
            continue
        note = server_review(path, _data_at(repo, fork, path, "server"), _data_at(repo, head, path, "server"))
        if note is not None:
            found.append(note)
    return found


def _settings_change(repo: git.Repo, fork: str, head: str, changed: list[str], ledger_dir: str,
                     review: NeedsReview) -> list[Problem]:
    """SETTINGS_CHANGE: a pull request that changes how every later job runs must do only that."""
    before, _ = committed_settings(repo, fork)
    after, _ = committed_settings(repo, head)
    raw_before = _data_at(repo, fork, SETTINGS_FILE, "settings")
    raw_after = git.read_path(repo, head, SETTINGS_FILE)
    parsed = parse_resource("settings", raw_after) if raw_after is not None else None
    data_after = parsed.data if parsed is not None else None
    changes = settings_changes(before, after, raw_before.get("freeze") if isinstance(raw_before, dict) else None,
                               data_after.get("freeze") if isinstance(data_after, dict) else None)
    if not changes:
        return []
    others = [p for p in changed if p != SETTINGS_FILE and not p.startswith(ledger_dir + "/")]
    if not others:
        review.settings = changes  # a settings-only pull request: valid, but never "ready to merge"
        return []
    line = 1
    if parsed is not None and parsed.doc is not None and isinstance(data_after, dict) and changes[0] in data_after:
        line = parsed.doc.line_of((changes[0],), key=True)
    return [Problem(SETTINGS_FILE, line, f"the pull request changes {', '.join(changes)} in {SETTINGS_FILE} "
                    f"together with {len(others)} other file(s); these settings change how every later job "
                    "runs: change them in a pull request of their own", "SETTINGS_CHANGE")]


def _modified_at_changed_line(repo: git.Repo, problems: list[Problem], head: Snapshot,
                              base: Snapshot) -> list[Problem]:
    """MODIFIED problems point at the first line whose meaning differs from the claimed job file."""
    out = []
    for problem in problems:
        if problem.code != "MODIFIED":
            out.append(problem)
            continue
        name = stem_of(problem.path.removeprefix("jobs/"))
        jf = head.desired.job_files.get(name)
        record = base.ledger.records.get(name) if name in base.ledger.records else None
        line = problem.line
        if jf is not None and record is not None:
            try:
                raw = git.read_blobs(repo, [record.job_blob, jf.blob])
            except git.GitError:
                raw = {}
            if raw:
                old = parse_resource("job", raw[record.job_blob]).data
                new = parse_resource("job", raw[jf.blob])
                where = first_change(old, new.data) if old is not None and new.data is not None else None
                if where is not None and new.doc is not None:
                    line = new.doc.line_of(where)
        out.append(dataclasses.replace(problem, line=line))
    return out


def _ledger_edits(repo: git.Repo, fork: str, head: str, ledger_dir: str, changed: list[str]) -> list[Problem]:
    paths = [p for p in changed if p.startswith(ledger_dir + "/")]
    before = git.tree_entries(repo, fork, paths)
    after = git.tree_entries(repo, head, paths)
    found = []
    for path in paths:
        verb = "adds" if path not in before else "deletes" if path not in after else "changes"
        found.append(Problem(path, None if verb == "deletes" else 1,
                             f"the pull request {verb} {path}: the ledger directory {ledger_dir}/ is "
                             "written only by the reconciler; drop this change from the branch",
                             "LEDGER_EDIT"))
    return found


def _previews(head: Snapshot, base: Snapshot, result: Plan, changed: list[str],
              problems: list[Problem], repo_root: Path) -> list[JobPreview]:
    """Jobs the pull request touches, jobs merging would run, and jobs with problems."""
    touched: dict[str, str] = {}
    before = base.desired.job_files
    for path in changed:
        top, _, rest = path.partition("/")
        if top == "jobs" and "/" not in rest and rest.endswith((".yaml", ".yml")):
            name = rest.rsplit(".", 1)[0]
            after = head.desired.job_files.get(name)
            touched[name] = "deleted" if after is None else "added" if name not in before else "changed"
    names = set(touched) | set(result.to_run)
    names |= {jf.name for jf in head.desired.job_files.values() if any(p.path == jf.path for p in problems)}
    # rendering only: no driver is created, nothing is written, no secret is read (empty environment)
    content = ContentCache(head.desired)
    previews = []
    for name in sorted(names, key=lambda n: (n not in result.to_run, _order(result, n), n)):
        jf = head.desired.job_files.get(name)
        record = base.ledger.records.get(name)
        state = result.states.get(name, "DELETED" if record else "-")
        preview = JobPreview(job=name, path=jf.path if jf else None, change=touched.get(name, "unchanged"),
                             state=state, runs=name in result.to_run,
                             build_id=record.build_id if record else None, reason=result.reasons.get(name),
                             runs_at=iso(result.runs_at.get(name)))
        if jf is not None:
            preview.problems = [p for p in problems if p.path == jf.path]
            if isinstance(jf.data, dict):
                preview.description = str(jf.data.get("description", ""))
        job = head.desired.jobs.get(name)
        if job is not None:
            preview.on_failure = job.on_failure
            preview.run_at = job.run_at.strftime("%Y-%m-%dT%H:%M:%SZ") if job.run_at else None
            if record is None:  # an executed job never runs again: nothing to render
                preview.blocks = _render(content, head, job)
        previews.append(preview)
    return previews


def _order(result: Plan, name: str) -> int:
    return result.to_run.index(name) if name in result.to_run else 0


def _render(content: ContentCache, state: Snapshot, job: Job) -> list[BlockPreview]:
    """Render every user's content in memory and apply the failure policy on paper (the engine's own)."""
    blocks = []
    aborted = False
    for block in job.blocks:
        server = state.desired.servers[block.server]
        definition = state.desired.definitions[block.definition]
        files = content.of(definition)
        prepared = [prepare_user(block, definition, uid, files, {}) for uid in recipients(block, server)]
        verdict = policy.triage(prepared, job.on_failure)
        users = []
        for p in prepared:
            broken = list(p.broken)
            if broken and uses_content_secrets(block, p.user):
                broken = [f"{b} (rendered with secret values left empty)" for b in broken]
            if aborted:
                outcome = "NOT_RUN"
            elif p.user in verdict.settled:
                outcome = verdict.settled[p.user][0]
            else:
                outcome = "FORCED" if p.broken else _clean_outcome(block.action)
            users.append(UserPreview(p.user, outcome, broken, sorted(set(p.missing_secrets)),
                                     dict(sorted(p.public_tokens.items()))))
        aborted = aborted or verdict.aborted
        blocks.append(BlockPreview(block.index, definition.name, definition.module_type, server.name,
                                   server.environment, server.organization, block.action, server.driver_type,
                                   users, rollout_json(block.rollout, [p.user for p in prepared])))
    return blocks


def _clean_outcome(action: str) -> str:
    return {"PLAN": "plan", "DESTROY": "destroy"}.get(action, "deploy")
