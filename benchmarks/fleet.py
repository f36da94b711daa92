"""Fleet-mode benchmarks (SPEC 9.3), reported in docs/benchmarks-fleet.md.

1. Scaling: a driver that spends 100 ms per user, 400 users, 1/2/4/8 `reconciler worker` processes of one
   thread each; users/s from the first submit to the last outcome (CeleryExecutor, as the engine uses it).
   Target: 4 workers >= 3x one worker.
2. Overhead: a no-op driver, 10,000 users: whole `reconciler reconcile` passes with the thread pool and with
   `--executor celery` (4 workers x 4 threads), plus the fleet alone (executor level).

The two drivers are a real plugin distribution (entry-point group `reconciler.drivers`) written to a temp
folder and put on PYTHONPATH, as `pip install --target` would. A real redis-server (appendfsync always).

    python benchmarks/fleet.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.core.records import new_build_id  # noqa: E402
from reconciler.core.timeutil import utcnow  # noqa: E402
from reconciler.run.executors import UserTask  # noqa: E402
from tests.support.fleet import Fleet, RedisServer, block, fleet_repo, job_yaml  # noqa: E402

PLUGIN = '''
import time
from reconciler.drivers.base import Driver, Outcome

class SleepDriver(Driver):
    """Spends `seconds` per user (a remote call's latency), absorbs a second run."""
    idempotent_apply = True
    def plan(self, request):
        return Outcome("PLANNED")
    def apply(self, request):
        time.sleep(float(self.settings.get("seconds", 0.1)))
        return Outcome("DEPLOYED")
    destroy = apply

class NoopDriver(Driver):
    idempotent_apply = True
    def plan(self, request):
        return Outcome("PLANNED")
    def apply(self, request):
        return Outcome("DEPLOYED")
    destroy = apply
'''


def install_plugin(folder: Path) -> Path:
    site = folder / "site"
    (site / "fleet_bench_drivers").mkdir(parents=True)
    (site / "fleet_bench_drivers" / "__init__.py").write_text(PLUGIN)
    info = site / "fleet_bench_drivers-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fleet-bench-drivers\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[reconciler.drivers]\nbenchsleep = fleet_bench_drivers:SleepDriver\n"
                                           "benchnoop = fleet_bench_drivers:NoopDriver\n")
    return site


def with_path(site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def tasks(repo: Path, job: str, users: list[str], driver: str) -> list[UserTask]:
    from tests.conftest import git

    commit = git(repo, "rev-parse", "HEAD").strip()
    build = new_build_id(job, utcnow())
    return [UserTask(job=job, build_id=build, epoch=1, block=0, user=u, desired_commit=commit, server="srv",
                     driver_type=driver, action="APPLY-AUTO", idempotent=True) for u in users]


def through_executor(broker: str, remote: Path, batch: list[UserTask]) -> float:
    """Seconds from the first submit to the last outcome."""
    from reconciler.run.fleet.executor import CeleryExecutor

    done = threading.Event()
    count = [0]
    lock = threading.Lock()

    def on_done(task: UserTask, outcome: Any) -> None:
        assert outcome.status == "DEPLOYED", outcome
        with lock:
            count[0] += 1
            if count[0] == len(batch):
                done.set()

    executor = CeleryExecutor(broker, str(remote))
    try:
        start = time.perf_counter()
        for task in batch:
            executor.submit(task, on_done)
        if not done.wait(1800):
            raise RuntimeError(f"only {count[0]} of {len(batch)} outcomes")
        return time.perf_counter() - start
    finally:
        executor.close(wait=False)


def scaling(work: Path, site: Path, broker: str, users_count: int, counts: list[int]) -> list[dict[str, Any]]:
    users = [f"u{i:04d}" for i in range(users_count)]
    folder = work / "scaling"
    folder.mkdir()
    repo, remote = fleet_repo(folder, {"srv": ({"type": "benchsleep", "seconds": 0.1}, users)},
                              {"scale": job_yaml([block("srv")])})
    rows = []
    for n in counts:
        fleet = Fleet(folder / f"fleet-{n}", broker)
        (folder / f"fleet-{n}").mkdir()
        try:
            for _ in range(n):
                fleet.start(env=with_path(site), concurrency=1, visibility_timeout=3600, heartbeat_ttl=15)
            through_executor(broker, remote, tasks(repo, "scale", users[:n * 2], "benchsleep"))  # warm mirrors
            seconds = through_executor(broker, remote, tasks(repo, "scale", users, "benchsleep"))
        finally:
            fleet.stop_all()
        rows.append({"workers": n, "users": len(users), "seconds": round(seconds, 2),
                     "users_per_second": round(len(users) / seconds, 1)})
        print(f"scaling: {n} worker(s): {len(users)} users in {seconds:.2f} s = {len(users) / seconds:.1f} users/s",
              flush=True)
    return rows


def reconcile_seconds(repo: Path, site: Path, *flags: str) -> float:
    env = {**os.environ, **with_path(site), "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reconciler", "reconcile", "--repo", str(repo), *flags],
                          env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"reconcile {flags} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds


def overhead(work: Path, site: Path, broker: str, users_count: int, workers: int) -> dict[str, Any]:
    users = [f"u{i:05d}" for i in range(users_count)]
    folder = work / "overhead"
    folder.mkdir()
    result: dict[str, Any] = {"users": users_count}
    thread_root = folder / "thread"
    thread_root.mkdir()
    repo, _ = fleet_repo(thread_root, {"srv": ({"type": "benchnoop"}, users)}, {"noop": job_yaml([block("srv")])})
    seconds = reconcile_seconds(repo, site, "--concurrency", "16")
    result["thread_pass"] = {"seconds": round(seconds, 2), "users_per_second": round(users_count / seconds, 1)}
    print(f"overhead: thread pool pass: {users_count} users in {seconds:.2f} s", flush=True)
    fleet_root = folder / "fleet"
    fleet_root.mkdir()
    repo, remote = fleet_repo(fleet_root, {"srv": ({"type": "benchnoop"}, users)}, {"noop": job_yaml([block("srv")])})
    fleet = Fleet(fleet_root / "workers", broker)
    (fleet_root / "workers").mkdir()
    try:
        for _ in range(workers):
            fleet.start(env=with_path(site), concurrency=4, visibility_timeout=3600, heartbeat_ttl=15)
        seconds = through_executor(broker, remote, tasks(repo, "noop", users, "benchnoop"))
        result["fleet_executor"] = {"seconds": round(seconds, 2), "users_per_second": round(users_count / seconds, 1)}
        print(f"overhead: fleet executor alone: {users_count} users in {seconds:.2f} s", flush=True)
        try:
            seconds = reconcile_seconds(repo, site, "--executor", "celery", "--broker", broker, "--concurrency", "256")
            result["fleet_pass"] = {"seconds": round(seconds, 2), "users_per_second": round(users_count / seconds, 1)}
            print(f"overhead: fleet pass: {users_count} users in {seconds:.2f} s", flush=True)
        except RuntimeError as exc:  # an engine without the celery executor wired in
            result["fleet_pass"] = {"error": str(exc)[:300]}
    finally:
        fleet.stop_all()
    result["workers"] = workers
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 users for scaling, 1,000 for overhead")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = Path(tmp)
        site = install_plugin(work)
        sys.path.insert(0, str(site))
        server = RedisServer(work / "redis").start()
        try:
            figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
            figures["scaling"] = scaling(work, site, server.url, 100 if args.quick else 400, [1, 2, 4, 8])
            one = figures["scaling"][0]["users_per_second"]
            four = next(r for r in figures["scaling"] if r["workers"] == 4)["users_per_second"]
            figures["scaling_ratio_4_to_1"] = round(four / one, 2)
            print(f"scaling: 4 workers / 1 worker = {four / one:.2f}x (target >= 3x)", flush=True)
            if not args.skip_overhead:
                figures["overhead"] = overhead(work, site, server.url, 1000 if args.quick else 10000, 4)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
