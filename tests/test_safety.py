"""Safety of effects: token values stay data, deployments stay inside their folder, and a job whose
ledger record was broken or removed by hand is never run again while every other job goes on.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.core.model import Definition, Server, User
from reconciler.drivers.base import DeployRequest, DriverContext
from reconciler.drivers.local import LocalDriver
from tests.support.cli import run_main
from tests.support.repos import commit_all, git, write

MARKER = "reconciler-safety-pwned"
HOSTILE = [
    "{{ other }}",
    "{{other}}{{ greeting }}",
    f"$(touch /tmp/{MARKER})",
    f"`touch /tmp/{MARKER}`",
    f"; touch /tmp/{MARKER}; rm -rf /",
    "${HOME} %PATH% \\n \\\\ \\u0000",
    "{% for x in y %}{{ x }}{% endfor %} {{ 7*7 }} ${7*7} #{7*7}",
    "' \" | & > < * ? ~ !",
]


def _repo(tmp_path: Path, jobs: dict[str, str]) -> Path:
    repo = tmp_path / "deploy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, ".gitignore", ".deployments/\n")
    write(repo, "servers/srv.yaml", "environment: test\norganization: org\ndriver: {type: local, path: "
          ".deployments/srv}\nusers: [{id: u1}, {id: u2}]\n")
    write(repo, "servers/cmd.yaml", json.dumps({
        "environment": "test", "organization": "org", "users": [{"id": "u1"}],
        "driver": {"type": "command", "commands": {"APPLY-AUTO": [sys.executable, "-c", ENV_DUMP,
                                                                  str(tmp_path / "env.json")]}}}))
    write(repo, "definitions/app.yaml", "module_type: test/content\ncontent: app\n"
          "content_tokens: [{name: greeting}, {name: other, default: OTHER}]\n"
          "parameter_tokens: [{name: flag, type: string, default: none}]\n")
    write(repo, "definitions/app/page.txt", "greeting={{ greeting }}\nother={{other}}\n")
    for name, text in jobs.items():
        write(repo, f"jobs/{name}.yaml", text)
    commit_all(repo, "initial")
    return repo


ENV_DUMP = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def _job(server: str, greeting: str, users: Any = "all", flag: str = "none") -> str:
    return json.dumps({"blocks": [{"definition": "app", "server": server, "users": users,
                                   "content_tokens": {"greeting": greeting},
                                   "parameter_tokens": {"flag": flag}}]})


def test_token_values_stay_data(tmp_path: Path) -> None:
    jobs = {f"hostile-{i}": _job("srv", value, users=["u1"]) for i, value in enumerate(HOSTILE)}
    jobs["command"] = _job("cmd", HOSTILE[2], flag=HOSTILE[4])
    # one pass per job so each lands in the same folder in turn; each result is checked right away
    repo = _repo(tmp_path, {})
    for name, text in jobs.items():
        write(repo, f"jobs/{name}.yaml", text)
        commit_all(repo, f"add {name}")
        result = run_main("reconcile", "--repo", str(repo), "--only", name)
        assert result.returncode == 0, result.stdout + result.stderr
        if name == "command":
            env = json.loads((tmp_path / "env.json").read_text("utf-8"))
            assert env["RECONCILER_TOKEN_GREETING"] == HOSTILE[2]
            assert env["RECONCILER_TOKEN_FLAG"] == HOSTILE[4]
            continue
        value = HOSTILE[int(name.split("-")[1])]
        page = (repo / ".deployments/srv/u1/app/page.txt").read_text("utf-8")
        assert page == f"greeting={value}\nother=OTHER\n"  # inserted once, never scanned again
        manifest = json.loads((repo / ".deployments/srv/u1/app/.deployment.json").read_text("utf-8"))
        assert manifest["job"] == name
    assert not Path(f"/tmp/{MARKER}").exists()
    assert not (repo / MARKER).exists() and not (tmp_path / MARKER).exists()


def _request(tmp_path: Path, user: str, definition: str, assets: dict[str, bytes]) -> DeployRequest:
    server = Server(name="srv", path="servers/srv.yaml", environment="e", organization="o",
                    driver={"type": "local", "path": "targets"}, users=(User(user),))
    defn = Definition(name=definition, path=f"definitions/{definition}.yaml", module_type="t/x", description="",
                      content=None, content_tokens=(), parameter_tokens=())
    return DeployRequest(job="j", build_id="b", action="APPLY-AUTO", server=server, definition=defn,
                         user=server.users[0], assets=assets, content_digest="sha256:0", parameters={},
                         public_parameters={}, tokens={}, log=lambda message: None)


def _deploy(repo: Path, request: DeployRequest) -> str:
    """The driver's verdict; a raised error is how the local driver refuses (the engine records FAILED)."""
    try:
        return LocalDriver({"type": "local", "path": "targets"}, DriverContext(repo, None, {})).run(request).status
    except ValueError:
        return "FAILED"


def _files_outside(root: Path, allowed: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(allowed)]


@pytest.mark.parametrize("user, definition, asset", [
    ("..", "app", "a.txt"),
    ("u1/../..", "app", "a.txt"),
    ("u1", "../../escape", "a.txt"),
    ("/tmp", "app", "a.txt"),
    ("u1", "app", "../../../escape.txt"),
    ("u1", "app", "/tmp/escape.txt"),
    ("u1", "app", ".deployment.json"),
    ("u1", "app", "sub/../../../escape.txt"),
])
def test_the_local_driver_never_writes_outside_its_folder(tmp_path: Path, user: str, definition: str,
                                                         asset: str) -> None:
    """Validation refuses such names first; the driver refuses them again (defence in depth)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    request = _request(tmp_path, user, definition, {asset: b"x", "ok.txt": b"ok"})
    assert _deploy(repo, request) == "FAILED"
    assert _files_outside(tmp_path, repo / "targets" / "u1" / "app") == []


@pytest.mark.parametrize("asset", [".", "..", "sub/..", ".deployment.json", "../escape.txt"])
def test_a_refused_asset_leaves_no_staging_folder(tmp_path: Path, asset: str) -> None:
    """An asset path refused after others were written (a fuzz run found `.`) leaves nothing behind: no
    staging folder beside the target, no half deployment, and an earlier deployment stays as it was."""
    repo = tmp_path / "repo"
    repo.mkdir()
    assert _deploy(repo, _request(tmp_path, "u1", "app", {"ok.txt": b"ok"})) == "DEPLOYED"
    before = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*"))
    changed = replace(_request(tmp_path, "u1", "app", {"new.txt": b"new", asset: b"x"}), content_digest="sha256:1")
    assert _deploy(repo, changed) == "FAILED"
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == before
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert _deploy(fresh, _request(tmp_path, "u1", "app", {"new.txt": b"new", asset: b"x"})) == "FAILED"
    assert [p for p in fresh.rglob("*") if not p.is_dir()] == []
    assert not any(p.name.startswith(".app.") for p in fresh.rglob("*"))


def _no_file_is_a_folder(assets: dict[str, bytes]) -> bool:
    """Git cannot hold both `a` and `a/b`; neither can a content folder."""
    return not any(other.startswith(rel + "/") for rel in assets for other in assets)


@settings(max_examples=150, deadline=None)
@example(user="u1", definition="app", assets={"a": b"", ".": b""})  # once left its staging folder behind
@given(user=st.from_regex(r"\A(?!\.)(?!.*\.\.)[A-Za-z0-9._@-]{1,20}\Z"),
       definition=st.from_regex(r"\A(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,20}\Z"),
       assets=st.dictionaries(st.from_regex(r"\A[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,2}\Z"), st.binary(max_size=8),
                              max_size=3).filter(_no_file_is_a_folder))
def test_a_valid_name_always_deploys_inside_its_folder(tmp_path_factory: Any, user: str, definition: str,
                                                       assets: dict[str, bytes]) -> None:
    """Any user id and definition name the schemas accept lands in <path>/<user>/<definition>/."""
    base = tmp_path_factory.mktemp("prop")
    repo = base / "repo"
    repo.mkdir()
    request = _request(base, user, definition, assets)
    status = _deploy(repo, request)
    folder = repo / "targets" / user / definition
    assert _files_outside(base, folder) == []
    plain = all(part not in (".", "..") for rel in assets for part in rel.split("/")) \
        and ".deployment.json" not in assets
    if plain:
        assert status == "DEPLOYED"
        assert (folder / ".deployment.json").is_file()
        assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {
            *assets, ".deployment.json"}


def test_a_symlink_in_the_repo_never_carries_a_target_outside(tmp_path: Path) -> None:
    repo = _repo(tmp_path, {})
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink("../outside", repo / "deploy")
    write(repo, "servers/linked.yaml", "environment: t\norganization: o\ndriver: {type: local, path: deploy/x}\n"
          "users: [{id: u1}]\n")
    write(repo, "jobs/linked.yaml", _job("linked", "hi"))
    write(repo, "jobs/fine.yaml", _job("srv", "hi"))
    commit_all(repo, "a server whose relative path goes through a committed symlink")
    result = run_main("reconcile", "--repo", str(repo))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert list(outside.rglob("*")) == []
    record = json.loads((repo / "status/linked.json").read_text("utf-8"))
    assert record["status"] == "FAILURE"
    assert "outside the repository" in record["blocks"][0]["users"]["u1"]["reason"]
    assert json.loads((repo / "status/fine.json").read_text("utf-8"))["status"] == "SUCCESS"


def _ran(stdout: str) -> set[str]:
    return {line.split(":", 1)[0] for line in stdout.splitlines() if " (build " in line}


@pytest.mark.parametrize("tamper", ["remove", "truncate", "replace-with-directory", "rename", "symlink",
                                    "empty"])
def test_a_job_whose_record_was_tampered_with_never_runs_again(tmp_path: Path, tamper: str) -> None:
    repo = _repo(tmp_path, {"victim": _job("srv", "first")})
    first = run_main("reconcile", "--repo", str(repo))
    assert _ran(first.stdout) == {"victim"}, first.stdout + first.stderr
    deployed = (repo / ".deployments/srv/u1/app/.deployment.json").read_text("utf-8")
    record = repo / "status/victim.json"
    if tamper == "remove":
        git(repo, "rm", "-q", "status/victim.json")
    elif tamper == "truncate":
        record.write_text(record.read_text("utf-8")[:40], "utf-8")
    elif tamper == "replace-with-directory":
        git(repo, "rm", "-q", "status/victim.json")
        write(repo, "status/victim.json/README", "not a record\n")
    elif tamper == "rename":
        git(repo, "mv", "status/victim.json", "status/victim.json.bak")
    elif tamper == "symlink":
        record.unlink()
        os.symlink("../jobs/victim.yaml", record)
    elif tamper == "empty":
        record.write_text("", "utf-8")
    commit_all(repo, f"hand edit of the ledger: {tamper}")
    for round_ in range(3):  # pass after pass, new jobs run and the victim never does
        write(repo, f"jobs/later-{round_}.yaml", _job("srv", f"later {round_}", users=["u2"]))
        commit_all(repo, f"add later-{round_}")
        result = run_main("reconcile", "--repo", str(repo))
        assert "Traceback" not in result.stderr
        assert result.returncode == 1, result.stdout + result.stderr
        assert _ran(result.stdout) == {f"later-{round_}"}, result.stdout + result.stderr
        assert "status/victim.json" in result.stderr and ("LEDGER_INVALID" in result.stderr
                                                         or "LEDGER_TAMPERED" in result.stderr)
    assert (repo / ".deployments/srv/u1/app/.deployment.json").read_text("utf-8") == deployed
    status = json.loads(run_main("status", "--repo", str(repo), "--format", "json").stdout)
    assert {row["job"]: row["status"] for row in status}["victim"] == "INVALID"


def test_a_killed_runs_staging_and_old_folders_are_removed_once_and_redeploys_replace(tmp_path: Path) -> None:
    """A kill can leave `.app.tmp-*` and `.app.old-*` beside the target; the next deployment removes them (and
    only them), and later deployments to the same target in the same pass replace the content atomically."""
    driver = LocalDriver({"type": "local", "path": "targets"}, DriverContext(tmp_path, None, {}))
    user_dir = tmp_path / "targets" / "u1"
    for name in (".app.tmp-dead0001", ".app.old-dead0002"):
        (user_dir / name).mkdir(parents=True)
        (user_dir / name / "half.txt").write_text("half", "utf-8")
    (user_dir / ".other.tmp-keep").mkdir()  # another definition's: not this target's business
    first = _request(tmp_path, "u1", "app", {"a.txt": b"one"})
    assert driver.run(first).status == "DEPLOYED"
    assert sorted(p.name for p in user_dir.iterdir()) == [".other.tmp-keep", "app"]
    second = replace(first, content_digest="sha256:1", assets={"b.txt": b"two"})
    assert driver.run(second).status == "DEPLOYED"
    assert sorted(p.name for p in (user_dir / "app").iterdir()) == [".deployment.json", "b.txt"]
    assert sorted(p.name for p in user_dir.iterdir()) == [".other.tmp-keep", "app"]
    assert json.loads((user_dir / "app" / ".deployment.json").read_text("utf-8"))["content_digest"] == "sha256:1"
