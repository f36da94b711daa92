"""Write a new job that re-targets the users of JOB that ended FAILED, SKIPPED or NOT_RUN."""

from __future__ import annotations

import argparse
import re
from typing import Any

from reconciler.commands._repo import branch_state
from reconciler.core.records import NOT_OK, RUNNING, LedgerRecord
from reconciler.core.resources import NAME_RE, parse_resource
from reconciler.errors import EXIT_PROBLEMS, UserError
from reconciler.ledger import git

MAX_NAME = 63


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the executed job to retry")
    parser.add_argument("--commit", action="store_true", help="commit the new job file (else leave it to you)")
    parser.add_argument("--push", action="store_true",
                        help="commit the new job file and push the commit (to `remote:`, else the branch's upstream)")


def retry_name(job: str, taken: set[str]) -> str:
    n = 1
    while True:
        suffix = f"-retry-{n}"
        base = re.sub(r"-retry-\d+$", "", job)[: MAX_NAME - len(suffix)].rstrip("-._")
        name = f"{base}{suffix}"
        if name not in taken:
            return name
        n += 1


def retry_document(original: dict[str, Any], record: LedgerRecord, job: str) -> dict[str, Any] | None:
    """The new job: same blocks, definitions, tokens and policy, only for users that did not succeed."""
    blocks = []
    for index, raw in enumerate(original.get("blocks", [])):
        if index >= len(record.blocks):
            failed = None  # never started: every recipient is retried
        else:
            failed = [u for u, r in record.blocks[index].users.items() if r.status in NOT_OK]
            if not failed:
                continue
        block = dict(raw)
        if failed is not None:
            block["users"] = failed
            overrides = {u: v for u, v in (raw.get("user_tokens") or {}).items() if u in failed}
            if overrides:
                block["user_tokens"] = overrides
            else:
                block.pop("user_tokens", None)
        blocks.append(block)
    if not blocks:
        return None
    doc: dict[str, Any] = {
        "description": f"Retry of {job} (build {record.build_id})",
        "retry_of": job,
        "on_failure": original.get("on_failure", "skip"),
        "blocks": blocks,
    }
    return doc


def run(args: argparse.Namespace) -> int:
    import yaml

    if not NAME_RE.match(args.job):
        raise UserError(f"{args.job!r} is not a job name", EXIT_PROBLEMS)
    state = branch_state(args.repo)
    record = state.ledger.records.get(args.job) if state else None
    if state is None or record is None:
        raise UserError(f"job {args.job!r} has no ledger record on the deployment branch: it has not run, "
                        "so there is nothing to retry", EXIT_PROBLEMS)
    if record.status in RUNNING:
        raise UserError(f"job {args.job!r} is still {record.status}; retry it once it has finished", EXIT_PROBLEMS)
    repo = git.open_repo(args.repo)
    if repo.top is None:
        raise UserError("retry writes a job file: run it in a clone with a working tree")
    raw = None
    for suffix in (".yaml", ".yml"):
        raw = git.read_file(repo, record.desired_commit, f"jobs/{args.job}{suffix}")
        if raw is not None:
            break
    if raw is None:
        raise UserError(f"cannot find the job file of {args.job!r} as claimed (commit {record.desired_commit[:12]})")
    parsed = parse_resource("job", raw)
    if parsed.data is None:
        raise UserError(f"the claimed job file of {args.job!r} cannot be read")
    doc = retry_document(parsed.data, record, args.job)
    if doc is None:
        print(f"nothing to retry: every user of {args.job} ended successfully ({record.status})")
        return 0
    taken = set(state.desired.job_files) | set(state.ledger.records)
    taken |= {p.stem for p in (repo.top / "jobs").glob("*.y*ml")}
    name = retry_name(args.job, taken)
    path = repo.top / "jobs" / f"{name}.yaml"
    text = f"# Retry of {args.job}: written by `reconciler retry`.\n" + yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True)
    path.write_text(text, "utf-8")
    check = parse_resource("job", text.encode())
    if check.findings:
        path.unlink()
        raise UserError(f"the retry job would be invalid: {check.findings[0].message}", EXIT_PROBLEMS)
    users = sum(len(b["users"]) if isinstance(b["users"], list) else 0 for b in doc["blocks"])
    print(f"wrote jobs/{name}.yaml: {len(doc['blocks'])} block(s), {users or 'all'} user(s) to retry")
    if args.commit or args.push:
        commit_and_push(repo, state.settings.remote, path.name, args.job, name, push=args.push)
    else:
        print(f"review it, then: git add jobs/{name}.yaml && git commit -m 'Retry {args.job}' && git push")
    return 0


def commit_and_push(repo: git.Repo, configured_remote: str | None, file_name: str, job: str, name: str, *,
                    push: bool) -> None:
    """Commit the retry job on the checked-out branch; push it when asked. Says what runs it, and only
    what is true: a pass runs what is on the deployment branch of the remote (when there is one)."""
    from reconciler.ledger.branch import deployment_branch

    branch = git.head_branch(repo)
    if branch is None:
        raise UserError("HEAD is detached: check out a branch before `retry --commit`")
    deploying = branch == deployment_branch(repo)
    remote = configured_remote or git.upstream_remote(repo, branch)
    commit = git.commit_paths(repo, [f"jobs/{file_name}"], f"Retry {job} as {name}")
    print(f"committed jobs/{file_name} on {branch} ({commit[:12]})")
    if push:
        if remote is None:
            raise UserError(f"committed, but {branch} has no remote to push to (no `remote:` in reconciler.yaml, "
                            f"no upstream): set one with `git push -u REMOTE {branch}`", EXIT_PROBLEMS)
        try:
            pushed = git.push(repo, remote, commit, branch)
        except git.RemoteUnreachable as exc:
            raise UserError(f"committed, but not pushed: {exc}; push it with `git push {remote} {branch}`",
                            EXIT_PROBLEMS) from None
        if not pushed:
            raise UserError(f"committed, but {remote}/{branch} has commits this clone does not have: "
                            f"`git pull --rebase {remote} {branch} && git push {remote} {branch}`", EXIT_PROBLEMS)
        print(f"pushed to {remote}/{branch}; " + (
            "the next reconcile pass runs it" if deploying else "open a pull request to the deployment branch"))
    elif not deploying:
        print(f"{branch} is not the deployment branch: push it and open a pull request")
    elif remote is not None:
        print(f"push it for the next pass to run it: `git push {remote} {branch}` (or use `retry --push`); "
              f"a pass refuses a clone with commits that are not on {remote}")
    else:
        print("the next reconcile pass runs it")
