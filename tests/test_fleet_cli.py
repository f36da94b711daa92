"""Fleet mode's command line: without the extra it says how to install it; the worker refuses what would
weaken the fence; reconciler.yaml's `executor:`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.core.settings import ExecutorConfig, parse_settings
from reconciler.run.executors import chosen_config
from tests.support.cli import run_cli

HINT = "pip install 'gitops-reconciler[fleet]'"


@pytest.fixture
def without_celery(tmp_path: Path) -> dict[str, str]:
    """An environment where `import celery` fails, as on an install without the extra."""
    shadow = tmp_path / "shadow"
    (shadow / "celery").mkdir(parents=True)
    (shadow / "celery" / "__init__.py").write_text("raise ImportError('No module named celery')\n")
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_worker_without_the_extra_exits_2_with_the_install_command(without_celery: dict[str, str]) -> None:
    result = run_cli("worker", "--broker", "redis://127.0.0.1:1/0", env=without_celery)
    assert result.returncode == 2, result.stderr
    assert HINT in result.stderr and "Traceback" not in result.stderr


def test_reconcile_executor_celery_without_the_extra_exits_2(make_repo: object, without_celery: dict[str, str],
                                                           tmp_path: Path) -> None:
    repo = make_repo()  # type: ignore[operator]
    for flags in (["--executor", "celery"], ["--broker", "redis://127.0.0.1:1/0"]):
        result = run_cli("reconcile", "--repo", str(repo), *flags, env=without_celery)
        assert result.returncode == 2, result.stderr
        assert HINT in result.stderr and "Traceback" not in result.stderr
    assert run_cli("reconcile", "--repo", str(repo), "--executor", "thread", env=without_celery).returncode == 0


def test_worker_needs_a_broker() -> None:
    pytest.importorskip("celery")
    env = {k: v for k, v in os.environ.items() if k != "RECONCILER_BROKER_URL"}
    result = run_cli("worker", env=env)
    assert result.returncode == 2 and "--broker" in result.stderr


def test_worker_refuses_a_broker_that_would_lose_fences(tmp_path: Path) -> None:
    pytest.importorskip("celery")
    from tests.support.fleet import RedisServer

    unsafe = RedisServer(tmp_path / "redis", fsync="everysec").start()
    try:
        result = run_cli("worker", "--broker", unsafe.url, "--state-dir", str(tmp_path / "state"), timeout=60)
        assert result.returncode == 2, result.stderr
        assert "appendfsync" in result.stderr and "always" in result.stderr and "Traceback" not in result.stderr
    finally:
        unsafe.stop()


def test_reconcile_refuses_an_unsafe_broker_before_claiming_and_a_wrong_db_is_one_line(tmp_path: Path) -> None:
    """Workers refuse a Redis that can lose fences, so a pass that used it would claim and wait for nobody:
    it refuses too, before any claim (exit 2, one line). A DB index the server does not have: the same."""
    pytest.importorskip("celery")
    from tests.support.fleet import RedisServer, block, effect_driver, fleet_repo, job_yaml
    from tests.support.repos import git

    repo, _ = fleet_repo(tmp_path, {"srv": (effect_driver(tmp_path / "effects.jsonl"), ["u1"])},
                         {"job1": job_yaml([block("srv")])})
    head = git(repo, "rev-parse", "HEAD")
    unsafe = RedisServer(tmp_path / "redis", fsync="everysec").start()
    try:
        result = run_cli("reconcile", "--repo", str(repo), "--broker", unsafe.url, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "not safe for fences" in result.stderr and "nothing was claimed" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        wrong_db = unsafe.url.rsplit("/", 1)[0] + "/99"
        result = run_cli("reconcile", "--repo", str(repo), "--broker", wrong_db, timeout=60)
        assert result.returncode == 2 and "DB index" in result.stderr and "Traceback" not in result.stderr
    finally:
        unsafe.stop()
    assert git(repo, "rev-parse", "HEAD") == head, "nothing claimed"


def test_worker_with_an_unreachable_broker_exits_2(tmp_path: Path) -> None:
    pytest.importorskip("celery")
    from tests.support.fleet import free_port

    result = run_cli("worker", "--broker", f"redis://:hunter2-password@127.0.0.1:{free_port()}/0",
                     "--state-dir", str(tmp_path / "state"), timeout=60)
    assert result.returncode == 2 and "cannot be reached" in result.stderr
    assert "hunter2-password" not in result.stderr, "the broker password is never printed"


def test_settings_executor() -> None:
    settings, problems = parse_settings(b"executor:\n  type: celery\n  broker: redis://10.0.0.5:6379/1\n")
    assert not problems and settings.executor == ExecutorConfig("celery", "redis://10.0.0.5:6379/1")
    assert parse_settings(b"concurrency: 2\n")[0].executor == ExecutorConfig("thread", None)
    _, problems = parse_settings(b"executor:\n  type: celery\n  broker: redis://:pw@host:6379/0\n")
    assert [(p.line, p.code) for p in problems] == [(3, "SECRET_IN_SETTINGS")]
    _, problems = parse_settings(b"executor:\n  type: kubernetes\n")
    assert problems and problems[0].line == 2
    _, problems = parse_settings(b"executor:\n  type: celery\n  brokr: redis://x\n")
    assert problems and "brokr" in problems[0].message


def test_flags_over_environment_over_settings() -> None:
    file = ExecutorConfig("celery", "redis://file:6379/0")
    env = {"RECONCILER_BROKER_URL": "redis://env:6379/0"}
    assert chosen_config(None, file, {}) == file
    assert chosen_config(None, file, env).broker == "redis://env:6379/0"
    assert chosen_config(ExecutorConfig("celery", "redis://flag:6379/0"), file, env).broker == "redis://flag:6379/0"
    assert chosen_config(ExecutorConfig("thread"), file, env) == ExecutorConfig("thread", None)
    assert chosen_config(None, ExecutorConfig(), env) == ExecutorConfig("thread", None)
