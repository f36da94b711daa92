"""First reconcile of unexecuted jobs, against check-jsonschema on the same job files (issue 13).

For each size (default 100, 1,000, 10,000 jobs of 1-3 blocks to 1-3 users, local driver): a fresh
copy of a generated repo, then a whole `reconciler reconcile` process, timed (wall, CPU of it and its
git children, peak RSS), with the number of status commits; the same with a bare remote
(`--remote origin`: commits and pushes per job); and check-jsonschema validating the same job files
with the shipped job schema, in the same run. Plus one block of N users with the command driver
(`true`): commits and users per second.

    python benchmarks/first_pass.py --work /dev/shm/fp            # tmpfs: the reconciler's own cost
    python benchmarks/first_pass.py --work /var/tmp/fp --sizes 1000  # this machine's disk
Prints a Markdown table; `--out FILE` writes it too.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bytecode import compile_package  # noqa: E402
from generate import generate  # noqa: E402

COMMAND_SERVER = """\
environment: bench
organization: bench
driver:
  type: command
  commands: {{APPLY-AUTO: ["true"], PLAN: ["true"], DESTROY: ["true"]}}
users:
{users}
"""
COMMAND_JOB = """\
blocks:
  - definition: dash-000
    server: cmd
    users: all
    content_tokens: {title: Everyone}
"""


def timed(argv: list[str], cwd: Path) -> tuple[float, float, float, int]:
    """(wall, CPU seconds of the process and its children, peak RSS MiB, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def count_commits(repo: Path, since: str) -> int:
    out = subprocess.run(["git", "rev-list", "--count", f"{since}..HEAD"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip())


def template(work: Path, jobs: int) -> Path:
    path = work / f"template-{jobs}"
    if not path.exists():
        generate(path, jobs=jobs, executed=0.0, users=3, runnable=True)
    return path


def fresh_copy(src: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)
    return dest


def with_remote(repo: Path, work: Path) -> Path:
    bare = work / "origin.git"
    if bare.exists():
        shutil.rmtree(bare)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=repo, check=True)
    subprocess.run(["git", "fetch", "-q", "origin"], cwd=repo, check=True)
    subprocess.run(["git", "branch", "-q", "--set-upstream-to=origin/main"], cwd=repo, check=True)
    return bare


def first_pass(work: Path, jobs: int, runs: int, remote: bool) -> dict[str, float]:
    src = template(work, jobs)
    walls, cpus, rss, commits, pushes = [], [], [], [], []
    for _ in range(runs):
        repo = fresh_copy(src, work / "run")
        if remote:
            bare = with_remote(repo, work)
            pushed_before = int(subprocess.run(["git", "rev-list", "--count", "main"], cwd=bare, capture_output=True,
                                               text=True, check=True).stdout)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        argv = [sys.executable, "-m", "reconciler", "reconcile"] + (["--remote", "origin"] if remote else [])
        wall, cpu, peak, code = timed(argv, repo)
        if code not in (0, 1):
            raise SystemExit(f"reconcile exited {code} on {jobs} jobs")
        walls.append(wall)
        cpus.append(cpu)
        rss.append(peak)
        commits.append(count_commits(repo, head))
        if remote:
            after = int(subprocess.run(["git", "rev-list", "--count", "main"], cwd=bare, capture_output=True,
                                       text=True, check=True).stdout)
            pushes.append(after - pushed_before)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus), "rss": statistics.median(rss),
            "commits": statistics.median(commits), "remote_commits": statistics.median(pushes) if pushes else 0}


def peer(work: Path, jobs: int, runs: int) -> float:
    src = template(work, jobs)
    files = sorted(str(p) for p in (src / "jobs").glob("*.yaml"))
    exe = shutil.which("check-jsonschema") or "check-jsonschema"
    walls = []
    for _ in range(runs):
        wall, _, _, code = timed([exe, "--schemafile", str(ROOT / "schemas" / "job.schema.json"), *files], src)
        if code != 0:
            raise SystemExit(f"check-jsonschema exited {code}")
        walls.append(wall)
    return statistics.median(walls)


def command_block(work: Path, users: int) -> dict[str, float]:
    repo = work / f"cmd-{users}"
    if repo.exists():
        shutil.rmtree(repo)
    generate(repo, jobs=0, users=3)
    ids = "\n".join(f"  - id: user{u:05d}" for u in range(users))
    (repo / "servers" / "cmd.yaml").write_text(COMMAND_SERVER.format(users=ids), "utf-8")
    (repo / "jobs").mkdir(exist_ok=True)
    (repo / "jobs" / "everyone.yaml").write_text(COMMAND_JOB, "utf-8")
    (repo / "reconciler.yaml").write_text("concurrency: 16\n", "utf-8")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "big"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    wall, cpu, peak, code = timed([sys.executable, "-m", "reconciler", "reconcile"], repo)
    if code != 0:
        raise SystemExit(f"the command block exited {code}")
    return {"wall": wall, "cpu": cpu, "rss": peak, "commits": count_commits(repo, head), "users_per_s": users / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work", type=Path, default=Path("/dev/shm/reconciler-first-pass"))
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--command-users", type=int, default=10000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    compile_package()  # as a wheel's install does: no process below compiles the package from source
    args.work.mkdir(parents=True, exist_ok=True)
    lines = ["| jobs | check-jsonschema | reconcile (wall / CPU / RSS) | ratio | commits | with a remote (wall, "
             "commits pushed) |", "|---:|---:|---|---:|---:|---|"]
    for jobs in [int(s) for s in args.sizes.split(",")]:
        other = peer(args.work, jobs, args.runs)
        local = first_pass(args.work, jobs, args.runs, remote=False)
        far = first_pass(args.work, jobs, 1, remote=True)
        lines.append(f"| {jobs:,} | {other:.2f} s | {local['wall']:.2f} s / {local['cpu']:.2f} s / "
                     f"{local['rss']:.0f} MiB | {local['wall'] / other:.2f}x | {local['commits']:.0f} "
                     f"({local['commits'] / jobs:.3f}/job) | {far['wall']:.2f} s, {far['remote_commits']:.0f} "
                     f"({far['remote_commits'] / jobs:.3f}/job) |")
        print(lines[-1], flush=True)
    if args.command_users:
        block = command_block(args.work, args.command_users)
        lines += ["", f"One block of {args.command_users:,} users, command driver `true`, concurrency 16: "
                      f"{block['wall']:.1f} s wall, {block['cpu']:.1f} s CPU, {block['commits']:.0f} commits, "
                      f"{block['users_per_s']:.0f} users/s, {block['rss']:.0f} MiB"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
