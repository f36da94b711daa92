"""The failure dialog made declarative (SPEC section 2): `skip`, `force` and `abort` give the same
per-user results with every driver, for driver errors, timeouts and broken assets alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.driver_repos import (
    command_driver,
    http_driver,
    job_yaml,
    local_driver,
    make_driver_repo,
    reasons_of,
    reconcile,
    record,
    users_of,
)
from tests.support.http_target import Fault, Target


@dataclass
class Setup:
    driver: dict[str, Any]
    params: dict[str, Any]  # parameter tokens for u2 (the failing user)
    deployed: Callable[[Path, str], bool]
    prepare: Callable[[Path], None] = lambda repo: None


@pytest.fixture
def target() -> Iterator[Target]:
    with Target() as server:
        yield server


def setup_for(driver: str, kind: str, tmp_path: Path, target: Target) -> Setup:
    state = tmp_path / "tf-state"
    if driver == "local":
        def blocked(repo: Path) -> None:  # u2's target folder cannot be created: an I/O error
            (repo / ".deployments/srv").mkdir(parents=True)
            (repo / ".deployments/srv/u2").write_text("a file where a folder must go")

        return Setup(local_driver(), {}, lambda repo, u: (repo / ".deployments/srv" / u / "app").is_dir(),
                     blocked if kind == "error" else lambda repo: None)
    if driver == "http":
        if kind == "error":
            target.fail_user("u2", Fault("status", 500))
        elif kind == "timeout":
            target.fail_user("u2", Fault("slow", seconds=2.0, status=504, then_apply=False))
        return Setup(http_driver(target.url, retries=1, timeout=0.5), {},
                     lambda repo, u: (u, "app") in target.deployments)
    mode = {"error": "fail", "timeout": "sleep"}.get(kind)
    return Setup(command_driver(state, timeout=1), {"mode": mode} if mode else {},
                 lambda repo, u: (state / "srv" / f"{u}.json").exists())


EXPECTED = {
    ("error", "skip"): ({"u1": "DEPLOYED", "u2": "FAILED", "u3": "DEPLOYED"},
                        {"u1": "DEPLOYED", "u2": "FAILED", "u3": "DEPLOYED"}),
    ("error", "force"): ({"u1": "DEPLOYED", "u2": "FAILED", "u3": "DEPLOYED"},
                         {"u1": "DEPLOYED", "u2": "FAILED", "u3": "DEPLOYED"}),
    ("error", "abort"): ({"u1": "DEPLOYED", "u2": "FAILED", "u3": "NOT_RUN"},
                         {"u1": "NOT_RUN", "u2": "NOT_RUN", "u3": "NOT_RUN"}),
    ("broken", "skip"): ({"u1": "DEPLOYED", "u2": "SKIPPED", "u3": "DEPLOYED"},
                         {"u1": "DEPLOYED", "u2": "SKIPPED", "u3": "DEPLOYED"}),
    ("broken", "force"): ({"u1": "DEPLOYED", "u2": "FORCED", "u3": "DEPLOYED"},
                          {"u1": "DEPLOYED", "u2": "FORCED", "u3": "DEPLOYED"}),
    ("broken", "abort"): ({"u1": "NOT_RUN", "u2": "FAILED", "u3": "NOT_RUN"},
                          {"u1": "NOT_RUN", "u2": "NOT_RUN", "u3": "NOT_RUN"}),
}
EXPECTED.update({("timeout", policy): EXPECTED[("error", policy)] for policy in ("skip", "force", "abort")})
CASES = [(d, k, p) for d in ("local", "http", "command") for k in ("error", "timeout", "broken")
         for p in ("skip", "force", "abort") if not (d == "local" and k == "timeout")]


@pytest.mark.parametrize(("driver", "kind", "policy"), CASES, ids=["-".join(c) for c in CASES])
def test_policy_is_the_same_for_every_driver(driver: str, kind: str, policy: str, tmp_path: Path,
                                             target: Target) -> None:
    setup = setup_for(driver, kind, tmp_path, target)
    u2: dict[str, Any] = {}
    if setup.params:
        u2["parameter_tokens"] = setup.params
    if kind == "broken":
        u2["content_tokens"] = {"greeting": 'an "unescaped quote'}  # config.json no longer parses for u2
    job = job_yaml(on_failure=policy, user_tokens={"u2": u2} if u2 else None, blocks=2)
    repo = make_driver_repo(tmp_path / "deploy", setup.driver, {"job": job})
    setup.prepare(repo)
    result = reconcile(repo, "--concurrency", "1")  # one user at a time: "not yet started" is well defined
    forced = (kind, policy) == ("broken", "force")  # FORCED is a warning: the job succeeds
    assert result.returncode == (0 if forced else 1), result.stdout + result.stderr
    first, second = EXPECTED[(kind, policy)]
    assert (users_of(repo, "job", 0), users_of(repo, "job", 1)) == (first, second)
    assert record(repo, "job")["status"] == ("SUCCESS" if forced else "FAILURE")
    reason = reasons_of(repo, "job", 0)["u2"]
    if kind == "broken":
        assert "config.json is not valid JSON after rendering" in reason
    elif kind == "timeout":
        assert "timed out after" in reason
    else:
        assert reason  # the driver's own words: an HTTP status, an exit code, an I/O error
    for user, status in first.items():
        deployed = status in ("DEPLOYED", "FORCED")
        assert setup.deployed(repo, user) == deployed, f"{user} ({status}) deployed={not deployed}"
    if policy == "abort":
        not_run = reasons_of(repo, "job", 1)["u1"]
        assert not_run.startswith("not run: ")
