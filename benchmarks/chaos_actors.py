"""The actors of the chaos harness: reconciler clones looping passes, a killer, a pauser and a human.

Every actor writes what it does to one timeline (JSON lines), so a broken guarantee can be traced back
to the kills and passes around it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.chaos_world import (
    HUMAN_ENV,
    World,
    git,
    is_effect_command,
    is_git,
    is_git_push,
    job_name,
    job_yaml,
    kill_group,
    process_tree,
    start_pass,
    write,
)


class Timeline:
    def __init__(self, path: Path) -> None:
        self.path, self.lock, self.t0 = path, threading.Lock(), time.monotonic()
        self.handle = path.open("a", encoding="utf-8")

    def add(self, event: str, **data: Any) -> None:
        line = json.dumps({"t": round(time.monotonic() - self.t0, 3), "wall": time.time(), "event": event, **data})
        with self.lock:
            self.handle.write(line + "\n")
            self.handle.flush()

    def close(self) -> None:
        with self.lock:
            self.handle.close()


@dataclass
class PassResult:
    clone: str
    pid: int
    started: float  # monotonic
    ended: float
    rc: int
    killed: bool
    stderr_tail: str


@dataclass
class Runner:
    """One clone and its loop of `reconcile --remote origin` passes."""

    name: str
    path: Path
    host: str | None
    log: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    killed_pids: set[int] = field(default_factory=set)
    results: list[PassResult] = field(default_factory=list)

    def live_pid(self) -> int | None:
        """The running pass's pid (its process group id), or None; call with `lock` held."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid


STALE_LOCK = re.compile(r"(/[^\s'\"]+\.lock)\b")


class Harness:
    """Shared state of one run: the world, the runners, the stop signals and the counters."""

    def __init__(self, world: World, timeline: Timeline, rng: random.Random, pass_pause: float) -> None:
        self.world, self.timeline, self.rng, self.pass_pause = world, timeline, rng, pass_pause
        self.runners: list[Runner] = []
        self.stop_passes = threading.Event()
        self.stop_human = threading.Event()
        self.kills_done = 0
        self.kills_by_aim: Counter[str] = Counter()
        self.operator_fixes: list[str] = []
        self.human_attempts: list[int] = []
        self.human_gave_up = 0
        self.jobs_added: list[str] = []
        self.threads: list[threading.Thread] = []

    # -- clones --------------------------------------------------------------------------------------
    def loop(self, runner: Runner) -> None:
        while not self.stop_passes.is_set():
            offset = runner.log.stat().st_size if runner.log.exists() else 0
            with runner.lock:
                if self.stop_passes.is_set():
                    break
                runner.proc = start_pass(self.world, runner.path, runner.host, log=runner.log)
                pid, started = runner.proc.pid, time.monotonic()
            self.timeline.add("pass.start", clone=runner.name, pid=pid, host=runner.host)
            while True:
                with runner.lock:
                    rc = runner.proc.poll()
                if rc is not None:
                    break
                time.sleep(0.02)
            ended = time.monotonic()
            with runner.log.open("rb") as handle:
                handle.seek(offset)
                tail = handle.read().decode("utf-8", "replace")[-4000:]
            killed = pid in runner.killed_pids
            runner.results.append(PassResult(runner.name, pid, started, ended, rc, killed, tail))
            self.timeline.add("pass.end", clone=runner.name, pid=pid, rc=rc, killed=killed,
                              seconds=round(ended - started, 3))
            if rc == 2 and not killed:
                self.operator(runner, tail)
            self.stop_passes.wait(self.rng.uniform(0.05, self.pass_pause))

    def operator(self, runner: Runner, stderr: str) -> None:
        """What an operator does with an exit 2 naming a stale git lock: remove it, if it really is stale
        (older than 10 s: git holds its locks for milliseconds; a younger one may be live)."""
        for match in STALE_LOCK.finditer(stderr):
            path = Path(match.group(1))
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue
            if age > 10 and (str(path).startswith(str(self.world.work))):
                path.unlink(missing_ok=True)
                self.operator_fixes.append(f"{runner.name}: removed {path} (age {age:.0f} s)")
                self.timeline.add("operator.removed-lock", clone=runner.name, path=str(path))

    def live(self) -> list[tuple[Runner, int]]:
        out = []
        for runner in self.runners:
            with runner.lock:
                pid = runner.live_pid()
            if pid is not None and not runner.paused:
                out.append((runner, pid))
        return out

    def kill(self, runner: Runner, pid: int, aim: str, detail: str = "", also: tuple[int, ...] = ()) -> bool:
        with runner.lock:
            if runner.live_pid() != pid or pid in runner.killed_pids:  # once: a killed pass may not be reaped yet
                return False
            runner.killed_pids.add(pid)
            kill_group(pid)
        for pgid in also:  # the driver command's own session: the machine went down with it
            kill_group(pgid)
        self.kills_done += 1
        self.kills_by_aim[aim] += 1
        self.timeline.add("kill", clone=runner.name, pid=pid, aim=aim, detail=detail, also=list(also))
        return True

    # -- the killer ----------------------------------------------------------------------------------
    def hunt(self, aim: str, timeout: float) -> tuple[Runner, int, str, tuple[int, ...]] | None:
        """Poll /proc until a live pass is in a `git push` ("push"), runs a driver command ("driver") or
        any other git command ("git": a commit, fetch, read-tree or update-ref)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_passes.is_set():
            live = {pid: runner for runner, pid in self.live()}
            if live:
                for proc in process_tree(live):
                    # the pass's git children may run in sessions of their own: find them by parent too
                    owner = proc.pgid if proc.pgid in live else proc.ppid if proc.ppid in live else None
                    if aim == "push" and owner is not None and is_git_push(proc):
                        return live[owner], owner, " ".join(proc.argv[:8])[:200], ()
                    if aim == "driver" and proc.ppid in live and is_effect_command(proc, self.world):
                        also = (proc.pgid,) if self.rng.random() < 0.5 else ()
                        return live[proc.ppid], proc.ppid, "effect command running", also
                    if aim == "git" and owner is not None and is_git(proc) and not is_git_push(proc):
                        return live[owner], owner, " ".join(proc.argv[:8])[:200], ()
            time.sleep(0.01)
        return None

    def killer(self, kills: int, interval: float) -> None:
        aims = ["random"] * 4 + ["push"] * 3 + ["driver"] * 2 + ["git"]
        while self.kills_done < kills and not self.stop_passes.is_set():
            time.sleep(self.rng.expovariate(1 / interval))
            aim = self.rng.choice(aims)
            found = self.hunt(aim, timeout=3.0) if aim != "random" else None
            if found is not None:
                runner, pid, detail, also = found
                time.sleep(self.rng.uniform(0, 0.02))  # somewhere inside that push or call
                if self.kill(runner, pid, aim, detail, also):
                    continue
            live = self.live()
            if live:
                runner, pid = self.rng.choice(live)
                self.kill(runner, pid, "random")

    def pauser(self, pauses: int, lease: int, every: float) -> None:
        """SIGSTOP a pass (a frozen VM, a long GC pause) for about one lease, then SIGCONT it."""
        for _ in range(pauses):
            if self.stop_passes.wait(self.rng.uniform(every / 2, every * 1.5)):
                return
            live = self.live()
            if not live:
                continue
            runner, pid = self.rng.choice(live)
            seconds = self.rng.uniform(0.6, 1.6) * lease
            with runner.lock:
                if runner.live_pid() != pid:
                    continue
                runner.paused = True
                kill_group(pid, signal.SIGSTOP)
            self.timeline.add("pause", clone=runner.name, pid=pid, seconds=round(seconds, 1))
            time.sleep(seconds)
            with runner.lock:
                kill_group(pid, signal.SIGCONT)
                runner.paused = False
            self.timeline.add("continue", clone=runner.name, pid=pid)

    def partitioner(self, partitions: int, lease: int, every: float) -> None:
        """Cut one clone off the remote (its `origin` is a symlink, renamed away) for about one lease."""
        for _ in range(partitions):
            if self.stop_passes.wait(self.rng.uniform(every / 2, every * 1.5)):
                return
            runner = self.rng.choice(self.runners)
            link = self.world.work / "links" / f"{runner.name}.git"
            seconds = self.rng.uniform(0.6, 1.6) * lease
            cut = link.with_suffix(".cut")
            os.rename(link, cut)
            self.timeline.add("partition", clone=runner.name, seconds=round(seconds, 1))
            self.stop_passes.wait(seconds)
            os.rename(cut, link)
            self.timeline.add("reconnect", clone=runner.name)

    # -- the human -----------------------------------------------------------------------------------
    def human(self, clone: Path, later_jobs: list[int], kills: int) -> None:
        """Commits unrelated notes (and the jobs not in the seed, spread over the kill budget) and pushes
        with `git pull --rebase && git push`, counting attempts per successful push."""
        n = 0
        while True:
            due = [j for i, j in enumerate(later_jobs)
                   if job_name(j) not in self.jobs_added and self.kills_done >= kills * 0.7 * (i + 1) / len(later_jobs)]
            if self.stop_human.is_set() and not [j for j in later_jobs if job_name(j) not in self.jobs_added]:
                return
            if self.stop_human.is_set():
                due = [j for j in later_jobs if job_name(j) not in self.jobs_added]
            n += 1
            write(clone, f"notes/human-{n:04d}.txt", f"note {n} at {time.time()}\n")
            for j in due:
                write(clone, f"jobs/{job_name(j)}.yaml", job_yaml(j))
            git(clone, "add", "-A", "notes", "jobs", env=HUMAN_ENV)
            git(clone, "commit", "-q", "-m", f"human: note {n}" + (f" and {len(due)} job(s)" if due else ""),
                env=HUMAN_ENV)
            attempts = 0
            while True:
                attempts += 1
                pulled = subprocess.run(["git", "pull", "-q", "--rebase", "origin", "main"], cwd=clone,
                                        env={**os.environ, **HUMAN_ENV}, capture_output=True, check=False)
                pushed = pulled.returncode == 0 and subprocess.run(
                    ["git", "push", "-q", "origin", "HEAD:main"], cwd=clone, env={**os.environ, **HUMAN_ENV},
                    capture_output=True, check=False).returncode == 0
                if pushed:
                    self.human_attempts.append(attempts)
                    self.jobs_added += [job_name(j) for j in due]
                    self.timeline.add("human.pushed", attempts=attempts, jobs=[job_name(j) for j in due])
                    break
                if attempts >= 30:
                    self.human_gave_up += 1
                    self.timeline.add("human.gave-up", stderr=pulled.stderr.decode()[-300:])
                    subprocess.run(["git", "rebase", "--abort"], cwd=clone, capture_output=True, check=False)
                    break
            self.stop_human.wait(self.rng.uniform(0.3, 1.5))
