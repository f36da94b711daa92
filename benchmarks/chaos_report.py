"""The chaos harness's report: the guarantees checked against the remote, the logs and the clones."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from chaos_actors import Harness

from tests.support.chaos_checks import (
    branch_jobs,
    http_requests_from_target,
    judge_effects,
    judge_history,
    read_history,
    tip_records,
)
from tests.support.chaos_world import FINAL, World, git, job_kind, read_jsonl


def clone_state(world: World, clones: list[Path]) -> dict[str, list[str]]:
    remote_tip = git(world.remote, "rev-parse", "main").strip()
    dirty, behind = [], []
    for clone in clones:
        porcelain = git(clone, "status", "--porcelain", check=False)
        if porcelain.strip():
            dirty.append(f"{clone.name}: {porcelain.strip().splitlines()[:5]}")
        local = git(clone, "rev-parse", "main", check=False).strip()
        head = git(clone, "symbolic-ref", "-q", "HEAD", check=False).strip()
        if local != remote_tip or head != "refs/heads/main":
            behind.append(f"{clone.name}: main {local[:10]} HEAD {head or 'detached'} (remote {remote_tip[:10]})")
    return {"dirty": dirty, "not_at_remote": behind}


def incomplete_finals(world: World, tips: dict[str, dict[str, Any] | None], users: int) -> dict[str, list[str]]:
    """Final records must hold one result per user of every block, and their log must be on the branch."""
    wanted = {f"u{i}" for i in range(users)}
    logs = set(git(world.remote, "ls-tree", "--name-only", "main", "status/logs/").split())
    missing_users, missing_logs = [], []
    for job, record in sorted(tips.items()):
        if not record or record.get("status") not in FINAL:
            continue
        servers = {"cmd": ["cmd"], "api": ["api"], "both": ["cmd", "api"]}[job_kind(int(job.split("-")[1]))]
        got = [(b.get("server"), set(b.get("users", {}))) for b in record.get("blocks", [])]
        if got != [(s, wanted) for s in servers]:
            missing_users.append(f"{job}: {[(s, sorted(u)) for s, u in got]}")
        if record.get("log") not in logs:
            missing_logs.append(f"{job}: {record.get('log')}")
    return {"final_records_missing_users": missing_users, "final_records_without_log": missing_logs}


def pass_summary(harness: Harness) -> dict[str, Any]:
    results = [r for runner in harness.runners for r in runner.results]
    codes = Counter(str(r.rc) for r in results)
    internal, tracebacks = 0, 0
    samples: list[str] = []
    events: Counter[str] = Counter()
    for runner in harness.runners:
        if runner.log.exists():
            for line in runner.log.read_text("utf-8", "replace").splitlines():
                if line.startswith("{"):
                    try:
                        events[json.loads(line).get("event", "?")] += 1
                    except ValueError:
                        events["<unreadable line>"] += 1
    for result in results:
        if result.killed:
            continue
        if result.rc == 3:
            internal += 1
        if "Traceback" in result.stderr_tail:
            tracebacks += 1
        if (result.rc not in (0, 1) or "Traceback" in result.stderr_tail) and len(samples) < 8:
            lines = [ln for ln in result.stderr_tail.splitlines() if not ln.startswith("{")]
            samples.append(f"{result.clone} pid {result.pid} rc {result.rc}: {' | '.join(lines[-3:])[:400]}")
    return {"total": len(results), "killed": sum(r.killed for r in results), "exit_codes": dict(codes),
            "internal_errors": internal, "tracebacks": tracebacks, "samples": samples, "events": dict(events)}


def explain_duplicates(world: World, duplicates: dict[str, Any]) -> list[str]:
    """For each (job, user) run more than once: which clone ran it when, and the kills and pauses between."""
    timeline = read_jsonl(world.work / "timeline.jsonl")
    clone_of = {e["pid"]: e["clone"] for e in timeline if e.get("event") == "pass.start"}
    chaos = [e for e in timeline if e.get("event") in ("kill", "pause", "continue")]
    runs: dict[str, list[dict[str, Any]]] = {}
    for effect in read_jsonl(world.effects):
        key = f"{effect.get('job')}/{effect.get('user')}"
        if key in duplicates:
            runs.setdefault(key, []).append(effect)
    out = []
    for key, effects in sorted(runs.items())[:10]:
        effects.sort(key=lambda e: e["t"])
        t0 = effects[0]["t"]
        ran = ", ".join(f"{clone_of.get(e['ppid'], '?')} (pid {e['ppid']}) at +{e['t'] - t0:.1f} s" for e in effects)
        between = [f"{e['event']} {e['clone']} pid {e['pid']}{' (' + e['aim'] + ')' if 'aim' in e else ''}"
                   f" at +{e['wall'] - t0:.1f} s" for e in chaos if t0 - 3 <= e["wall"] <= effects[-1]["t"]]
        out.append(f"{key}: run by {ran}; around it: {'; '.join(between) or 'no kill or pause'}")
    return out


def build_report(*, args: Any, seed: int, hosts: int, world: World, harness: Harness, human: Path,
                 requests: list[Any], settled: dict[str, Any], forced: list[str], stray_commands: int,
                 chaos_seconds: float, total_seconds: float, expected_jobs: list[str]) -> dict[str, Any]:
    history = read_history(world)
    ledger = judge_history(history)
    tips = tip_records(world, history)
    on_branch = branch_jobs(world)
    lost = sorted(j for j in set(on_branch) | set(expected_jobs)
                  if (tips.get(j) or {}).get("status") not in FINAL)
    effects = judge_effects(world, tips, http_requests_from_target(requests), args.on_interrupt)
    clones = clone_state(world, [r.path for r in harness.runners])
    incomplete = incomplete_finals(world, tips, args.users)
    attempts = harness.human_attempts
    human_stats = {"pushes": len(attempts), "attempts_max": max(attempts, default=0),
                   "attempts_mean": round(statistics.mean(attempts), 2) if attempts else None,
                   "attempts_histogram": dict(sorted(Counter(attempts).items())), "gave_up": harness.human_gave_up}
    passes = pass_summary(harness)
    checks = {
        "duplicate_command_effects": len(effects["duplicate_command_effects"]),
        "http_pairs_with_several_idempotency_keys": len(effects["http_pairs_with_several_keys"]),
        "lost_jobs": len(lost),
        "unreadable_records": len(ledger["unreadable_record_versions"]),
        "final_records_reset": len(ledger["final_records_reset"]),
        "final_records_changed": len(ledger["final_records_changed"]),
        "final_records_missing_users": len(incomplete["final_records_missing_users"]),
        "final_records_without_log": len(incomplete["final_records_without_log"]),
        "records_deleted": len(ledger["records_deleted"]),
        "epoch_decreased": len(ledger["epoch_decreased"]),
        "owner_changed_without_epoch_increase": len(ledger["owner_changed_without_epoch_increase"]),
        "user_results_changed": len(ledger["user_results_changed"]),
        "jobs_with_several_builds": len(ledger["jobs_with_several_builds"]),
        "effects_of_another_build": len(effects["effects_of_another_build"]),
        "http_requests_of_another_build": len(effects["http_requests_of_another_build"]),
        "command_started_more_than_once": len(effects["command_started_more_than_once"]),
        "command_deployed_without_effect": len(effects["command_deployed_without_effect"]),
        "command_started_but_not_failed": len(effects["command_started_but_not_failed"]),
        "ledger_commits_without_trailer": len(history.foreign_ledger_commits),
        "status_commits_outside_ledger": len(history.status_commits_outside_ledger),
        "empty_status_commits": len(history.empty_status_commits),
        "dirty_clones": len(clones["dirty"]),
        "clones_not_at_remote": len(clones["not_at_remote"]),
        "internal_errors": passes["internal_errors"],
        "tracebacks": passes["tracebacks"],
        "not_settled": 0 if settled["settled"] else 1,
        "human_push_gave_up": harness.human_gave_up,
    }
    verdict = {name: {"value": value, "ok": value == 0} for name, value in checks.items()}
    verdict["human_push_attempts_max"] = {"value": human_stats["attempts_max"], "limit": args.human_max_attempts,
                                          "ok": human_stats["attempts_max"] <= args.human_max_attempts}
    return {
        "ok": all(v["ok"] for v in verdict.values()),
        "failed": sorted(name for name, v in verdict.items() if not v["ok"]),
        "checks": verdict,
        "config": {"clones": args.clones, "jobs": args.jobs, "users": args.users, "kills": args.kills,
                   "seed": seed, "on_interrupt": args.on_interrupt, "lease_seconds": args.lease_seconds,
                   "concurrency": args.concurrency, "hosts": hosts, "pauses": args.pauses,
                   "partitions": args.partitions, "work": str(world.work)},
        "seconds": {"chaos": round(chaos_seconds, 1), "settle": settled["seconds"], "total": round(total_seconds, 1)},
        "kills": {"done": harness.kills_done, "by_aim": dict(harness.kills_by_aim)},
        "human": human_stats,
        "passes": passes,
        "ledger": {"commits": history.commits, "merges": history.merges, "records": len(history.versions),
                   "record_versions": sum(len(v) for v in history.versions.values()),
                   **ledger,
                   "ledger_commits_without_trailer": history.foreign_ledger_commits,
                   "status_commits_outside_ledger": history.status_commits_outside_ledger,
                   "empty_status_commits": history.empty_status_commits},
        "effects": {**effects, "duplicates_explained": explain_duplicates(world, effects["duplicate_command_effects"])},
        "lost_jobs": lost,
        **incomplete,
        "unfinished_at_timeout": settled["unfinished"],
        "clones": clones,
        "operator_fixes": harness.operator_fixes,
        "forced_stops": forced,
        "stray_commands_killed": stray_commands,
        "final_statuses": dict(Counter((r or {}).get("status", "none") for r in tips.values())),
    }


def compact(report: dict[str, Any], keep: int = 5) -> dict[str, Any]:
    """Long lists cut to `keep` examples plus their length (the full report is in report-full.json)."""

    def cut(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            out = {k: cut(v) for k, v in items[:max(keep, 40)]}
            if len(items) > max(keep, 40):
                out["..."] = f"{len(items)} entries"
            return out
        if isinstance(value, list) and len(value) > keep:
            return [*(cut(v) for v in value[:keep]), f"... {len(value)} in all"]
        return value

    def section(values: dict[str, Any]) -> dict[str, Any]:
        return {k: cut(v) if not isinstance(v, dict | list) or len(v) <= keep
                else {"count": len(v), "examples": cut(list(v.items()) if isinstance(v, dict) else v)}
                for k, v in values.items()}

    short: dict[str, Any] = {}
    for key, value in report.items():
        if key == "failed":
            short[key] = value
        elif key == "checks":
            short[key] = {name: check["value"] for name, check in value.items()}
        elif key in ("effects", "ledger"):
            short[key] = section(value)
        else:
            short[key] = cut(value)
    return short
