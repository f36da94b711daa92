"""Fixtures only: real git repositories in temp dirs and `reconciler serve` on 127.0.0.1. The builders they use
(and that tests import) live in tests/support/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import fuzz
from tests.support.cli import run_main
from tests.support.repos import new_repo
from tests.support.serve import WEBHOOK_SECRET, ServeProcess, start_serve

fuzz.load_profiles()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. Most of the suite's time is spent waiting (for subprocesses, leases,
    sockets, a browser), not computing: on 2 cores, 4 workers take the suite from 12 minutes to 6."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(2 * cores, 16)


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A fresh `reconciler init` repo (the bundled example, committed on main)."""
    repo = tmp_path / "deploy"
    result = run_main("init", str(repo))
    assert result.returncode == 0, result.stderr
    return repo


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """A minimal repo: server `srv` (users u1..u3, local driver), definition `app` with `greeting`."""

    def factory(name: str = "repo", jobs: dict[str, str] | None = None, content: str | None = None) -> Path:
        return new_repo(tmp_path / name, jobs, content)

    return factory


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """start(repo, *flags, secret=WEBHOOK_SECRET) -> ServeProcess; stopped (SIGTERM) after the test."""
    started: list[ServeProcess] = []

    def start(repo: Path, *flags: str, secret: str | None = WEBHOOK_SECRET) -> ServeProcess:
        server = start_serve(repo, tmp_path / f"serve-{len(started)}.log", *flags, secret=secret)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()
