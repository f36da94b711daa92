"""Benchmark the reconciler against its peers on generated deployment repos; print and save one table.

Every figure is a whole-process median over several runs: wall time, and the peak resident memory
of the child process tree (from `wait4`). Peers run in the same session on the same files:
`check-jsonschema` validating the job files with our job schema, and raw git reading the same
files (`git ls-tree -r` plus `git cat-file --batch`), which is the floor.

    python benchmarks/run.py             # 100, 1,000 and 10,000 jobs; writes docs/benchmarks.md
    python benchmarks/run.py --quick     # 100 and 1,000 jobs, 3 runs: a smoke test in a few minutes
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bytecode import compile_package  # noqa: E402
from generate import generate  # noqa: E402

SCHEMA = ROOT / "schemas" / "job.schema.json"
NOTES = "<!-- notes: kept when the table is regenerated -->"
PR_JOB = """\
description: A new rollout proposed in a pull request
blocks:
  - definition: dash-000
    server: srv-00
    users: [user00000, user00001]
    content_tokens: {title: Proposed}
"""


@dataclass
class Sample:
    wall: float
    rss_mib: float
    code: int


@dataclass
class Row:
    jobs: int
    what: str
    command: str
    samples: list[Sample]
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def rss(self) -> float:
        return statistics.median(s.rss_mib for s in self.samples)


def measure(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Sample:
    """Run one child to completion: wall time and the peak RSS of it and the children it waited for."""
    full_env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Sample(wall, usage.ru_maxrss / 1024, proc.returncode)


def repeat(runs: int, argv: list[str], cwd: Path, before: list[str] | None = None, expect: tuple[int, ...] = (0,),
           ) -> list[Sample]:
    samples = []
    for _ in range(runs):
        if before:
            subprocess.run(before, cwd=cwd, check=True)
        sample = measure(argv, cwd)
        if sample.code not in expect:
            raise SystemExit(f"{' '.join(argv[:3])} ... in {cwd} exited {sample.code}")
        samples.append(sample)
    return samples


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **(env or {})}, input=input,
                          capture_output=True, check=True).stdout.decode().strip()


def repo_for(work: Path, jobs: int, deploy_users: int = 0) -> Path:
    """A generated repo, reused while the generator is unchanged (generation of 10,000 jobs takes a while)."""
    tag = hashlib.sha256((HERE / "generate.py").read_bytes()).hexdigest()[:8]
    name = f"users-{deploy_users}-{tag}" if deploy_users else f"jobs-{jobs}-{tag}"
    path = work / name
    if not (path / ".git" / "bench-complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        print(f"generating {path} ...", file=sys.stderr, flush=True)
        generate(path, jobs=jobs, deploy_users=deploy_users)
        (path / ".git" / "bench-complete").write_text("ok\n")
    return path


def pr_branch(repo: Path) -> str:
    """A branch `bench-pr` = HEAD plus one new job file, built with plumbing (the working tree is untouched)."""
    index = repo / ".git" / "bench-pr-index"
    env = {"GIT_INDEX_FILE": str(index)}
    _git(repo, "read-tree", "HEAD", env=env)
    blob = _git(repo, "hash-object", "-w", "--stdin", input=PR_JOB.encode())
    _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},jobs/bench-proposed.yaml", env=env)
    tree = _git(repo, "write-tree", env=env)
    index.unlink()
    who = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "Dev",
           "GIT_COMMITTER_EMAIL": "dev@example.com"}
    commit = _git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "Propose a job", env=who)
    _git(repo, "update-ref", "refs/heads/bench-pr", commit)
    return "bench-pr"


def has_command(name: str) -> bool:
    return (ROOT / "reconciler" / "commands" / f"{name}.py").is_file()


def bench_size(work: Path, jobs: int, runs: int) -> list[Row]:
    repo = repo_for(work, jobs)
    me = [sys.executable, "-m", "reconciler"]
    job_files = sorted(str(p.relative_to(repo)) for p in (repo / "jobs").glob("*.yaml"))
    floor = ("git ls-tree -r --format='%(objectname)' HEAD -- reconciler.yaml servers definitions jobs status "
             "| git cat-file --batch >/dev/null")
    cache = str(repo / ".git" / "reconciler")
    rows = [
        Row(jobs, "raw git floor", "git ls-tree -r HEAD | git cat-file --batch",
            repeat(runs, ["sh", "-c", floor], repo)),
        Row(jobs, "check-jsonschema (peer)", "check-jsonschema --schemafile schemas/job.schema.json jobs/*.yaml",
            repeat(runs, ["check-jsonschema", "--schemafile", str(SCHEMA), *job_files], repo)),
        Row(jobs, "reconciler validate, cold", "reconciler validate",
            repeat(runs, [*me, "validate"], repo, before=["rm", "-rf", cache])),
    ]
    subprocess.run([*me, "reconcile"], cwd=repo, check=True, capture_output=True)  # warm the cache
    rows.append(Row(jobs, "reconciler reconcile, no-op, warm", "reconciler reconcile",
                    repeat(runs, [*me, "reconcile"], repo)))
    rows.append(Row(jobs, "reconciler reconcile, no-op, cold", "rm -rf .git/reconciler; reconciler reconcile",
                    repeat(max(1, runs // 2), [*me, "reconcile"], repo, before=["rm", "-rf", cache])))
    if has_command("check"):
        branch = pr_branch(repo)
        subprocess.run([*me, "reconcile"], cwd=repo, check=True, capture_output=True)
        rows.append(Row(jobs, "reconciler check, PR adds 1 job", f"reconciler check --base main --head {branch}",
                        repeat(runs, [*me, "check", "--base", "main", "--head", branch], repo)))
    return rows


def bench_deploy(work: Path, users: int, runs: int, place: Path | None = None) -> Row:
    """One job, one block, `users` users on the local driver, each run on a fresh copy of the repo.

    `place`: where the copies (and so the deployment targets) live, e.g. a tmpfs, to tell the
    reconciler's own cost from the disk's.
    """
    source = repo_for(work, 0, deploy_users=users)
    samples = []
    where = place or work
    for i in range(runs):
        copy = where / f"deploy-run-{i}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy, symlinks=True)
        samples.append(repeat(1, [sys.executable, "-m", "reconciler", "reconcile"], copy)[0])
        shutil.rmtree(copy, ignore_errors=True)
    wall = statistics.median(s.wall for s in samples)
    label = f"deploy 1 block to {users:,} users" + (" (repo and targets on tmpfs)" if place else "")
    return Row(users, label, "reconciler reconcile (local driver, ledger commits)",
               samples, note=f"{users / wall:,.0f} users/s")


def targets(rows: list[Row], top: int) -> list[str]:
    """The issue's targets, judged on the largest size."""
    by = {(r.jobs, r.what): r for r in rows}
    out = []

    def line(name: str, ok: bool, detail: str) -> None:
        out.append(f"| {name} | {detail} | {'met' if ok else 'MISSED'} |")

    floor = by[(top, "raw git floor")]
    peer = by[(top, "check-jsonschema (peer)")]
    cold = by[(top, "reconciler validate, cold")]
    warm = by[(top, "reconciler reconcile, no-op, warm")]
    line("cold validate <= 1/10 of check-jsonschema", cold.wall <= peer.wall / 10,
         f"{cold.wall:.2f} s vs {peer.wall:.2f} s (ratio 1/{peer.wall / cold.wall:.1f})")
    line("no-op reconcile < 0.5 s", warm.wall < 0.5, f"{warm.wall:.2f} s")
    line("no-op reconcile <= 6x raw git", warm.wall <= 6 * floor.wall,
         f"{warm.wall:.2f} s vs {floor.wall:.3f} s ({warm.wall / floor.wall:.1f}x)")
    check = by.get((top, "reconciler check, PR adds 1 job"))
    if check is not None:
        line("check of a PR adding one job < 1 s", check.wall < 1, f"{check.wall:.2f} s")
    deploy = [r for r in rows if r.what.startswith("deploy")]
    for row in deploy:
        rate = row.jobs / row.wall
        where = " (tmpfs)" if "tmpfs" in row.what else " (disk)"
        line(f"deploy to {row.jobs:,} users >= 1,000 users/s{where}", rate >= 1000, f"{rate:,.0f} users/s")
    ours = [r for r in rows if r.jobs == top and r.what.startswith("reconciler")] + deploy
    worst = max(ours, key=lambda r: r.rss)
    line("peak memory < 300 MiB", worst.rss < 300, f"largest: {worst.rss:.0f} MiB ({worst.what})")
    return out


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(rows: list[Row], runs: int, top: int, argv: list[str]) -> str:
    head = ["| jobs | what | command | median wall (s) | peak RSS (MiB) | note |",
            "|---:|---|---|---:|---:|---|"]
    body = [f"| {r.jobs:,} | {r.what} | `{cell(r.command)}` | {r.wall:.3f} | {r.rss:.0f} | {r.note} |" for r in rows]
    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
               f"Python {platform.python_version()}")
    lines = [
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {machine} with "
        f"`python benchmarks/run.py {' '.join(argv)}`; median of {runs} runs each.",
        "",
        *head, *body, "",
        f"Targets (on {top:,} jobs, {round(top * 0.9):,} executed):", "",
        "| target | measured | verdict |", "|---|---|---|", *targets(rows, top),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the reconciler against check-jsonschema and raw git.")
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 jobs, 3 runs, 1,000 users")
    parser.add_argument("--sizes", help="comma-separated job counts (default 100,1000,10000)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5; --quick 3)")
    parser.add_argument("--deploy-users", type=int, help="users of the deploy benchmark (default 10000)")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "reconciler-bench",
                        help="where generated repos are kept and reused")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="where to write the table (default docs/benchmarks.md; '-' for stdout only)")
    args = parser.parse_args(argv)
    compile_package()  # as a wheel's install does: no process below compiles the package from source
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([100, 1000] if args.quick
                                                                       else [100, 1000, 10000])
    runs = args.runs or (3 if args.quick else 5)
    users = args.deploy_users or (1000 if args.quick else 10000)
    if shutil.which("check-jsonschema") is None:
        raise SystemExit("check-jsonschema is not installed: pip install check-jsonschema")
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for size in sizes:
        rows += bench_size(args.work, size, runs)
    rows.append(bench_deploy(args.work, users, runs))
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        rows.append(bench_deploy(args.work, users, runs, place=shm / "reconciler-bench"))
    table = render(rows, runs, max(sizes), argv if argv is not None else sys.argv[1:])
    print(table)
    if str(args.out) != "-":
        text = "# Benchmarks\n\nGenerated by `benchmarks/run.py`; see [performance.md](performance.md).\n\n" + table
        old = args.out.read_text("utf-8") if args.out.is_file() else ""
        if NOTES in old:  # the hand-written analysis below the marker survives a re-run
            text += "\n" + NOTES + old.split(NOTES, 1)[1]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
