"""The post-receive hook: real bare repositories, real `git push`, the real hook firing."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import run_main
from tests.support.repos import GIT_ENV, GREETING_JOB, commit_all, committed_record, git, wait_for, write

JOB = GREETING_JOB
SLOW = {"RECONCILER_FAILPOINTS": "user.before-apply=sleep:2"}  # every user deployment takes 2 s


def push(clone: Path, *args: str, env: dict[str, str] | None = None, rebase: bool = False) -> str:
    """Push like a person: when the reconciler pushed status commits meanwhile, pull --rebase and retry."""
    for _ in range(10):
        proc = subprocess.run(["git", "push", "-q", "origin", *args], cwd=clone, capture_output=True,
                              text=True, env={**os.environ, **GIT_ENV, **(env or {})}, timeout=60,
                              check=False)
        if proc.returncode == 0:
            return proc.stderr
        # the reconciler pushed its status commits first ("fetch first"), or while this push was on its way
        assert rebase and ("fetch first" in proc.stderr or "cannot lock ref" in proc.stderr), proc.stderr
        git(clone, "pull", "-q", "--rebase")
    raise AssertionError("could not push")


def log_text(bare: Path) -> str:
    path = bare / "reconciler" / "hook.log"
    return path.read_text("utf-8") if path.exists() else ""


def settled(bare: Path) -> bool:
    text = log_text(bare)
    return text.count("pass started") == text.count("pass finished") > 0 and \
        not (bare / "reconciler" / "pending").exists()


def server_setup(make_repo: Callable[..., Path], env: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A bare repository with the hook installed (with `env` as its --env-file), and a clone to push from."""
    source = make_repo("source")
    bare = source.parent / "deploy.git"
    git(source.parent, "clone", "-q", "--bare", str(source), str(bare))
    flags = []
    if env is not None:
        env_file = source.parent / "runner.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), "utf-8")
        env_file.chmod(0o600)
        flags = ["--env-file", str(env_file)]
    result = run_main("hook", "install", "--bare", str(bare), *flags)
    assert result.returncode == 0, result.stderr
    assert f"log: {bare.resolve() / 'reconciler' / 'hook.log'}" in result.stdout
    clone = source.parent / "laptop"
    git(source.parent, "clone", "-q", str(bare), str(clone))
    return bare, clone


def test_install_writes_an_executable_hook_and_refuses_foreign_ones(make_repo: Callable[..., Path]) -> None:
    bare, _ = server_setup(make_repo)
    hook = bare / "hooks" / "post-receive"
    assert os.access(hook, os.X_OK)
    assert "reconciler.triggers.push_hook post-receive" in hook.read_text("utf-8")
    again = run_main("hook", "install", "--bare", str(bare), "--branch", "main")
    assert again.returncode == 0  # our own hook is replaced without --force
    hook.write_text("#!/bin/sh\necho mine\n", "utf-8")
    refused = run_main("hook", "install", "--bare", str(bare))
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert hook.read_text("utf-8") == "#!/bin/sh\necho mine\n"
    assert run_main("hook", "install", "--bare", str(bare), "--force").returncode == 0
    not_bare = run_main("hook", "install", "--bare", str(make_repo("plain")))
    assert not_bare.returncode == 2 and "not a bare repository" in not_bare.stderr


def test_push_starts_a_background_pass_without_waiting(make_repo: Callable[..., Path]) -> None:
    bare, clone = server_setup(make_repo, env=SLOW)
    write(clone, "jobs/first.yaml", JOB % "hello")
    commit_all(clone, "add first")
    stderr = push(clone, "main")
    assert f"tail -f {bare.resolve() / 'reconciler' / 'hook.log'}" in stderr  # where to look
    # the push returned before the deployment (2 s a user) ended: it did not wait, however loaded the machine
    assert committed_record(bare, "first") is None or committed_record(bare, "first")["status"] != "SUCCESS"
    wait_for(lambda: (committed_record(bare, "first") or {}).get("status") == "SUCCESS")
    wait_for(lambda: settled(bare))
    text = log_text(bare)
    assert text.count("pass requested") == 1  # the pass's own status pushes started nothing
    assert '"event": "job.finished"' in text and "first: SUCCESS" in text
    deployed = bare / "reconciler" / "worktree" / ".deployments" / "srv" / "u1" / "app" / "config.json"
    assert json.loads(deployed.read_text("utf-8")) == {"greeting": "hello"}
    git(clone, "pull", "-q", "--ff-only")
    assert git(clone, "log", "-1", "--format=%s").startswith("status:")


def test_other_branches_and_status_only_pushes_start_nothing(make_repo: Callable[..., Path]) -> None:
    bare, clone = server_setup(make_repo)
    git(clone, "checkout", "-q", "-b", "feature")
    write(clone, "jobs/draft.yaml", JOB % "draft")
    commit_all(clone, "a draft")
    push(clone, "feature")
    git(clone, "checkout", "-q", "main")
    write(clone, "status/notes.txt", "x\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "status: something\n\nReconciler-Build: 20260101T000000Z-x-abcdef")
    push(clone, "main")
    time.sleep(1.0)
    assert log_text(bare) == "" and not (bare / "reconciler" / "pending").exists()
    write(clone, "status/forged.txt", "x\n")  # a human commit in the ledger dir is not status-only
    commit_all(clone, "no trailer")
    push(clone, "main")
    assert "pass requested" in log_text(bare)
    wait_for(lambda: settled(bare))


def test_pushes_close_together_coalesce(make_repo: Callable[..., Path]) -> None:
    bare, clone = server_setup(make_repo, env=SLOW)
    for i, name in enumerate(("one", "two", "three")):
        write(clone, f"jobs/{name}.yaml", JOB % name)
        commit_all(clone, f"add {name}")
        push(clone, "main", rebase=True)
        assert (committed_record(bare, name) or {}).get("status") != "SUCCESS"  # the push did not wait for it
        if i == 0:  # the first pass is busy with `one` (2 s per user) while the next pushes arrive
            wait_for(lambda: "pass started" in log_text(bare))
    wait_for(lambda: all((committed_record(bare, n) or {}).get("status") == "SUCCESS" for n in ("one", "two", "three")))
    wait_for(lambda: settled(bare))
    text = log_text(bare)
    assert text.count("pass requested") == 3
    assert text.count("pass started") == 2, text  # three pushes, one extra pass


def test_a_pass_gets_the_env_file_never_the_pushers_environment(make_repo: Callable[..., Path]) -> None:
    """SPEC 9.1 rule 10 through the hook: the secret comes from `--env-file`; a variable set only in the
    pusher's shell does not reach the pass (its job stays PENDING, SECRET_UNSET); no value is logged."""
    from_file, from_shell = "value-from-the-env-file", "value-from-the-pushers-shell"
    bare, clone = server_setup(make_repo, env={"DEPLOY_SECRET_GREETING": from_file})
    write(clone, "jobs/first.yaml", JOB.replace('"%s"', "{secret: DEPLOY_SECRET_GREETING}"))
    write(clone, "jobs/second.yaml", JOB.replace('"%s"', "{secret: DEPLOY_SECRET_SHELL_ONLY}"))
    commit_all(clone, "two jobs reading secrets")
    push(clone, "main", env={"DEPLOY_SECRET_GREETING": from_shell, "DEPLOY_SECRET_SHELL_ONLY": from_shell})
    wait_for(lambda: (committed_record(bare, "first") or {}).get("status") == "SUCCESS")
    wait_for(lambda: settled(bare))
    deployed = bare / "reconciler" / "worktree" / ".deployments" / "srv" / "u1" / "app" / "config.json"
    assert json.loads(deployed.read_text("utf-8")) == {"greeting": from_file}
    assert committed_record(bare, "second") is None  # not claimed: the shell's variable never reached the pass
    text = log_text(bare)
    assert "SECRET_UNSET" in text and "DEPLOY_SECRET_SHELL_ONLY" in text
    assert from_file not in text and from_shell not in text


def test_a_broken_env_file_is_refused_without_showing_it(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    source = make_repo("source")
    bare = source.parent / "deploy.git"
    git(source.parent, "clone", "-q", "--bare", str(source), str(bare))
    env_file = tmp_path / "bad.env"
    env_file.write_text("DEPLOY_SECRET_OK=fine-value-here\nthis line is secret-looking garbage\n", "utf-8")
    result = run_main("hook", "install", "--bare", str(bare), "--env-file", str(env_file))
    assert result.returncode == 2 and "line 2 is not KEY=VALUE" in result.stderr
    assert "garbage" not in result.stderr and "fine-value-here" not in result.stderr
