"""What the chaos harness and the two-host tests check, read only from the remote, the effect log and the
HTTP target's request log (never from the reconciler's own view of things).

The contract (SPEC 4, 5, 6, 9.1):
- command driver (`idempotent_apply = False`): a (job, user) is applied at most once, and exactly once
  when its final result says it was (`DEPLOYED`); a user that ran is never recorded `NOT_RUN`/`SKIPPED`
  (its `started` marker was durable before the call, so recovery can only record `FAILED`);
- http driver (idempotent): any number of requests, but every `PUT` of a (job, user) carries the same
  `Idempotency-Key` (one build, one request per user);
- every effect and request belongs to the build of the job's final record (one build per job);
- every job on the branch ends with a final record; every version of every record in the remote's
  history is JSON matching `status.schema.json`; once final, a record never changes again; epochs
  never decrease, and an owner never changes without an epoch increase; a user's final result, once
  written, never changes.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from tests.support.chaos_world import FINAL, GIT_ENV, ROOT, World, read_jsonl

LEDGER = "status"


def schema_validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads((ROOT / "schemas" / "status.schema.json").read_text("utf-8")))


def _git(world: World, *args: str, input: str | None = None) -> str:
    proc = subprocess.run(["git", "--git-dir", str(world.remote), *args], capture_output=True, text=True,
                          check=True, input=input, env={**GIT_ENV, "PATH": "/usr/bin:/bin:/usr/local/bin"})
    return proc.stdout


def _cat_blobs(world: World, blobs: list[str]) -> dict[str, bytes]:
    if not blobs:
        return {}
    proc = subprocess.run(["git", "--git-dir", str(world.remote), "cat-file", "--batch"],
                          input=("\n".join(blobs) + "\n").encode(), capture_output=True, check=True)
    out, data, pos = {}, proc.stdout, 0
    for blob in blobs:
        header_end = data.index(b"\n", pos)
        header = data[pos:header_end].split()
        size = int(header[2])
        out[blob] = data[header_end + 1:header_end + 1 + size]
        pos = header_end + 1 + size + 1
    return out


@dataclass
class Version:
    commit: str
    subject: str
    trailer: bool
    blob: str | None  # None: the record was deleted by this commit
    record: dict[str, Any] | None = None
    problem: str | None = None


@dataclass
class History:
    """Every version of every record along the remote's first-parent history of `main`, oldest first."""

    versions: dict[str, list[Version]] = field(default_factory=dict)
    commits: int = 0
    merges: int = 0
    foreign_ledger_commits: list[str] = field(default_factory=list)  # touched status/ without the trailer
    status_commits_outside_ledger: list[str] = field(default_factory=list)
    empty_status_commits: list[str] = field(default_factory=list)  # SPEC 5.6: nothing new, no commit


def read_history(world: World, branch: str = "main") -> History:
    history = History()
    log = _git(world, "log", "--reverse", "--first-parent", "--diff-merges=first-parent", "--no-abbrev",
               "--raw", "--no-renames", "--format=%x00C %H %P%x00%s%x00%(trailers:key=Reconciler-Build,valueonly)",
               branch)
    pending: list[Version] = []
    commit, subject, trailer = "", "", False
    paths: list[tuple[str, str | None]] = []

    def flush() -> None:
        if not commit:
            return
        ledger = [p for p in paths if p[0].startswith(LEDGER + "/")]
        if ledger and not trailer:
            history.foreign_ledger_commits.append(f"{commit[:10]} {subject}")
        if trailer and not paths:
            history.empty_status_commits.append(f"{commit[:10]} {subject}")
        if trailer and len(ledger) != len(paths):
            history.status_commits_outside_ledger.append(f"{commit[:10]} {subject}")
        for path, blob in ledger:
            if path.endswith(".json") and path.count("/") == 1:
                version = Version(commit, subject, trailer, blob)
                history.versions.setdefault(path[len(LEDGER) + 1:-len(".json")], []).append(version)
                pending.append(version)

    for chunk in log.split("\x00C ")[1:]:
        flush()
        head, subject, rest = chunk.split("\x00", 2)
        ids = head.split()
        commit = ids[0]
        history.commits += 1
        history.merges += len(ids) > 2
        trailer_text, _, raw = rest.partition("\n")
        trailer = bool(trailer_text.strip())
        paths = []
        for line in raw.splitlines():
            if line.startswith(":"):
                meta, path = line.split("\t", 1)
                fields = meta.split()
                blob = None if fields[4] == "D" else fields[3]
                paths.append((path, blob))
    flush()
    blobs = _cat_blobs(world, sorted({v.blob for v in pending if v.blob}))
    validator = schema_validator()
    for job, versions in history.versions.items():
        for version in versions:
            if version.blob is None:
                continue
            try:
                record = json.loads(blobs[version.blob])
            except ValueError as error:
                version.problem = f"not JSON: {error}"
                continue
            version.record = record
            errors = sorted(validator.iter_errors(record), key=lambda e: e.path)
            if errors:
                version.problem = f"schema: {errors[0].message[:200]}"
            elif record.get("job") != job:
                version.problem = f"names job {record.get('job')!r}"
    return history


def _user_results(record: dict[str, Any]) -> dict[tuple[int, str], str]:
    return {(i, user): result["status"] for i, block in enumerate(record.get("blocks", []))
            for user, result in block.get("users", {}).items()}


def judge_history(history: History) -> dict[str, Any]:
    unreadable: list[str] = []
    final_changed: list[str] = []
    final_reset: list[str] = []
    deleted: list[str] = []
    epoch_decreased: list[str] = []
    owner_without_epoch: list[str] = []
    builds_per_job: dict[str, set[str]] = {}
    results_changed: list[str] = []
    takeovers = 0
    for job, versions in history.versions.items():
        previous: dict[str, Any] | None = None
        final_blob: str | None = None
        for version in versions:
            where = f"{job} @ {version.commit[:10]} ({version.subject[:60]})"
            if version.blob is None:
                deleted.append(where)
                continue
            if final_blob is not None and version.blob != final_blob:
                final_changed.append(where)
            if version.problem or version.record is None:
                unreadable.append(f"{where}: {version.problem}")
                continue
            record = version.record
            builds_per_job.setdefault(job, set()).add(record.get("build_id", "?"))
            if previous is not None:
                if previous.get("status") in FINAL and record.get("status") not in FINAL:
                    final_reset.append(f"{where}: {previous['status']} -> {record.get('status')}")
                old_epoch, new_epoch = previous.get("epoch", 1), record.get("epoch", 1)
                if new_epoch < old_epoch:
                    epoch_decreased.append(f"{where}: epoch {old_epoch} -> {new_epoch}")
                if previous.get("owner") != record.get("owner"):
                    takeovers += 1
                    if new_epoch <= old_epoch:
                        owner_without_epoch.append(
                            f"{where}: owner {_owner(previous)} -> {_owner(record)} at epoch {new_epoch}")
                before = _user_results(previous)
                for key, status in _user_results(record).items():
                    if key in before and before[key] != status:
                        results_changed.append(f"{where}: {key[1]} (block {key[0]}) {before[key]} -> {status}")
            if record.get("status") in FINAL and final_blob is None:
                final_blob = version.blob
            previous = record
    return {
        "unreadable_record_versions": unreadable,
        "final_records_changed": final_changed,
        "final_records_reset": final_reset,
        "records_deleted": deleted,
        "epoch_decreased": epoch_decreased,
        "owner_changed_without_epoch_increase": owner_without_epoch,
        "user_results_changed": results_changed,
        "jobs_with_several_builds": {j: sorted(b) for j, b in builds_per_job.items() if len(b) > 1},
        "owner_changes": takeovers,
    }


def _owner(record: dict[str, Any]) -> str:
    owner = record.get("owner") or {}
    return f"{owner.get('host')}/{owner.get('pid')}"


def tip_records(world: World, history: History) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for job, versions in history.versions.items():
        last = versions[-1]
        out[job] = last.record if last.blob is not None and last.problem is None else None
    return out


def branch_jobs(world: World) -> list[str]:
    names = _git(world, "ls-tree", "--name-only", "main", "jobs/").split()
    return sorted(Path(n).stem for n in names if n.endswith((".yaml", ".yml")))


def judge_effects(world: World, tips: dict[str, dict[str, Any] | None], requests: list[dict[str, Any]],
                  on_interrupt: str) -> dict[str, Any]:
    """Effects (command) and requests (http) against the final records."""
    effects = [e for e in read_jsonl(world.effects) if "unreadable" not in e]
    begins = [e for e in read_jsonl(world.begins) if "unreadable" not in e]
    per_pair: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for effect in effects:
        per_pair[(effect["job"], effect["user"])].append(effect)
    duplicates = {f"{j}/{u}": [f"{e['build']} pid {e['pid']} ppid {e['ppid']} host {e['host']}" for e in found]
                  for (j, u), found in per_pair.items() if len(found) > 1}
    results: dict[str, dict[tuple[str, str], str]] = {"cmd": {}, "api": {}}
    final_build: dict[str, str] = {}
    for job, record in tips.items():
        if record is None:
            continue
        final_build[job] = record.get("build_id", "")
        for block in record.get("blocks", []):
            server = block.get("server")
            for user, result in block.get("users", {}).items():
                if server in results:
                    results[server][(job, user)] = result["status"]
    foreign_effects = [f"{e['job']}/{e['user']} build {e['build']} (final {final_build.get(e['job'])})"
                       for e in effects if final_build.get(e["job"]) not in (None, e["build"])]
    deployed_without_effect = sorted(f"{j}/{u}" for (j, u), s in results["cmd"].items()
                                     if s == "DEPLOYED" and not per_pair.get((j, u)))
    begun = Counter((b["job"], b["user"]) for b in begins)
    # a command that began had its `started` marker pushed first: recovery can only say FAILED
    started_but_not_failed = sorted(f"{j}/{u}: {s}" for (j, u), s in results["cmd"].items()
                                      if s not in ("DEPLOYED", "UNCHANGED", "FAILED") and begun[(j, u)])
    started_twice = {f"{j}/{u}": n for (j, u), n in begun.items() if n > 1}
    interrupted_failed = sum(1 for s in results["cmd"].values() if s == "FAILED")
    # http: one Idempotency-Key per (job, user) across every PUT
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    builds_seen: dict[str, set[str]] = defaultdict(set)
    for request in requests:
        if request["method"] != "PUT":
            continue
        keys[(request["job"], request["user"])].add(request["key"])
        builds_seen[request["job"]].add(request["build"])
    several_keys = {f"{j}/{u}": sorted(k) for (j, u), k in keys.items() if len(k) > 1}
    foreign_requests = sorted(f"{j}: {sorted(b - {final_build.get(j)})}" for j, b in builds_seen.items()
                              if final_build.get(j) is not None and b - {final_build[j]})
    http_ok_without_request = sorted(f"{j}/{u}" for (j, u), s in results["api"].items()
                                     if s in ("DEPLOYED", "UNCHANGED") and not keys.get((j, u)))
    http_not_run_with_request = sorted(f"{j}/{u}" for (j, u), s in results["api"].items()
                                       if s == "NOT_RUN" and keys.get((j, u)))
    return {
        "command_effects": len(effects),
        "command_pairs_with_results": len(results["cmd"]),
        "duplicate_command_effects": duplicates,
        "command_started_more_than_once": started_twice,
        "command_deployed_without_effect": deployed_without_effect,
        "command_started_but_not_failed": started_but_not_failed,
        "command_users_failed": interrupted_failed,
        "effects_of_another_build": foreign_effects,
        "http_puts": sum(1 for r in requests if r["method"] == "PUT"),
        "http_pairs_with_several_keys": several_keys,
        "http_requests_of_another_build": foreign_requests,
        "http_ok_without_request": http_ok_without_request,
        "http_not_run_with_request": http_not_run_with_request,
        "on_interrupt": on_interrupt,
    }


def http_requests_from_target(seen: list[Any]) -> list[dict[str, Any]]:
    """The recording target's requests as plain rows: method, job, build, user, key."""
    rows = []
    for request in seen:
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            body = {}
        headers = {k.lower(): v for k, v in request.headers.items()}
        key = headers.get("idempotency-key", "")
        parts = request.path.strip("/").split("/")
        user = parts[1] if len(parts) > 1 else ""
        rows.append({"method": request.method, "job": body.get("job", ""), "build": body.get("build_id", ""),
                     "user": body.get("user", user), "key": key, "at": request.at})
    return rows
