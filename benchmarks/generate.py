"""Generate a realistic deployment repo for benchmarks: N jobs, D definitions, S servers of U users.

The history is what years of use leave behind: humans add jobs a few at a time, and for every
executed job the reconciler made a claim commit and a final commit (status-only, with the
`Reconciler-Build:` trailer). Ledger records are built with the real `LedgerRecord` model, so
they validate. Everything is written with one `git fast-import`, so 10,000 jobs take seconds.

    python benchmarks/generate.py OUT --jobs 10000 --executed 0.9
    python benchmarks/generate.py OUT --deploy-users 10000   # one job, one block, 10,000 users
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from reconciler.core import digest
from reconciler.core.files import blob_id
from reconciler.core.records import BlockRecord, LedgerRecord, Owner, UserResult, summarize

EPOCH = datetime(2022, 1, 3, 9, 0, tzinfo=UTC)
HUMAN = "Ops Person <ops@example.com>"
BOT = "reconciler[bot] <reconciler@localhost>"
TRAILER = "Reconciler-Build:"

DEFINITION = """\
# Dashboard {i}: per-user content and typed parameters.
module_type: {module_type}
description: Dashboard number {i} with regional panels
content: {name}
content_tokens:
  - name: title
    description: Dashboard title shown to the user
  - name: region
    default: global
parameter_tokens:
  - name: refresh_minutes
    type: integer
    default: 15
  - name: theme
    type: string
    enum: [light, dark]
    default: light
"""
CONTENT_JSON = '{{"title": "{{{{ title }}}}", "region": "{{{{ region }}}}", "panel": {i}}}\n'
CONTENT_MD = "# {{{{ title }}}}\n\nRegion: {{{{ region }}}}. Maintained by the analytics team ({i}).\n"
MODULE_TYPES = ("dashboard/content", "docs/runbook", "terraform/aws", "report/pdf")


@dataclass
class Repo:
    """What the generator wrote, in memory, so records can be built from it."""

    files: dict[str, bytes] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {environment, organization, users}
    definitions: dict[str, str] = field(default_factory=dict)  # name -> module_type


def server_text(name: str, env: str, org: str, users: list[str]) -> str:
    lines = [f"# Destination server {name}.", f"environment: {env}", f"organization: {org}", "driver:",
             "  type: local", f"  path: .deployments/{name}", "users:"]
    lines += [f"  - id: {u}" for u in users]
    return "\n".join(lines) + "\n"


def job_doc(rng: random.Random, index: int, repo: Repo, kind: str) -> tuple[str, dict[str, Any]]:
    """(YAML text, the data it loads to) of one job. `kind`: run, suspended or scheduled."""
    data: dict[str, Any] = {"description": f"Rollout {index}: dashboards for the regional teams"}
    lines = ["# Generated job.", f"description: 'Rollout {index}: dashboards for the regional teams'"]
    if rng.random() < 0.3:
        policy = rng.choice(("skip", "force", "abort"))
        data["on_failure"] = policy
        lines.append(f"on_failure: {policy}")
    if kind == "suspended":
        data["suspend"] = True
        lines.append("suspend: true")
    elif kind == "scheduled":
        data["run_at"] = "2099-12-24T08:00:00Z"
        lines.append("run_at: 2099-12-24T08:00:00Z")
    lines.append("blocks:")
    blocks = []
    for _ in range(rng.randint(1, 3)):
        server = rng.choice(sorted(repo.servers))
        definition = rng.choice(sorted(repo.definitions))
        users = repo.servers[server]["users"]
        chosen = sorted(rng.sample(users, min(len(users), rng.randint(1, 5))))
        block: dict[str, Any] = {"definition": definition, "server": server}
        lines += [f"  - definition: {definition}", f"    server: {server}"]
        if rng.random() < 0.2:
            block["action"] = "PLAN"
            lines.append("    action: PLAN")
        if rng.random() < 0.2:
            block["users"] = "all"
            lines.append("    users: all")
        else:
            block["users"] = chosen
            lines.append(f"    users: [{', '.join(chosen)}]")
        title = f"Sales {index}"
        block["content_tokens"] = {"title": title, "region": rng.choice(("emea", "apac", "amer"))}
        lines += ["    content_tokens:", f"      title: {title}",
                  f"      region: {block['content_tokens']['region']}"]
        if rng.random() < 0.5:
            minutes = rng.choice((5, 15, 30, 60))
            block["parameter_tokens"] = {"refresh_minutes": minutes}
            lines += ["    parameter_tokens:", f"      refresh_minutes: {minutes}"]
        if block["users"] != "all" and rng.random() < 0.2:
            uid = block["users"][0]
            block["user_tokens"] = {uid: {"parameter_tokens": {"theme": "dark"}}}
            lines += ["    user_tokens:", f"      {uid}:", "        parameter_tokens: {theme: dark}"]
        blocks.append(block)
    data["blocks"] = blocks
    return "\n".join(lines) + "\n", data


def record_for(job: str, text: bytes, data: dict[str, Any], repo: Repo, commit: str, when: datetime,
               rng: random.Random) -> tuple[LedgerRecord, str]:
    build_id = f"{when.strftime('%Y%m%dT%H%M%SZ')}-{job}-{rng.getrandbits(24):06x}"
    blocks = []
    log = [f"{when.isoformat()} job {job} claimed by bench-host pid 4242 as build {build_id}"]
    for i, b in enumerate(data["blocks"]):
        server = repo.servers[b["server"]]
        users = server["users"] if b["users"] == "all" else b["users"]
        status = "PLANNED" if b.get("action") == "PLAN" else "DEPLOYED"
        results = {u: UserResult(status=status, reason="1 file(s) deployed") for u in users}
        blocks.append(BlockRecord(definition=b["definition"], module_type=repo.definitions[b["definition"]],
                                  server=b["server"], environment=server["environment"],
                                  organization=server["organization"], action=b.get("action", "APPLY-AUTO"),
                                  users=results))
        log += [f"{when.isoformat()} block {i}: {u}: {status}" for u in users]
    log.append(f"{when.isoformat()} build {build_id} finished: SUCCESS")
    record = LedgerRecord(
        job=job, job_blob=blob_id(text), spec_digest=digest.spec_digest(data), desired_commit=commit,
        build_id=build_id, status="SUCCESS", owner=Owner(host="bench-host", pid=4242, started_at=when),
        lease_expires_at=None, created_at=when - timedelta(minutes=5), queued_at=when, started_at=when,
        finished_at=when + timedelta(seconds=3), on_failure=data.get("on_failure", "skip"), on_interrupt="resume",
        blocks=blocks, summary=summarize(blocks), log=f"status/logs/{build_id}.log", error=None,
        reconciler_version="0.1.0",
    )
    return record, "\n".join(log) + "\n"


class FastImport:
    """A `git fast-import` stream with `get-mark` answers read back (for `desired_commit`)."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(["git", "fast-import", "--quiet", "--cat-blob-fd=1", "--done"], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.out: IO[bytes] = self.proc.stdin
        self.answers: IO[bytes] = self.proc.stdout
        self.mark = 0
        self.out.write(b"feature done\nfeature get-mark\n")

    def commit(self, who: str, when: datetime, message: str, files: dict[str, bytes], deletes: tuple[str, ...] = (),
               ) -> int:
        self.mark += 1
        stamp = f"{int(when.timestamp())} +0000"
        msg = message.encode()
        head = (f"commit refs/heads/main\nmark :{self.mark}\nauthor {who} {stamp}\ncommitter {who} {stamp}\n"
                f"data {len(msg)}\n").encode()
        parts = [head, msg, b"\n"]
        if self.mark > 1:
            parts.append(f"from :{self.mark - 1}\n".encode())
        for path in deletes:
            parts.append(f"D {path}\n".encode())
        for path, data in files.items():
            parts.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode())
            parts += [data, b"\n"]
        self.out.write(b"".join(parts) + b"\n")
        return self.mark

    def sha(self, mark: int) -> str:
        self.out.write(f"get-mark :{mark}\n".encode())
        self.out.flush()
        return self.answers.readline().decode().strip()

    def close(self) -> None:
        self.out.write(b"done\n")
        self.out.close()
        self.answers.close()
        if self.proc.wait() != 0:
            raise SystemExit("git fast-import failed")


def generate(root: Path, *, jobs: int = 1000, executed: float = 0.9, definitions: int = 20, servers: int = 10,
             users: int = 100, batch: int = 10, seed: int = 7, deploy_users: int = 0, runnable: bool = False) -> Path:
    """Write a deployment repo at `root` (created; must not exist) and check out `main`."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    repo = Repo()
    when = EPOCH
    stream = FastImport(root)
    base: dict[str, bytes] = {".gitignore": b".deployments/\n"}
    if deploy_users:
        definitions, servers, users, jobs = 1, 1, deploy_users, 0
    for s in range(servers):
        name = f"srv-{s:02d}"
        env, org = rng.choice(("production", "staging", "qa")), f"org-{s % 4}"
        ids = [f"user{u:05d}" for u in range(users)]
        repo.servers[name] = {"environment": env, "organization": org, "users": ids}
        base[f"servers/{name}.yaml"] = server_text(name, env, org, ids).encode()
    for d in range(definitions):
        name = f"dash-{d:03d}"
        module_type = MODULE_TYPES[d % len(MODULE_TYPES)]
        repo.definitions[name] = module_type
        base[f"definitions/{name}.yaml"] = DEFINITION.format(i=d, name=name, module_type=module_type).encode()
        base[f"definitions/{name}/config.json"] = CONTENT_JSON.format(i=d).encode()
        base[f"definitions/{name}/README.md"] = CONTENT_MD.format(i=d).encode()
    stream.commit(HUMAN, when, "Servers and definitions", base)
    if deploy_users:
        text = (f"description: One block to all {deploy_users} users\nblocks:\n  - definition: dash-000\n"
                "    server: srv-00\n    users: all\n    content_tokens: {title: Everyone}\n")
        stream.commit(HUMAN, when + timedelta(minutes=1), "Add the big job", {"jobs/everyone.yaml": text.encode()})
    n_executed = round(jobs * executed)
    for start in range(0, jobs, batch):
        when += timedelta(hours=1)
        added: dict[str, tuple[bytes, dict[str, Any]]] = {}
        for index in range(start, min(jobs, start + batch)):
            kind = "run" if index < n_executed or runnable else ("suspended" if index % 2 else "scheduled")
            text, data = job_doc(rng, index, repo, kind)
            added[f"job-{index:05d}"] = (text.encode(), data)
        mark = stream.commit(HUMAN, when, f"Add jobs {start} to {start + len(added) - 1}",
                             {f"jobs/{name}.yaml": text for name, (text, _) in added.items()})
        runs = [name for name in added if int(name[4:]) < n_executed]
        if not runs:
            continue
        commit = stream.sha(mark)
        for name in runs:
            text, data = added[name]
            when += timedelta(seconds=30)
            record, log = record_for(name, text, data, repo, commit, when, rng)
            claim = record.model_copy(update={"status": "IN-PROGRESS", "blocks": [], "summary": {},
                                              "started_at": None, "finished_at": None})
            trailer = f"\n\n{TRAILER} {record.build_id}\n"
            stream.commit(BOT, when, f"status: claim {name}{trailer}",
                          {f"status/{name}.json": claim.to_json().encode()})
            stream.commit(BOT, when + timedelta(seconds=3), f"status: {name} SUCCESS{trailer}",
                          {f"status/{name}.json": record.to_json().encode(), record.log: log.encode()})
    stream.close()
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=root, check=True)
    subprocess.run(["git", "gc", "-q", "--auto"], cwd=root, check=False)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--executed", type=float, default=0.9, help="fraction of jobs with a ledger record")
    parser.add_argument("--runnable", action="store_true",
                        help="jobs without a record are due (else half suspended, half scheduled)")
    parser.add_argument("--definitions", type=int, default=20)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--users", type=int, default=100, help="users per server")
    parser.add_argument("--batch", type=int, default=10, help="jobs added per human commit")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--deploy-users", type=int, default=0,
                        help="instead: one job with one block deploying to this many users (not yet run)")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; choose a new folder", file=sys.stderr)
        return 2
    generate(args.out, jobs=args.jobs, executed=args.executed, definitions=args.definitions, servers=args.servers,
             users=args.users, batch=args.batch, seed=args.seed, deploy_users=args.deploy_users,
             runnable=args.runnable)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    raise SystemExit(main())
