"""The world the chaos harness and the two-host tests attack: one bare remote, clones, real processes.

Built only from the product's contract (SPEC 4, 5, 6, 9.1, the README), never from the engine's code:
- a deployment repo with a `command` server (`cmd`) whose command appends one line per run to an
  effect log (O_APPEND, one write per line), and an `http` server (`api`) pointing at a recording
  target;
- clones of one bare remote, each pass a real `python -m reconciler reconcile` started in its own
  process group (so a SIGKILL of the group is a crash of that reconciler and of the git it runs);
- an optional second host identity (`unshare -u` + `hostname`, root only);
- /proc scans to aim kills at a `git push` or a running driver command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}
HUMAN_ENV = {
    "GIT_AUTHOR_NAME": "Chaos Human", "GIT_AUTHOR_EMAIL": "human@example.com",
    "GIT_COMMITTER_NAME": "Chaos Human", "GIT_COMMITTER_EMAIL": "human@example.com",
}
FINAL = ("SUCCESS", "FAILURE")

# The driver command: one line to `begins` when it starts, then (unless held by a gate file) one line
# to `effects` (the effect), each with one O_APPEND write. argv: effects begins gates lo hi.
EFFECT_SCRIPT = r'''
import json, os, random, sys, time
effects, begins, gates, lo, hi = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
env = os.environ
rec = {"job": env.get("RECONCILER_JOB"), "user": env.get("RECONCILER_USER"),
       "build": env.get("RECONCILER_BUILD_ID"), "action": env.get("RECONCILER_ACTION"),
       "pid": os.getpid(), "ppid": os.getppid(), "host": os.uname().nodename}
def append(path, **extra):
    line = (json.dumps({**rec, **extra, "t": time.time()}) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
append(begins)
gate = os.path.join(gates, "hold-%s--%s" % (rec["job"], rec["user"]))
while os.path.exists(gate) or os.path.exists(os.path.join(gates, "hold-all")):
    time.sleep(0.02)
time.sleep(random.uniform(lo, hi))
append(effects)
time.sleep(random.uniform(lo, hi) / 2)
'''


@dataclass(frozen=True)
class World:
    """Paths of one chaos world under `work`."""

    work: Path

    @property
    def remote(self) -> Path:
        return self.work / "remote.git"

    @property
    def effects(self) -> Path:
        return self.work / "effects.log"

    @property
    def begins(self) -> Path:
        return self.work / "begins.log"

    @property
    def gates(self) -> Path:
        return self.work / "gates"

    @property
    def home(self) -> Path:
        return self.work / "home"

    def clone_path(self, name: str) -> Path:
        return self.work / "clones" / name


def git(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 120) -> str:
    full = {**os.environ, **GIT_ENV, **(env or {})}
    proc = subprocess.run(["git", *args], cwd=cwd, env=full, capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def write(repo: Path, rel: str, text: str) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")


def job_name(n: int) -> str:
    return f"job-{n:03d}"


def job_kind(n: int) -> str:
    """Half the jobs use the command driver, a quarter http, a quarter both (command block first)."""
    return ("cmd", "cmd", "api", "both")[n % 4]


def job_yaml(n: int, kind: str | None = None) -> str:
    kind = kind or job_kind(n)
    servers = {"cmd": ["cmd"], "api": ["api"], "both": ["cmd", "api"]}[kind]
    blocks = [{"definition": "app", "server": s, "users": "all", "content_tokens": {"greeting": f"job {n} on {s}"}}
              for s in servers]
    return yaml.safe_dump({"description": f"chaos job {n} ({kind})", "blocks": blocks}, sort_keys=False)


def settings_yaml(lease_seconds: int, on_interrupt: str, concurrency: int) -> str:
    return yaml.safe_dump({"branch": "main", "remote": "origin", "lease_seconds": lease_seconds,
                           "on_interrupt": on_interrupt, "concurrency": concurrency}, sort_keys=False)


def make_world(work: Path, *, users: int, http_url: str, jobs: Iterable[int] = (), lease_seconds: int = 10,
               on_interrupt: str = "resume", concurrency: int = 2, user_seconds: tuple[float, float] = (0.05, 0.3),
               settings_extra: dict[str, Any] | None = None) -> World:
    """A bare remote whose `main` holds the settings, the two servers, definition `app` and `jobs`."""
    world = World(work)
    for folder in (work, world.gates, world.home, work / "clones"):
        folder.mkdir(parents=True, exist_ok=True)
    script = work / "effect.py"
    script.write_text(EFFECT_SCRIPT, "utf-8")
    argv = [sys.executable, "-S", str(script), str(world.effects), str(world.begins), str(world.gates),
            str(user_seconds[0]), str(user_seconds[1])]
    user_list = [{"id": f"u{i}"} for i in range(users)]
    seed = work / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    settings = settings_yaml(lease_seconds, on_interrupt, concurrency)
    if settings_extra:
        settings += yaml.safe_dump(settings_extra, sort_keys=False)
    write(seed, "reconciler.yaml", settings)
    write(seed, "servers/cmd.yaml", yaml.safe_dump(
        {"environment": "chaos", "organization": "chaos-org",
         "driver": {"type": "command", "commands": {"APPLY-AUTO": argv, "PLAN": argv, "DESTROY": argv},
                    "timeout": 120},
         "users": user_list}, sort_keys=False))
    write(seed, "servers/api.yaml", yaml.safe_dump(
        {"environment": "chaos", "organization": "chaos-org",
         "driver": {"type": "http", "url": http_url, "timeout": 10, "retries": 3},
         "users": user_list}, sort_keys=False))
    write(seed, "definitions/app.yaml", "module_type: chaos/content\ncontent: app\n"
          "content_tokens:\n  - name: greeting\n")
    write(seed, "definitions/app/config.json", '{"greeting": "{{ greeting }}"}\n')
    write(seed, "notes/README.md", "Files the human edits while reconcilers run.\n")
    for n in jobs:
        write(seed, f"jobs/{job_name(n)}.yaml", job_yaml(n))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "chaos: desired state", env=HUMAN_ENV)
    git(work, "clone", "-q", "--bare", str(seed), str(world.remote))
    shutil.rmtree(seed)
    return world


def add_clone(world: World, name: str, url: str | None = None, human: bool = False) -> Path:
    path = world.clone_path(name)
    git(world.work, "clone", "-q", str(world.remote), str(path))
    if url is not None:
        git(path, "remote", "set-url", "origin", url)
    if human:
        for key, value in (("user.name", "Chaos Human"), ("user.email", "human@example.com"),
                           ("pull.rebase", "true")):
            git(path, "config", key, value)
    return path


def reconciler_env(world: World, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "GIT_"))}
    env.update(GIT_ENV)
    env["HOME"] = str(world.home)
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", str(ROOT))
    env.update(extra or {})
    return env


def reconcile_argv(clone: Path, host: str | None = None, *more: str) -> list[str]:
    """`reconcile --remote origin` in `clone`; with `host`, in a UTS namespace named `host` (root only)."""
    argv = [sys.executable, "-m", "reconciler", "reconcile", "--repo", str(clone), "--remote", "origin", *more]
    if host is None:
        return argv
    quoted = " ".join(_sh_quote(a) for a in argv)
    return ["unshare", "-u", "sh", "-c", f"hostname {_sh_quote(host)} && exec {quoted}"]


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def start_pass(world: World, clone: Path, host: str | None = None, log: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """One pass as a real process, leader of its own process group (pgid == pid)."""
    out: Any = subprocess.DEVNULL
    if log is not None:
        out = log.open("ab")
    try:
        return subprocess.Popen(reconcile_argv(clone, host), cwd=clone, env=reconciler_env(world, env),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    finally:
        if log is not None:
            out.close()


def can_fake_host() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    proc = subprocess.run(["unshare", "-u", "sh", "-c", "hostname chaos-probe && hostname"],
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "chaos-probe"


# --- processes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    argv: tuple[str, ...]


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("utf-8", "replace")
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = tuple(a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a)
        rest = stat[stat.rfind(")") + 2:].split()
        return Proc(pid, int(rest[1]), int(rest[2]), int(rest[3]), rest[0], argv)
    except (OSError, IndexError, ValueError):
        return None


def processes() -> dict[int, Proc]:
    """Every process we can read, from /proc (stat for ids, cmdline for argv)."""
    found = (read_proc(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return {proc.pid: proc for proc in found if proc is not None}


def process_tree(roots: Iterable[int]) -> list[Proc]:
    """The roots and all their descendants, walking /proc/PID/task/*/children (cheap: no full /proc scan)."""
    out: list[Proc] = []
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        proc = read_proc(pid)
        if proc is None:
            continue
        out.append(proc)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                    todo.extend(int(c) for c in handle.read().split())
            except OSError:
                continue
    return out


def is_git_push(proc: Proc) -> bool:
    argv = proc.argv
    if not argv:
        return False
    name = os.path.basename(argv[0])
    if name in ("git-receive-pack", "git-send-pack"):
        return True
    return name == "git" and len(argv) > 1 and any(a in ("push", "receive-pack", "send-pack") for a in argv[1:4])


def is_effect_command(proc: Proc, world: World | None = None) -> bool:
    script = str(world.work / "effect.py") if world is not None else None
    return any(a == script if script else a.endswith("effect.py") for a in proc.argv[:4])


def is_git(proc: Proc) -> bool:
    return bool(proc.argv) and os.path.basename(proc.argv[0]).startswith("git")


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_for(predicate: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            rows.append({"unreadable": line})
    return rows


def remote_record(world: World, job: str) -> dict[str, Any] | None:
    proc = subprocess.run(["git", "--git-dir", str(world.remote), "show", f"main:status/{job}.json"],
                          capture_output=True, text=True, check=False, env={**os.environ, **GIT_ENV})
    if proc.returncode != 0:
        return None
    try:
        value = json.loads(proc.stdout)
    except ValueError:
        return {"unreadable": proc.stdout}
    return value if isinstance(value, dict) else {"unreadable": proc.stdout}


def effect_commands_running(world: World) -> list[Proc]:
    return [p for p in processes().values() if is_effect_command(p, world)]
