"""A third-party driver installed from its own package (tests/plugin_pkg) through the entry-point group.

The package is built and installed offline with pip into a temporary folder that only the reconciler
subprocesses see (PYTHONPATH), so the test environment itself is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.driver_repos import (
    add_job,
    job_yaml,
    make_driver_repo,
    reasons_of,
    reconcile_in_a_process,
    users_of,
)
from tests.support.repos import ROOT

PLUGIN_SOURCE = ROOT / "tests" / "plugin_pkg"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(PLUGIN_SOURCE, source)  # build outside the repo: no build/ or egg-info in the tree
    site = work / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--target", str(site), str(source)],
                          capture_output=True, text=True, check=False, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "reconciler_demo_driver").is_dir()
    return site


def with_plugin(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def test_plugin_driver_plans_applies_and_destroys(tmp_path: Path, plugin_path: Path) -> None:
    target = tmp_path / "demo-target"
    env = with_plugin(plugin_path)
    repo = make_driver_repo(tmp_path / "deploy", {"type": "demo", "path": str(target)},
                            {"deploy": job_yaml(params={"api_key": "k"})})
    assert run_cli("validate", "--repo", str(repo), env=env).returncode == 0
    result = reconcile_in_a_process(repo, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert users_of(repo, "deploy") == {"u1": "DEPLOYED", "u2": "DEPLOYED", "u3": "DEPLOYED"}
    written = json.loads((target / "u2--app.json").read_text())
    assert written["assets"] == ["config.json", "logo.bin", "main.tf"]
    assert written["parameters"] == {"mode": "ok", "api_key": "k"}

    add_job(repo, "preview", job_yaml(action="PLAN", users=["u1"]))
    add_job(repo, "remove", job_yaml(action="DESTROY", users=["u1"]))
    assert reconcile_in_a_process(repo, env=env).returncode == 0
    assert reasons_of(repo, "preview") == {"u1": "would update"}
    assert users_of(repo, "remove") == {"u1": "DESTROYED"}
    assert not (target / "u1--app.json").exists() and (target / "u2--app.json").exists()


def test_plugin_settings_problems_are_validation_problems(tmp_path: Path, plugin_path: Path) -> None:
    repo = make_driver_repo(tmp_path / "deploy", {"type": "demo", "path": "relative/dir"})
    result = run_cli("validate", "--repo", str(repo), "--format", "json", env=with_plugin(plugin_path))
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert [(p["path"], p["code"], p["message"]) for p in problems] == [
        ("servers/srv.yaml", "DRIVER_SETTINGS", "the demo driver needs an absolute `path`")]


def test_unknown_driver_names_the_installed_ones(tmp_path: Path, plugin_path: Path) -> None:
    repo = make_driver_repo(tmp_path / "deploy", {"type": "nosuch", "path": "/x"}, {"deploy": job_yaml()})
    for env, installed in (({}, "command, http, local"), (with_plugin(plugin_path), "command, demo, http, local")):
        result = run_cli("validate", "--repo", str(repo), "--format", "json", env=env)
        assert result.returncode == 1
        unknown = [p for p in json.loads(result.stdout)["problems"] if p["code"] == "DRIVER_UNKNOWN"]
        assert len(unknown) == 1 and unknown[0]["path"] == "servers/srv.yaml"
        assert installed in unknown[0]["message"], unknown[0]["message"]
    # without the plugin installed, a server using it is invalid and its jobs never run
    repo2 = make_driver_repo(tmp_path / "deploy2", {"type": "demo", "path": "/x"}, {"deploy": job_yaml()})
    assert reconcile_in_a_process(repo2).returncode == 1
    assert not (repo2 / "status" / "deploy.json").exists()


def test_plugin_errors_follow_the_failure_policy(tmp_path: Path, plugin_path: Path) -> None:
    target = tmp_path / "demo-target"
    driver = {"type": "demo", "path": str(target), "fail_users": ["u2"]}
    repo = make_driver_repo(tmp_path / "deploy", driver, {"skip": job_yaml(on_failure="skip"),
                                                          "abort": job_yaml(on_failure="abort", blocks=2)})
    assert reconcile_in_a_process(repo, "--concurrency", "1", env=with_plugin(plugin_path)).returncode == 1
    assert users_of(repo, "skip") == {"u1": "DEPLOYED", "u2": "FAILED", "u3": "DEPLOYED"}
    assert reasons_of(repo, "skip")["u2"] == "driver error: RuntimeError: demo target refused u2"
    assert users_of(repo, "abort", 0) == {"u1": "DEPLOYED", "u2": "FAILED", "u3": "NOT_RUN"}
    assert users_of(repo, "abort", 1) == {"u1": "NOT_RUN", "u2": "NOT_RUN", "u3": "NOT_RUN"}
