"""Exactly once with remotes, concurrent reconcilers and crashes (issue 3), all with real git.

Effects are counted through the failpoint log: every driver call appends `user.after-apply JOB USER
STATUS`; a deployment effect is a DEPLOYED outcome, and each (job, user) must have exactly one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.support.cli import run_cli
from tests.support.repos import GIT_ENV, ROOT, commit_all, git, write

SCHEMA = Draft202012Validator(json.loads((ROOT / "schemas" / "status.schema.json").read_text()))
USERS = ("u1", "u2", "u3")
SERVER = """\
environment: test
organization: org
driver: {type: local, path: .deployments/srv}
users: [{id: u1}, {id: u2}, {id: u3}]
"""
DEFINITION = """\
module_type: test/content
content: app
content_tokens: [{name: greeting}]
"""
JOB = """\
blocks:
  - definition: app
    server: srv
    users: all
    content_tokens: {{greeting: "hello {n}"}}
"""


def make_origin(base: Path, jobs: int, settings: str = "concurrency: 2\n") -> tuple[Path, Path]:
    """A bare remote with `jobs` jobs of 3 users each, and a working clone of it."""
    src = base / "src"
    src.mkdir(parents=True)
    git(src, "init", "-q", "-b", "main")
    write(src, ".gitignore", ".deployments/\n")
    write(src, "reconciler.yaml", settings)
    write(src, "servers/srv.yaml", SERVER)
    write(src, "definitions/app.yaml", DEFINITION)
    write(src, "definitions/app/hello.txt", "{{ greeting }}\n")
    for n in range(jobs):
        write(src, f"jobs/job-{n:02d}.yaml", JOB.format(n=n))
    commit_all(src, "desired state")
    bare = base / "origin.git"
    git(base, "clone", "-q", "--bare", str(src), str(bare))
    clone = base / "clone"
    git(base, "clone", "-q", str(bare), str(clone))
    return bare, clone


def effects(log: Path) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[1] == "user.after-apply" and parts[4] == "DEPLOYED":
                found[(parts[2], parts[3])] += 1
    return found


def remote_builds(bare: Path) -> dict[str, set[str]]:
    """job -> every build id that ever appeared in its record in the remote's history."""
    out = git(bare, "log", "-p", "--format=", "main", "--", "status/*.json")
    builds: dict[str, set[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("+++ b/status/"):
            current = line[len("+++ b/status/"):-len(".json")]
        elif current and line.startswith('+  "build_id"'):
            builds.setdefault(current, set()).add(line.split('"')[3])
    return builds


def check_final_state(bare: Path, clone: Path, jobs: int) -> None:
    check = bare.parent / "check"
    if check.exists():
        shutil.rmtree(check)
    git(bare.parent, "clone", "-q", str(bare), str(check))
    for n in range(jobs):
        path = check / "status" / f"job-{n:02d}.json"
        assert path.exists(), f"job-{n:02d} was lost: no record"
        record = json.loads(path.read_text())
        errors = list(SCHEMA.iter_errors(record))
        assert not errors, errors[0].message
        assert record["status"] in ("SUCCESS", "FAILURE"), record["status"]
        users = [u for block in record["blocks"] for u in block["users"]]
        assert sorted(users) == list(USERS), f"not exactly one final result per user: {users}"
    for job, ids in remote_builds(bare).items():
        assert len(ids) == 1, f"{job} ran as several builds: {ids}"


KILL_POINTS = [
    (point, nth)
    for point in ("claim.before-commit", "claim.before-push", "claim.after-commit", "save.before-commit",
                  "save.before-push", "save.after-commit", "user.before-apply", "user.after-apply")
    for nth in (1, 2, 3, 4)
]
exercised: list[str] = []


@pytest.fixture(scope="module")
def origin_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("template")
    # one build at a time, small claim batches: more distinct commits for the kills to land on
    make_origin(base, jobs=3, settings="concurrency: 2\njob_concurrency: 1\n")
    return base


@pytest.mark.parametrize(("point", "nth"), KILL_POINTS, ids=[f"{p}@{n}" for p, n in KILL_POINTS])
def test_sigkill_then_recover(origin_template: Path, tmp_path: Path, point: str, nth: int) -> None:
    base = tmp_path / "case"
    shutil.copytree(origin_template, base)
    bare, clone = base / "origin.git", base / "clone"
    git(clone, "remote", "set-url", "origin", str(bare))
    log = tmp_path / "effects.log"
    env = {"RECONCILER_FAILPOINT_LOG": str(log)}
    first = run_cli("reconcile", "--repo", str(clone), env={**env, "RECONCILER_FAILPOINTS": f"{point}=kill@{nth}"})
    assert "Traceback" not in first.stderr
    if first.returncode == -signal.SIGKILL:
        exercised.append(f"{point}@{nth}")
    else:
        assert first.returncode == 0, first.stderr
    for _ in range(3):  # recovery: the owner is provably dead (same host, process gone)
        again = run_cli("reconcile", "--repo", str(clone), env=env)
        assert again.returncode == 0, again.stderr
        if "nothing to do" in again.stdout:
            break
    check_final_state(bare, clone, jobs=3)
    # Never applied twice: a re-apply after a crash is absorbed (UNCHANGED). A kill can land between
    # another thread's apply and its log line, so an effect may be unlogged, never doubled.
    deployed = effects(log)
    assert all(count <= 1 for count in deployed.values()), deployed
    for user in USERS:
        manifest = clone / ".deployments" / "srv" / user / "app" / ".deployment.json"
        assert manifest.exists(), f"{user} has no deployment"
    for n in range(3):
        record = json.loads((clone / "status" / f"job-{n:02d}.json").read_text())
        for block in record["blocks"]:
            assert {r["status"] for r in block["users"].values()} <= {"DEPLOYED", "UNCHANGED"}
    assert git(clone, "status", "--porcelain") == ""


def test_report_kill_points() -> None:
    """Runs after the parametrised kills (file order): at least 20 distinct kill points were really hit."""
    print(f"\nkill points exercised: {len(exercised)}: {', '.join(exercised)}")
    assert len(exercised) >= 20


def test_four_concurrent_reconcilers_share_one_remote(tmp_path: Path) -> None:
    jobs = 16
    bare, first_clone = make_origin(tmp_path, jobs=jobs)
    clones = [first_clone] + [tmp_path / f"clone{i}" for i in range(1, 4)]
    for clone in clones[1:]:
        git(tmp_path, "clone", "-q", str(bare), str(clone))
    log = tmp_path / "effects.log"
    env = {**os.environ, **GIT_ENV, "RECONCILER_FAILPOINT_LOG": str(log)}
    procs = [subprocess.Popen([sys.executable, "-m", "reconciler", "reconcile", "--repo", str(c)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in clones]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    for clone in clones:  # a last pass anywhere finds nothing left
        final = run_cli("reconcile", "--repo", str(clone), env={"RECONCILER_FAILPOINT_LOG": str(log)})
        assert final.returncode == 0, final.stderr
    check_final_state(bare, first_clone, jobs)
    deployed = effects(log)
    duplicates = {k: v for k, v in deployed.items() if v != 1}
    assert not duplicates
    assert len(deployed) == jobs * len(USERS)
    ran_in = Counter(line.split()[0] for line in log.read_text().splitlines() if "user.after-apply" in line)
    print(f"\n4 reconcilers, {jobs} jobs: driver calls per process {sorted(ran_in.values())}, duplicates 0")


def test_human_push_between_fetch_and_push_is_kept(tmp_path: Path) -> None:
    bare, clone = make_origin(tmp_path, jobs=1)
    human = tmp_path / "human"
    git(tmp_path, "clone", "-q", str(bare), str(human))
    write(human, "servers/srv.yaml", SERVER + "# a human edit\n")
    commit_all(human, "human: annotate the server")
    script = tmp_path / "push.sh"
    script.write_text(f"#!/bin/sh\ngit -C {human} push -q origin main\n")
    script.chmod(0o755)
    result = run_cli("reconcile", "--repo", str(clone),
                     env={"RECONCILER_FAILPOINTS": "claim.before-push=exec", "RECONCILER_FAILPOINT_EXEC": str(script)})
    assert result.returncode == 0, result.stderr
    assert "push.rejected" in result.stderr
    subjects = git(bare, "log", "--format=%s", "main").splitlines()
    assert "human: annotate the server" in subjects
    assert subjects[0].startswith("status:")
    assert subjects.index("human: annotate the server") > subjects.index("status: claim job-00")  # ours on top
    check_final_state(bare, clone, jobs=1)


def test_claim_lost_to_another_reconciler_is_not_run(tmp_path: Path) -> None:
    bare, clone = make_origin(tmp_path, jobs=1)
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    log = tmp_path / "effects.log"
    script = tmp_path / "other.sh"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m reconciler reconcile --repo {other}\n")
    script.chmod(0o755)
    env = {"RECONCILER_FAILPOINT_LOG": str(log)}
    # the other reconciler claims and runs the job while this one is about to push its own claim
    result = run_cli("reconcile", "--repo", str(clone),
                     env={**env, "RECONCILER_FAILPOINTS": "claim.before-push=exec",
                          "RECONCILER_FAILPOINT_EXEC": str(script)})
    assert result.returncode == 0, result.stderr
    assert "job.skipped" in result.stderr and "claimed meanwhile" in result.stderr
    check_final_state(bare, clone, jobs=1)
    assert all(v == 1 for v in effects(log).values()) and len(effects(log)) == 3


def test_live_lock_is_respected_and_dead_one_recovered(tmp_path: Path) -> None:
    _, clone = make_origin(tmp_path, jobs=1, settings="concurrency: 1\n")
    env = {**os.environ, **GIT_ENV, "RECONCILER_FAILPOINTS": "user.before-apply=sleep:30"}
    holder = subprocess.Popen([sys.executable, "-m", "reconciler", "reconcile", "--repo", str(clone)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "status: claim" not in git(clone, "log", "--format=%s", "-3") and time.monotonic() < deadline:
            time.sleep(0.1)
        second = run_cli("reconcile", "--repo", str(clone), "--lock-wait", "0.5")
        assert second.returncode == 2
        assert f"pid {holder.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait()
    third = run_cli("reconcile", "--repo", str(clone))
    assert third.returncode == 0, third.stderr
    record = json.loads((clone / "status" / "job-00.json").read_text())
    assert record["status"] == "SUCCESS" and record["recoveries"] == 1
    builds = remote_builds(tmp_path / "origin.git")
    assert builds["job-00"] == {record["build_id"]}  # resumed under the same build id


def test_sigterm_checkpoints_and_exits_130_then_resumes(tmp_path: Path) -> None:
    _, clone = make_origin(tmp_path, jobs=1, settings="concurrency: 1\n")
    log = tmp_path / "effects.log"
    env = {**os.environ, **GIT_ENV, "RECONCILER_FAILPOINTS": "user.before-apply=sleep:1",
           "RECONCILER_FAILPOINT_LOG": str(log)}
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "reconcile", "--repo", str(clone)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while (not log.exists() or "user.before-apply" not in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    record = json.loads(git(clone, "show", "HEAD:status/job-00.json"))
    assert record["status"] == "WORKING"
    done = [u for b in record["blocks"] for u in b["users"]]
    assert 1 <= len(done) < 3  # the user in flight finished and was checkpointed; the rest wait
    again = run_cli("reconcile", "--repo", str(clone), env={"RECONCILER_FAILPOINT_LOG": str(log)})
    assert again.returncode == 0, again.stderr
    final = json.loads((clone / "status" / "job-00.json").read_text())
    assert final["status"] == "SUCCESS" and final["build_id"] == record["build_id"]
    assert all(v == 1 for v in effects(log).values()) and len(effects(log)) == 3


def test_on_interrupt_fail_ends_the_job_failure(tmp_path: Path) -> None:
    _, clone = make_origin(tmp_path, jobs=1, settings="concurrency: 1\non_interrupt: fail\n")
    first = run_cli("reconcile", "--repo", str(clone), env={"RECONCILER_FAILPOINTS": "user.after-apply=kill@2"})
    assert first.returncode == -signal.SIGKILL
    again = run_cli("reconcile", "--repo", str(clone))
    assert again.returncode == 1  # a job run in this pass ended FAILURE
    record = json.loads((clone / "status" / "job-00.json").read_text())
    assert record["status"] == "FAILURE" and record["error"] == "interrupted"
    statuses = [r["status"] for b in record["blocks"] for r in b["users"].values()]
    assert "NOT_RUN" in statuses and len(statuses) == 3


def test_retry_writes_a_job_for_the_users_that_did_not_succeed(make_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    long_name = "a-very-long-job-name-that-goes-on-and-on-for-quite-a-while-x"
    job = """\
on_failure: skip
blocks:
  - definition: app
    server: srv
    users: all
    content_tokens: {greeting: fine}
    user_tokens:
      u2: {content_tokens: {greeting: 'broken " json'}}
"""
    repo = make_repo(jobs={long_name: job})
    result = run_cli("reconcile", "--repo", str(repo))
    assert result.returncode == 1  # the job ended FAILURE (u2 SKIPPED)
    nothing = run_cli("retry", "no-such-job", "--repo", str(repo))
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    retry = run_cli("retry", long_name, "--repo", str(repo), "--commit")
    assert retry.returncode == 0, retry.stderr
    written = list((repo / "jobs").glob("*-retry-1.yaml"))
    assert len(written) == 1 and len(written[0].stem) <= 63
    text = written[0].read_text()
    assert f"retry_of: {long_name}" in text and "- u2" in text and "u1" not in text
    assert run_cli("validate", "--repo", str(repo)).returncode == 0
    # fix the cause by running the retry: it re-targets exactly u2 (still broken: SKIPPED again)
    run_cli("reconcile", "--repo", str(repo))
    record = json.loads((repo / "status" / f"{written[0].stem}.json").read_text())
    assert list(record["blocks"][0]["users"]) == ["u2"]


def test_retry_with_nothing_to_retry_exits_0(make_repo) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(jobs={"ok": "blocks:\n  - {definition: app, server: srv, users: [u1], "
                                 "content_tokens: {greeting: hi}}\n"})
    assert run_cli("reconcile", "--repo", str(repo)).returncode == 0
    result = run_cli("retry", "ok", "--repo", str(repo))
    assert result.returncode == 0 and "nothing to retry" in result.stdout
    assert not list((repo / "jobs").glob("*retry*"))


def test_non_idempotent_driver_is_never_run_twice_after_a_crash(tmp_path: Path) -> None:
    """The command driver cannot absorb a second run: a user whose command began before a crash is FAILED."""
    repo = tmp_path / "cmd"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    counter = tmp_path / "runs.txt"
    write(repo, "reconciler.yaml", "concurrency: 1\n")
    script = f"import os; open({str(counter)!r}, 'a').write(os.environ['RECONCILER_USER'] + ' ')"
    write(repo, "servers/tf.yaml", json.dumps({
        "environment": "test", "organization": "org",
        "driver": {"type": "command", "commands": {"APPLY-AUTO": [sys.executable, "-c", script]}},
        "users": [{"id": "u1"}, {"id": "u2"}],
    }))
    write(repo, "definitions/mod.yaml", "module_type: terraform/test\ncontent: mod\n")
    write(repo, "definitions/mod/main.tf", "# module\n")
    write(repo, "jobs/apply.yaml", "blocks:\n  - {definition: mod, server: tf, users: all}\n")
    commit_all(repo, "desired")
    first = run_cli("reconcile", "--repo", str(repo), env={"RECONCILER_FAILPOINTS": "user.after-apply=kill@1"})
    assert first.returncode == -signal.SIGKILL
    again = run_cli("reconcile", "--repo", str(repo))
    assert again.returncode == 1, again.stderr  # the job ends FAILURE: u1 cannot be proven done
    runs = counter.read_text().split()
    assert sorted(runs) == ["u1", "u2"]  # each command ran exactly once
    record = json.loads((repo / "status" / "apply.json").read_text())
    users = record["blocks"][0]["users"]
    assert users["u1"]["status"] == "FAILED" and "not run again" in users["u1"]["reason"]
    assert users["u2"]["status"] == "DEPLOYED"
    assert not list(SCHEMA.iter_errors(record))


def test_a_build_interrupted_and_then_edited_resumes_what_was_claimed(tmp_path: Path) -> None:
    """Editing (or deleting) a job while its build is in flight never strands the build, nor changes it."""
    _, clone = make_origin(tmp_path, jobs=1, settings="concurrency: 1\n")
    first = run_cli("reconcile", "--repo", str(clone), env={"RECONCILER_FAILPOINTS": "user.after-apply=kill@1"})
    assert first.returncode == -signal.SIGKILL
    write(clone, "jobs/job-00.yaml", JOB.format(n="edited"))
    commit_all(clone, "human: edit the job mid-build")
    git(clone, "push", "-q", "origin", "main")
    again = run_cli("reconcile", "--repo", str(clone))
    assert again.returncode == 1, again.stderr  # the edit is a MODIFIED problem...
    assert "MODIFIED" in again.stderr
    record = json.loads((clone / "status" / "job-00.json").read_text())
    assert record["status"] == "SUCCESS" and record["recoveries"] == 1  # ...and the claimed build still finished
    deployed = (clone / ".deployments" / "srv" / "u3" / "app" / "hello.txt").read_text()
    assert deployed == "hello 0\n"  # the claimed version, not the edit
    status = json.loads(run_cli("status", "--repo", str(clone), "--format", "json").stdout)
    assert [row["status"] for row in status] == ["MODIFIED"]


def test_builds_on_one_target_recover_in_claim_order(tmp_path: Path) -> None:
    """Two jobs deploy the same definition to the same server: 'zeta' was committed first, 'alpha' after it,
    so 'zeta' is claimed first (one claim commit, the same second) and its content must not land last. A kill
    right after the claims leaves both interrupted; the recovery takes them over in claim order (not by name)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, ".gitignore", ".deployments/\n")
    write(repo, "reconciler.yaml", "concurrency: 2\n")
    write(repo, "servers/srv.yaml", SERVER)
    write(repo, "definitions/app.yaml", DEFINITION)
    write(repo, "definitions/app/hello.txt", "{{ greeting }}\n")
    write(repo, "jobs/zeta.yaml", JOB.format(n="zeta (older)"))
    commit_all(repo, "the older job")
    write(repo, "jobs/alpha.yaml", JOB.format(n="alpha (newer)"))
    commit_all(repo, "the newer job")
    first = run_cli("reconcile", "--repo", str(repo), env={"RECONCILER_FAILPOINTS": "claim.after-commit=kill"})
    assert first.returncode == -signal.SIGKILL, first.stderr
    claimed = {job: json.loads(git(repo, "show", f"main:status/{job}.json")) for job in ("zeta", "alpha")}
    assert {record["status"] for record in claimed.values()} == {"IN-PROGRESS"}
    again = run_cli("reconcile", "--repo", str(repo))  # the owner is provably gone (same host, process gone)
    assert again.returncode == 0, again.stderr
    for job in ("zeta", "alpha"):
        assert json.loads(git(repo, "show", f"main:status/{job}.json"))["status"] == "SUCCESS"
    for user in USERS:
        deployed = repo / ".deployments" / "srv" / user / "app" / "hello.txt"
        assert deployed.read_text("utf-8") == "hello alpha (newer)\n"


def test_a_job_waits_for_another_reconcilers_live_build_on_the_same_target(tmp_path: Path) -> None:
    """While one reconciler deploys job-00 (definition app on server srv), a newer job for the same target is
    pushed and a second reconciler passes: it leaves the newer job PENDING (claimed now, its content could land
    first and the older one's over it), and runs it once the older build is final."""
    bare, clone = make_origin(tmp_path, jobs=1)
    other, human = tmp_path / "other", tmp_path / "human"
    for path in (other, human):
        git(tmp_path, "clone", "-q", str(bare), str(path))
    write(human, "jobs/job-01.yaml", JOB.format(n="newer"))
    commit_all(human, "a newer job for the same target")
    out = tmp_path / "other-pass.txt"
    script = tmp_path / "meanwhile.sh"
    script.write_text(f"#!/bin/sh\nset -e\ngit -C {human} pull -q --rebase origin main\n"
                      f"git -C {human} push -q origin main\n"
                      f"env -u RECONCILER_FAILPOINTS {sys.executable} -m reconciler reconcile --repo {other} "
                      f">{out} 2>&1\n")
    script.chmod(0o755)
    first = run_cli("reconcile", "--repo", str(clone), env={"RECONCILER_FAILPOINTS": "user.before-apply=exec",
                                                             "RECONCILER_FAILPOINT_EXEC": str(script)})
    assert first.returncode == 0, first.stderr
    meanwhile = out.read_text("utf-8")
    assert "job-01: PENDING, waits for the build of job-00 in flight (definition app on server srv)" in meanwhile
    assert "job-01: SUCCESS" not in meanwhile
    after = run_cli("reconcile", "--repo", str(other))
    assert after.returncode == 0, after.stderr
    assert "job-01: SUCCESS" in after.stdout
    for user in USERS:
        assert (other / ".deployments" / "srv" / user / "app" / "hello.txt").read_text("utf-8") == "hello newer\n"


def test_a_build_that_waited_for_its_turn_checks_its_lease_before_it_deploys(tmp_path: Path) -> None:
    """Found by an attack: inline calls (the local driver) of concurrent builds take turns. While one build's call
    hangs (a hung mount) and the owner is cut off from the remote, another build waits for its turn; its lease
    expires meanwhile (no renewal can be pushed), another host may take it over. Once its turn comes it must not
    deploy the user it had checked before the wait: it checks its lease again, cannot renew it, and stops."""
    users = [f"u{n:03d}" for n in range(300)]
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    write(src, ".gitignore", ".deployments/\n")
    write(src, "reconciler.yaml", "lease_seconds: 10\ncheckpoint_seconds: 1\n")
    write(src, "servers/srv.yaml", "environment: test\norganization: org\n"
          "driver: {type: local, path: .deployments/srv}\nusers:\n" + "".join(f"  - id: {u}\n" for u in users))
    for name in ("app", "other"):
        write(src, f"definitions/{name}.yaml", f"module_type: test/content\ncontent: {name}\n")
        write(src, f"definitions/{name}/hello.txt", "hello\n")
    slow_users = ", ".join([*users[1:60], users[0]])  # u000, the slow one, once both builds are well under way
    write(src, "jobs/a-slow.yaml", f"blocks:\n  - {{definition: other, server: srv, users: [{slow_users}]}}\n")
    write(src, "jobs/b-big.yaml", "blocks:\n  - {definition: app, server: srv, users: all}\n")
    commit_all(src, "two jobs")
    bare, clone = tmp_path / "origin.git", tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    log = tmp_path / "applies.log"
    env = {**os.environ, **GIT_ENV, "APPLY_LOG": str(log), "SLOW_JOB": "a-slow", "SLOW_USER": "u000",
           "SLOW_SECONDS": "12", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tests.support.slow_local", "reconcile", "--remote", "origin"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line.split() for line in log.read_text("utf-8").splitlines()]
    slow_end = next(float(at) for at, *rest in lines if rest == ["SLOW-END"])
    before = [user for at, *rest in lines if rest[:1] == ["b-big"] and float(at) < slow_end for user in rest[1:]]
    after = [user for at, *rest in lines if rest[:1] == ["b-big"] and float(at) >= slow_end for user in rest[1:]]
    assert before, "b-big was deploying when the slow call began"
    assert after == [], f"b-big deployed {after[:3]} after a wait that outlived its lease"


def _claims_race(tmp_path: Path, before: str, failpoints: str) -> tuple[Path, Path]:
    """This clone claims job-00 and job-01 (one target) in one commit; just before its push another reconciler
    (`before` it starts) claims job-00 alone (`--only`) and goes on with `failpoints` in the background. This pass
    loses job-00 and keeps job-01's claim, which must wait. Returns (bare remote, this clone)."""
    bare, clone = make_origin(tmp_path, jobs=2)
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    script = tmp_path / "meanwhile.sh"
    script.write_text(
        f"#!/bin/sh\n{before}cd {other}\nRECONCILER_FAILPOINTS={failpoints} {sys.executable} -m reconciler "
        f"reconcile --only job-00 >{tmp_path}/other.txt 2>&1 &\n"
        f"for i in $(seq 100); do git --git-dir={bare} cat-file -e main:status/job-00.json 2>/dev/null && exit 0; "
        "sleep 0.1; done\nexit 1\n")
    script.chmod(0o755)
    first = run_cli("reconcile", "--repo", str(clone), env={"RECONCILER_FAILPOINTS": "claim.before-push=exec",
                                                             "RECONCILER_FAILPOINT_EXEC": str(script)})
    assert first.returncode == 0, first.stderr
    assert "job-01: IN-PROGRESS, claimed, waits for the build of job-00 in flight" in first.stdout, first.stdout
    assert "job-01: SUCCESS" not in first.stdout
    return bare, clone


def test_a_claim_batch_that_loses_the_older_job_does_not_run_the_newer_one_beside_it(tmp_path: Path) -> None:
    """Found by an attack: this reconciler claims job-00 and the newer job-01 (same target) in one commit; meanwhile
    another reconciler claims job-00 alone (`--only`) and runs it. Only job-01's claim holds here: it must not run
    beside job-00 (whose older content would land last). It stays claimed, and a pass after job-00 is final runs it."""
    # the other reconciler's claim of job-00 lands first; it then deploys job-00, slowly
    bare, clone = _claims_race(tmp_path, "", "user.before-apply=sleep:1")
    for _ in range(300):  # the other reconciler finishes job-00
        if '"SUCCESS"' in git(bare, "show", "main:status/job-00.json"):
            break
        time.sleep(0.1)
    again = run_cli("reconcile", "--repo", str(clone))  # its claimer is gone (same host): taken over and run
    assert again.returncode == 0, again.stderr
    assert "job-01: SUCCESS" in again.stdout, again.stdout
    for user in USERS:
        assert (clone / ".deployments" / "srv" / user / "app" / "hello.txt").read_text("utf-8") == "hello 1\n"


def test_recovery_follows_the_order_claims_landed_in_not_their_timestamps(tmp_path: Path) -> None:
    """Found by an attack: a claim's `queued_at` is stamped before its push; when that push is rejected and retried,
    an older job's claim by another reconciler can land first with a later `queued_at`. Both builds are then
    interrupted: the recovery takes them over in the order their claims landed (job-00 first), not by timestamp."""
    # a second later, the other reconciler claims job-00 alone, and is killed at its first user
    bare, clone = _claims_race(tmp_path, "sleep 1.2\n", "user.before-apply=kill")
    records = {job: json.loads(git(bare, "show", f"main:status/{job}.json")) for job in ("job-00", "job-01")}
    assert records["job-01"]["queued_at"] < records["job-00"]["queued_at"]  # the newer job's claim: stamped first
    for _ in range(3):  # both claimers are gone (same host): taken over and run, job-00 first
        again = run_cli("reconcile", "--repo", str(clone))
        assert again.returncode == 0, again.stderr
        if "nothing to do" in again.stdout:
            break
    for job in ("job-00", "job-01"):
        assert json.loads(git(bare, "show", f"main:status/{job}.json"))["status"] == "SUCCESS"
    for user in USERS:
        assert (clone / ".deployments" / "srv" / user / "app" / "hello.txt").read_text("utf-8") == "hello 1\n"
