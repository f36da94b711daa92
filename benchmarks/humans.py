"""Humans are never starved (SPEC 9.2): 8 reconcilers work on one remote while a human pushes.

One bare remote; N clones each loop `reconciler reconcile --remote origin` (real processes); a human
clone keeps adding jobs (each with users deployed by a command that takes a moment, so builds checkpoint,
write started markers and renew leases while the human pushes) with `git pull --rebase && git push`,
counting attempts per successful push. Prints attempts per push (max, mean, histogram) and exits 1 when
a push needed more than `--max-attempts` (SPEC: 3).

    python benchmarks/humans.py --clones 8 --seconds 120 --work /tmp/humans
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HUMAN = {"GIT_AUTHOR_NAME": "Human", "GIT_AUTHOR_EMAIL": "h@example.com", "GIT_COMMITTER_NAME": "Human",
         "GIT_COMMITTER_EMAIL": "h@example.com", "GIT_CONFIG_NOSYSTEM": "1"}
SERVER = """\
environment: bench
organization: bench
driver:
  type: command
  commands: {{APPLY-AUTO: [sh, -c, "sleep {pause}"], PLAN: ["true"], DESTROY: ["true"]}}
users: [{{id: u1}}, {{id: u2}}, {{id: u3}}, {{id: u4}}]
"""
DEFINITION = "module_type: bench/cmd\n"
JOB = "blocks:\n  - definition: app-{target}\n    server: srv\n    users: all\n"


TARGETS = 10


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **HUMAN}, capture_output=True, text=True,
                          check=check)


def setup(work: Path, clones: int, pause: float) -> tuple[Path, list[Path], Path]:
    if work.exists():
        shutil.rmtree(work)
    src = work / "src"
    (src / "servers").mkdir(parents=True)
    (src / "definitions").mkdir()
    (src / "jobs").mkdir()
    git(work, "init", "-q", "-b", "main", str(src))
    (src / "servers" / "srv.yaml").write_text(SERVER.format(pause=pause))
    for target in range(TARGETS):  # jobs deploy one of several definitions, as teams do
        (src / "definitions" / f"app-{target}.yaml").write_text(DEFINITION)
    (src / "reconciler.yaml").write_text("concurrency: 2\njob_concurrency: 2\n")
    (src / "jobs" / "seed-000.yaml").write_text(JOB.format(target=0))
    git(src, "add", "-A")
    git(src, "commit", "-qm", "seed")
    bare = work / "remote.git"
    git(work, "clone", "-q", "--bare", str(src), str(bare))
    paths = []
    for n in range(clones):
        clone = work / f"c{n}"
        git(work, "clone", "-q", str(bare), str(clone))
        paths.append(clone)
    human = work / "human"
    git(work, "clone", "-q", str(bare), str(human))
    return bare, paths, human


def reconcile_loop(clone: Path, stop: threading.Event, codes: Counter[int]) -> None:
    while not stop.is_set():
        proc = subprocess.run([sys.executable, "-m", "reconciler", "reconcile", "--remote", "origin"], cwd=clone,
                              capture_output=True, text=True, check=False)
        codes[proc.returncode] += 1
        if proc.returncode not in (0, 1):
            time.sleep(0.5)


def human_loop(human: Path, stop: threading.Event, attempts: list[int], rng: random.Random) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        for k in range(2):
            (human / "jobs" / f"h-{n:04d}-{k}.yaml").write_text(JOB.format(target=rng.randrange(TARGETS)))
        git(human, "add", "-A")
        git(human, "commit", "-qm", f"human: jobs {n}")
        tries = 0
        while True:
            tries += 1
            pulled = git(human, "pull", "-q", "--rebase", "origin", "main", check=False)
            if pulled.returncode == 0 and git(human, "push", "-q", "origin", "HEAD:main", check=False).returncode == 0:
                attempts.append(tries)
                break
            if tries >= 50:
                attempts.append(tries)
                git(human, "rebase", "--abort", check=False)
                break
        stop.wait(rng.uniform(0.3, 1.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clones", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds the command takes per user")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/reconciler-humans"))
    args = parser.parse_args(argv)
    bare, clones, human = setup(args.work, args.clones, args.pause)
    stop, human_stop = threading.Event(), threading.Event()
    codes: Counter[int] = Counter()
    attempts: list[int] = []
    threads = [threading.Thread(target=reconcile_loop, args=(c, stop, codes), daemon=True) for c in clones]
    threads.append(threading.Thread(target=human_loop, args=(human, human_stop, attempts, random.Random(args.seed)),
                                    daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    human_stop.set()
    stop.set()
    for thread in threads:
        thread.join(300)
    status_commits = int(git(bare, "rev-list", "--count", "--grep=^Reconciler-Build:", "main").stdout.strip())
    report = {"clones": args.clones, "seconds": args.seconds, "human_pushes": len(attempts),
              "attempts_max": max(attempts, default=0), "attempts_mean": round(statistics.mean(attempts), 2)
              if attempts else 0, "histogram": dict(sorted(Counter(attempts).items())),
              "status_commits": status_commits, "pass_exit_codes": dict(codes)}
    print(json.dumps(report, indent=1))
    return 0 if attempts and max(attempts) <= args.max_attempts else 1


if __name__ == "__main__":
    raise SystemExit(main())
