#!/usr/bin/env python3
"""Chaos harness (issue 12): attack "every job runs exactly once" the way the world will.

One bare remote; N clones, each looping `reconciler reconcile --remote origin` as real processes, each
pass the leader of its own process group, spread over two host names (`unshare -u`, root only); jobs
using a `command` driver whose command appends one line per run to an effect log, and jobs using the
`http` driver against a target that records every request with its Idempotency-Key; a human clone
committing unrelated files (and new jobs) with `git pull --rebase && git push`. Meanwhile: random
SIGKILLs of whole process groups (some aimed at a running `git push`, some at a running driver command,
some also killing that command, some at any other git command), SIGSTOP pauses of about a lease, and
partitions (a clone's `origin` is a symlink to the remote, renamed away for about a lease).

When the kill budget is spent, the clones run until every job is final and a few passes find nothing to
do; then the remote's whole history, the effect log and the request log are checked, and a JSON report
is printed (the full one is written to WORK/report-full.json, the timeline to WORK/timeline.jsonl).
Exit 0 when every guarantee held, 1 otherwise.

    python benchmarks/chaos.py --clones 6 --jobs 20 --users 5 --kills 50 --work /tmp/chaos --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from chaos_actors import Harness, Runner, Timeline  # noqa: E402
from chaos_report import build_report, compact  # noqa: E402

from tests.support.chaos_world import (  # noqa: E402
    FINAL,
    add_clone,
    can_fake_host,
    effect_commands_running,
    git,
    job_name,
    kill_group,
    make_world,
    remote_record,
)
from tests.support.http_target import Target, _Handler  # noqa: E402


class ChaosTarget(Target):
    """The reference target, slowed down at random (kills land mid-request) and failing 5% of requests
    with 503 before applying them (retries must reuse the Idempotency-Key)."""

    def __init__(self, rng: random.Random, delay: float = 0.15, fail_rate: float = 0.05) -> None:
        super().__init__()
        self.rng, self.delay, self.fail_rate = rng, delay, fail_rate

    def start(self) -> Target:
        from http.server import ThreadingHTTPServer

        target = self

        class Handler(_Handler):
            owner = target

            def _handle(self, method: str) -> None:
                time.sleep(target.rng.uniform(0, target.delay))
                if method == "PUT" and target.rng.random() < target.fail_rate:
                    target.fail(503, times=1, method="PUT")
                super()._handle(method)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clones", type=int, default=6, help="reconciler clones looping passes")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--users", type=int, default=5, help="users per server (both servers)")
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs of process groups")
    parser.add_argument("--work", type=Path, required=True, help="an empty or missing folder")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--on-interrupt", choices=("resume", "fail"), default="resume")
    parser.add_argument("--lease-seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2, help="users of a block deployed at once")
    parser.add_argument("--hosts", type=int, default=2,
                        help="host identities the clones are spread over (unshare -u, root only)")
    parser.add_argument("--pauses", type=int, default=2, help="SIGSTOPs of a pass for about one lease")
    parser.add_argument("--partitions", type=int, default=2,
                        help="times one clone is cut off from the remote for about one lease")
    parser.add_argument("--kill-interval", type=float, default=0.6, help="mean seconds between kills")
    parser.add_argument("--pass-pause", type=float, default=0.5, help="max pause between a clone's passes")
    parser.add_argument("--user-seconds", type=float, nargs=2, default=(0.05, 0.4),
                        help="a command user's random duration before and after its effect")
    parser.add_argument("--initial-jobs", type=int, default=None, help="jobs in the first commit (default jobs/4)")
    parser.add_argument("--quiet-passes", type=int, default=2, help="passes per clone that find nothing, at the end")
    parser.add_argument("--settle-timeout", type=float, default=None, help="default 120 s + 6 leases")
    parser.add_argument("--human-max-attempts", type=int, default=3, help="SPEC 9.2 (8 reconcilers: 3)")
    return parser.parse_args(argv)


def prepare_work(work: Path) -> None:
    if work.exists() and any(work.iterdir()):
        if not (work / ".chaos-work").exists():
            raise SystemExit(f"chaos: {work} is not empty and was not made by this harness; choose another --work")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / ".chaos-work").write_text("made by benchmarks/chaos.py; deleted by the next run\n")


def settle(harness: Harness, quiet_passes: int, timeout: float) -> dict[str, Any]:
    """Until every job on the remote has a final record, no driver command runs, and each clone finished
    `quiet_passes` passes that started after the remote's tip last moved."""
    world, deadline, started = harness.world, time.monotonic() + timeout, time.monotonic()
    last_tip, since = "", time.monotonic()
    missing: list[str] = []
    while time.monotonic() < deadline:
        tip = git(world.remote, "rev-parse", "main").strip()
        if tip != last_tip:
            last_tip, since = tip, time.monotonic()
        jobs = [Path(n).stem for n in git(world.remote, "ls-tree", "--name-only", "main", "jobs/").split()]
        missing = [j for j in jobs if (remote_record(world, j) or {}).get("status") not in FINAL]
        quiet = all(sum(1 for r in runner.results if r.started > since and not r.killed and r.rc in (0, 1))
                    >= quiet_passes for runner in harness.runners)
        if not missing and quiet and not effect_commands_running(world):
            return {"settled": True, "seconds": round(time.monotonic() - started, 1), "unfinished": []}
        time.sleep(0.5)
    return {"settled": False, "seconds": round(time.monotonic() - started, 1), "unfinished": missing}


def stop_runners(harness: Harness, loops: list[threading.Thread]) -> list[str]:
    harness.stop_passes.set()
    forced = []
    deadline = time.monotonic() + 120
    for thread, runner in zip(loops, harness.runners, strict=True):
        thread.join(max(0.1, deadline - time.monotonic()))
        if thread.is_alive():
            with runner.lock:
                pid = runner.live_pid()
            if pid is not None:
                kill_group(pid)
                forced.append(runner.name)
            thread.join(30)
    return forced


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    work = args.work.resolve()
    prepare_work(work)
    target = ChaosTarget(random.Random(seed + 1)).start()
    initial = args.initial_jobs if args.initial_jobs is not None else max(1, args.jobs // 4)
    world = make_world(work, users=args.users, http_url=target.url, jobs=range(initial),
                       lease_seconds=args.lease_seconds, on_interrupt=args.on_interrupt,
                       concurrency=args.concurrency, user_seconds=tuple(args.user_seconds))
    hosts = args.hosts if args.hosts > 1 and can_fake_host() else 1
    timeline = Timeline(work / "timeline.jsonl")
    harness = Harness(world, timeline, rng, args.pass_pause)
    (work / "links").mkdir()
    for i in range(args.clones):
        name = f"c{i}"
        host = None if i % hosts == 0 else f"chaos-host-{i % hosts}"
        link = work / "links" / f"{name}.git"  # renamed away to cut this clone off (--partitions)
        link.symlink_to(world.remote)
        clone = add_clone(world, name, url=str(link))
        harness.runners.append(Runner(name, clone, host, work / "logs" / f"{name}.log"))
    (work / "logs").mkdir()
    human = add_clone(world, "human", human=True)
    try:
        return run(args, seed, world, harness, human, target, initial, hosts)
    finally:
        harness.stop_passes.set()
        harness.stop_human.set()
        for runner in harness.runners:  # an interrupted harness leaves no pass behind
            with runner.lock:
                pid = runner.live_pid()
            if pid is not None:
                kill_group(pid)
        target.stop()


def run(args: argparse.Namespace, seed: int, world: Any, harness: Harness, human: Path, target: Target,
        initial: int, hosts: int) -> int:
    timeline, work = harness.timeline, world.work
    t0 = time.monotonic()
    timeline.add("start", seed=seed, args={k: str(v) for k, v in vars(args).items()}, hosts=hosts)
    loops = [threading.Thread(target=harness.loop, args=(r,), daemon=True) for r in harness.runners]
    for thread in loops:
        thread.start()
    later = list(range(initial, args.jobs))
    human_thread = threading.Thread(target=harness.human, args=(human, later, args.kills), daemon=True)
    killer = threading.Thread(target=harness.killer, args=(args.kills, args.kill_interval), daemon=True)
    every = args.kills * args.kill_interval / max(1, args.pauses)
    pauser = threading.Thread(target=harness.pauser, args=(args.pauses, args.lease_seconds, every), daemon=True)
    every_cut = args.kills * args.kill_interval / max(1, args.partitions)
    partitioner = threading.Thread(target=harness.partitioner,
                                   args=(args.partitions, args.lease_seconds, every_cut), daemon=True)
    for thread in (human_thread, killer, pauser, partitioner):
        thread.start()
    killer.join()
    chaos_seconds = time.monotonic() - t0
    harness.stop_human.set()
    human_thread.join(300)
    pauser.join(args.lease_seconds * 2 + 10)
    partitioner.join(args.lease_seconds * 2 + 10)
    timeline.add("kills.done", kills=harness.kills_done)
    settle_timeout = args.settle_timeout if args.settle_timeout is not None else 120 + 6 * args.lease_seconds
    settled = settle(harness, args.quiet_passes, settle_timeout)
    timeline.add("settled", **settled)
    forced = stop_runners(harness, loops)
    stray = effect_commands_running(world)
    for proc in stray:
        kill_group(proc.pgid)
    report = build_report(args=args, seed=seed, hosts=hosts, world=world, harness=harness, human=human,
                          requests=list(target.requests), settled=settled, forced=forced,
                          stray_commands=len(stray), chaos_seconds=chaos_seconds,
                          total_seconds=time.monotonic() - t0,
                          expected_jobs=[job_name(n) for n in range(args.jobs)])
    timeline.add("report", ok=report["ok"])
    timeline.close()
    (work / "report-full.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    short = compact(report)
    (work / "report.json").write_text(json.dumps(short, indent=2, default=str) + "\n")
    print(json.dumps(short, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
