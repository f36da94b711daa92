"""The `command` driver through the real CLI, running a Terraform-like tool (tests/support/fake_tf.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.support.cli import run_main
from tests.support.driver_repos import (
    CONTENT,
    add_job,
    assert_no_secret,
    build_log,
    command_driver,
    job_yaml,
    make_driver_repo,
    reasons_of,
    reconcile,
    record,
    users_of,
)
from tests.support.repos import git

ALL_DEPLOYED = {"u1": "DEPLOYED", "u2": "DEPLOYED", "u3": "DEPLOYED"}


def state_of(state: Path, user: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((state / "srv" / f"{user}.json").read_text())
    return data


def test_apply_plan_destroy_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "tf-state"
    repo = make_driver_repo(tmp_path / "deploy", command_driver(state), {"deploy": job_yaml(greeting="hi")})
    result = reconcile(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert users_of(repo, "deploy") == ALL_DEPLOYED
    build = record(repo, "deploy")["build_id"]
    saved = state_of(state, "u2")
    assert sorted(saved["files"]) == ["config.json", "logo.bin", "main.tf"]  # type: ignore[call-overload]
    env = saved["env"]
    assert env == {  # exactly the documented variables, nothing else from the reconciler's environment
        "RECONCILER_TOKEN_GREETING": "hi", "RECONCILER_TOKEN_MODE": "ok", "RECONCILER_TOKEN_API_KEY": "none",
        "RECONCILER_USER": "u2", "RECONCILER_SERVER": "srv", "RECONCILER_ENVIRONMENT": "test-env",
        "RECONCILER_ORGANIZATION": "test-org", "RECONCILER_BUILD_ID": build,
        "RECONCILER_ACTION": "APPLY-AUTO", "RECONCILER_JOB": "deploy", "RECONCILER_DEFINITION": "app",
        "RECONCILER_MODULE_TYPE": "terraform/fake",
    }
    work = repo / ".git" / "reconciler" / "work"
    assert str(saved["cwd"]).startswith(str(work) + "/")  # a private folder, never the working tree
    assert not any(work.iterdir()), "the private working folders are removed afterwards"
    assert git(repo, "status", "--porcelain") == ""
    log = build_log(repo, "deploy")
    assert "u1 stdout: Apply complete! Resources: 3 added." in log

    add_job(repo, "again", job_yaml(greeting="hi"))
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "again") == {"u1": "UNCHANGED", "u2": "UNCHANGED", "u3": "UNCHANGED"}
    assert reasons_of(repo, "again")["u1"] == "no changes"  # reported through RECONCILER_RESULT_FILE

    add_job(repo, "preview", job_yaml(action="PLAN", greeting="changed", users=["u1"]))
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "preview") == {"u1": "PLANNED"}
    assert reasons_of(repo, "preview")["u1"] == "0 to add, 2 to change, 0 to destroy"
    assert "u1 stdout: Plan: 0 to add, 2 to change, 0 to destroy." in build_log(repo, "preview")

    add_job(repo, "remove", job_yaml(action="DESTROY", users=["u1"]))
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "remove") == {"u1": "DESTROYED"}
    assert not (state / "srv" / "u1.json").exists() and (state / "srv" / "u2.json").exists()
    assert "u1 stdout: module files: 3" in build_log(repo, "remove")  # DESTROY gets the module too
    add_job(repo, "remove-again", job_yaml(action="DESTROY", users=["u1"]))
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "remove-again") == {"u1": "UNCHANGED"}


def test_workdir_inside_the_content(tmp_path: Path) -> None:
    state = tmp_path / "tf-state"
    content = {**CONTENT, "app/modules/web/main.tf": 'name = "{{ greeting }}"\n'}
    repo = make_driver_repo(tmp_path / "deploy", command_driver(state, workdir="modules/web"),
                            {"deploy": job_yaml(users=["u1"], greeting="web")}, content=content)
    assert reconcile(repo).returncode == 0
    saved = state_of(state, "u1")
    assert str(saved["cwd"]).endswith("/content/modules/web")
    assert list(saved["files"]) == ["main.tf"]  # type: ignore[call-overload]


def test_workdir_escape_is_a_validation_problem(tmp_path: Path) -> None:
    repo = make_driver_repo(tmp_path / "deploy", command_driver(tmp_path / "s", workdir="../../outside"),
                            {"deploy": job_yaml()})
    result = run_main("validate", "--repo", str(repo), "--format", "json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    line = (repo / "servers/srv.yaml").read_text().splitlines().index("  workdir: ../../outside") + 1
    assert ("PATH_ESCAPE", "servers/srv.yaml", line) in [(p["code"], p["path"], p["line"]) for p in problems]
    assert reconcile(repo).returncode == 1
    assert not (repo / "status" / "deploy.json").exists(), "an invalid server's job never runs"


def test_missing_workdir_fails_the_user(tmp_path: Path) -> None:
    repo = make_driver_repo(tmp_path / "deploy", command_driver(tmp_path / "s", workdir="nowhere"),
                            {"deploy": job_yaml(users=["u1"])})
    assert reconcile(repo).returncode == 1
    reason = "workdir 'nowhere' is not a folder of the content of definition 'app'"
    assert reasons_of(repo, "deploy")["u1"] == reason


def test_non_zero_exit_fails_with_the_last_error_line(tmp_path: Path) -> None:
    repo = make_driver_repo(tmp_path / "deploy", command_driver(tmp_path / "s"),
                            {"deploy": job_yaml(users=["u1"], params={"mode": "fail"})})
    assert reconcile(repo).returncode == 1
    assert users_of(repo, "deploy") == {"u1": "FAILED"}
    reason = reasons_of(repo, "deploy")["u1"]
    assert reason.endswith("exited with code 3: Error: simulated provider failure for u1")
    assert "u1 stderr: Error: simulated provider failure for u1" in build_log(repo, "deploy")


def test_success_codes(tmp_path: Path) -> None:
    repo = make_driver_repo(tmp_path / "deploy", command_driver(tmp_path / "s", success_codes=[0, 3]),
                            {"deploy": job_yaml(users=["u1"], params={"mode": "fail"})})
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED"}


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie waiting for its reaper is dead


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    state = tmp_path / "s"
    repo = make_driver_repo(tmp_path / "deploy", command_driver(state, timeout=1),
                            {"deploy": job_yaml(users=["u1"], params={"mode": "sleep"})})
    started = time.monotonic()
    assert reconcile(repo).returncode == 1
    assert time.monotonic() - started < 30
    assert users_of(repo, "deploy") == {"u1": "FAILED"}
    assert reasons_of(repo, "deploy")["u1"] == "timed out after 1 s; the process group was killed"
    pids = [int(p) for p in (state / "u1.pids").read_text().split()]
    assert len(pids) == 2  # the tool and a grandchild it started
    deadline = time.monotonic() + 10
    while not all(_dead(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_dead(p) for p in pids), "the grandchild outlived the timeout"
    assert not any((repo / ".git/reconciler/work").iterdir())


def test_missing_action_and_missing_program(tmp_path: Path) -> None:
    driver = {"type": "command", "commands": {"APPLY-AUTO": [str(tmp_path / "no-such-tool"), "apply"]}}
    repo = make_driver_repo(tmp_path / "deploy", driver, {"deploy": job_yaml(users=["u1"]),
                                                          "preview": job_yaml(action="PLAN", users=["u1"])})
    assert reconcile(repo).returncode == 1
    assert reasons_of(repo, "deploy")["u1"].startswith("cannot start '")
    assert reasons_of(repo, "preview")["u1"] == "the server's command driver has no command for PLAN"


def test_shell_metacharacters_stay_text(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    keep = tmp_path / "keep"
    keep.write_text("still here")
    nasty = f"$(touch {canary}); rm -rf {keep} `touch {canary}` | tee {canary} && echo hi > {canary} ' \""
    state = tmp_path / "s"
    user_tokens = {"u2": {"content_tokens": {"greeting": nasty}}}
    repo = make_driver_repo(tmp_path / "deploy", command_driver(state),
                            {"deploy": job_yaml(greeting="plain", params={"api_key": nasty},
                                                user_tokens=user_tokens)})
    assert reconcile(repo).returncode == 1  # u2's config.json is broken by the quote: skipped
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED", "u2": "SKIPPED", "u3": "DEPLOYED"}
    env = state_of(state, "u1")["env"]
    assert env["RECONCILER_TOKEN_API_KEY"] == nasty  # type: ignore[index]
    add_job(repo, "main-tf-only", job_yaml(greeting=nasty, users=["u3"], on_failure="force"))
    assert reconcile(repo).returncode == 0
    assert users_of(repo, "main-tf-only") == {"u3": "FORCED"}
    assert state_of(state, "u3")["env"]["RECONCILER_TOKEN_GREETING"] == nasty  # type: ignore[index]
    assert not canary.exists() and keep.read_text() == "still here"


def test_secret_never_leaks_even_when_the_tool_prints_it(tmp_path: Path) -> None:
    secret = "Xq9-S3cr3t/Val+ue=&zz"
    env = {"DEPLOY_SECRET_DB": secret}
    state = tmp_path / "s"
    ref = {"secret": "DEPLOY_SECRET_DB"}
    repo = make_driver_repo(tmp_path / "deploy", command_driver(state),
                            {"deploy": job_yaml(greeting=ref, params={"api_key": ref, "mode": "echo"})})
    result = reconcile(repo, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state_of(state, "u1")["env"]["RECONCILER_TOKEN_API_KEY"] == secret  # type: ignore[index]
    log = build_log(repo, "deploy")
    assert "u1 stdout: RECONCILER_TOKEN_API_KEY=[REDACTED] url=[REDACTED] b64=" in log
    add_job(repo, "broken", job_yaml(greeting=ref, params={"api_key": ref, "mode": "fail"}))
    failed = reconcile(repo, env=env)
    logs = run_main("logs", "--repo", str(repo), record(repo, "deploy")["build_id"])
    assert_no_secret(repo, secret, result.stdout, result.stderr, failed.stdout, failed.stderr, logs.stdout)
    assert os.environ.get("DEPLOY_SECRET_DB") is None
