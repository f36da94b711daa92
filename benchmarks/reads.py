"""Benchmark the reads: `status`, and `serve`'s page and API, against the raw git floor.

    python benchmarks/reads.py                      # 100, 1,000 and 10,000 jobs; writes docs/benchmarks-reads.md
    python benchmarks/reads.py --sizes 100,1000 --runs 3 --out -

Repos come from benchmarks/generate.py (90% of the jobs executed), shared with benchmarks/run.py.
`status` figures are whole processes (Python start-up included), warm: the caches under
`.git/reconciler/` exist (a cold run is shown once). `serve` figures are request times measured by
a client on 127.0.0.1 with the branch tip unchanged (the state is loaded by a first request that
is not counted); the server's peak RSS is read from /proc after every request was made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from run import NOTES, repeat, repo_for  # noqa: E402

FLOOR = ("git ls-tree -r --format='%(objectname)' HEAD -- reconciler.yaml servers definitions jobs status "
         "| git cat-file --batch >/dev/null")
REQUESTS = {"GET / (first page)": "/", "GET /api/jobs?page=1": "/api/jobs?page=1", "GET /api/jobs (full)": "/api/jobs"}


@dataclass
class Figure:
    jobs: int
    what: str
    command: str
    seconds: float
    rss_mib: float | None = None
    note: str = ""


def bench_status(repo: Path, jobs: int, runs: int) -> list[Figure]:
    me = [sys.executable, "-m", "reconciler"]
    cache = str(repo / ".git" / "reconciler")
    out = []
    floor = repeat(runs, ["sh", "-c", FLOOR], repo)
    out.append(Figure(jobs, "raw git floor", "git ls-tree -r HEAD | git cat-file --batch",
                      statistics.median(s.wall for s in floor), statistics.median(s.rss_mib for s in floor)))
    cold = repeat(1, [*me, "status", "--format", "json"], repo, before=["rm", "-rf", cache])[0]
    out.append(Figure(jobs, "status --format json, cold", "rm -rf .git/reconciler; reconciler status --format json",
                      cold.wall, cold.rss_mib, "once"))
    for what, argv in (("status --format json", ["status", "--format", "json"]), ("status", ["status"])):
        samples = repeat(runs, [*me, *argv], repo)
        out.append(Figure(jobs, what, f"reconciler {' '.join(argv)}", statistics.median(s.wall for s in samples),
                          statistics.median(s.rss_mib for s in samples)))
    return out


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_serve(repo: Path, jobs: int, runs: int) -> list[Figure]:
    import httpx

    log = repo / ".git" / "bench-serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "serve", "--port", "0"], cwd=repo, stdout=sink,
                                stderr=sink, env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"})
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            for line in log.read_text("utf-8").splitlines():
                if '"serve.started"' in line:
                    url = json.loads(line)["url"].rstrip("/")
            time.sleep(0.05)
        if url is None:
            raise SystemExit(f"serve did not start: {log.read_text('utf-8')[-2000:]}")
        out = []
        with httpx.Client(base_url=url, timeout=600) as client:
            start = time.perf_counter()
            client.get("/").raise_for_status()  # loads the state at the tip: not counted
            out.append(Figure(jobs, "serve: first GET / (loads the tip)", "GET /", time.perf_counter() - start,
                              note="once"))
            for what, path in REQUESTS.items():
                times = []
                size = 0
                for _ in range(runs):
                    start = time.perf_counter()
                    answer = client.get(path)
                    times.append(time.perf_counter() - start)
                    answer.raise_for_status()
                    size = len(answer.content)
                out.append(Figure(jobs, f"serve: {what}", path, statistics.median(times),
                                  note=f"{size / 1024:,.0f} KiB, max {max(times):.3f} s"))
        rss = peak_rss_mib(proc.pid)
        out.append(Figure(jobs, "serve: peak RSS after the requests", "/proc/PID/status VmHWM", float("nan"), rss))
        return out
    finally:
        proc.terminate()
        proc.wait(60)


def targets(figures: list[Figure], small: int, top: int) -> list[str]:
    by = {(f.jobs, f.what): f for f in figures}
    out = []

    def line(name: str, ok: bool, detail: str) -> None:
        out.append(f"| {name} | {detail} | {'met' if ok else 'MISSED'} |")

    floor, status = by[(top, "raw git floor")], by[(top, "status --format json")]
    line(f"status --format json at {top:,} jobs <= 3x the raw git floor", status.seconds <= 3 * floor.seconds,
         f"{status.seconds:.2f} s vs {floor.seconds:.3f} s ({status.seconds / floor.seconds:.1f}x)")
    for what in ("serve: GET / (first page)", "serve: GET /api/jobs?page=1"):
        big, little = by[(top, what)], by[(small, what)]
        line(f"{what.removeprefix('serve: ')} at {top:,} jobs <= 1.5x at {small:,}",
             big.seconds <= 1.5 * little.seconds,
             f"{big.seconds * 1000:.1f} ms vs {little.seconds * 1000:.1f} ms ({big.seconds / little.seconds:.2f}x)")
    full = by[(top, "serve: GET /api/jobs (full)")]
    line(f"full GET /api/jobs at {top:,} jobs <= 3x status --format json", full.seconds <= 3 * status.seconds,
         f"{full.seconds:.2f} s vs {status.seconds:.2f} s ({full.seconds / status.seconds:.2f}x)")
    rss = by[(top, "serve: peak RSS after the requests")].rss_mib or 0.0
    line(f"serve at {top:,} jobs < 300 MiB", rss < 300, f"{rss:.0f} MiB")
    return out


def render(figures: list[Figure], runs: int, sizes: list[int], argv: list[str]) -> str:
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    rows = []
    for f in figures:
        seconds = "" if f.seconds != f.seconds else f"{f.seconds:.3f}"  # NaN: a memory-only figure
        rss = f"{f.rss_mib:.0f}" if f.rss_mib is not None else ""
        rows.append(f"| {f.jobs:,} | {f.what} | `{f.command.replace('|', chr(92) + '|')}` | {seconds} | {rss} "
                    f"| {f.note} |")
    return "\n".join([
        "# Benchmarks: reads (`status`, the page, the API)", "",
        "Generated by `benchmarks/reads.py`; see [performance.md](performance.md) and [benchmarks.md](benchmarks.md).",
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {machine} with "
        f"`python benchmarks/reads.py {' '.join(argv)}`; median of {runs} runs each.", "",
        "| jobs | what | command | median (s) | peak RSS (MiB) | note |", "|---:|---|---|---:|---:|---|", *rows, "",
        f"Targets ({min(sizes):,} and {max(sizes):,} jobs, 90% executed):", "",
        "| target | measured | verdict |", "|---|---|---|", *targets(figures, min(sizes), max(sizes)), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated job counts")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "reconciler-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-reads.md",
                        help="where to write the table ('-' for stdout only)")
    args = parser.parse_args(argv)
    compile_package()  # as a wheel's install does: no process below compiles the package from source
    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    for jobs in sizes:
        repo = repo_for(args.work, jobs)
        subprocess.run([sys.executable, "-m", "reconciler", "status", "--format", "json"], cwd=repo, check=True,
                       capture_output=True)  # warm the caches
        figures += bench_status(repo, jobs, args.runs)
        figures += bench_serve(repo, jobs, args.runs)
        print(f"{jobs:,} jobs done", file=sys.stderr, flush=True)
    text = render(figures, args.runs, sizes, argv if argv is not None else sys.argv[1:])
    print(text)
    if str(args.out) != "-":
        old = args.out.read_text("utf-8") if args.out.is_file() else ""
        if NOTES in old:  # the hand-written analysis below the marker survives a re-run
            text += "\n" + NOTES + old.split(NOTES, 1)[1]
        args.out.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
