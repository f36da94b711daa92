"""Run the real CLI with one slow deployment target: the `local` driver's apply for user SLOW_USER of job SLOW_JOB
cuts this clone off from its remote (as a partition would), then takes SLOW_SECONDS (as a hung mount would). Every
apply is appended to APPLY_LOG as `seconds job user`, and the end of the slow one as `seconds SLOW-END`.

    python -m tests.support.slow_local reconcile --remote origin
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from reconciler.cli import main
from reconciler.drivers import local
from reconciler.drivers.base import DeployRequest, Outcome

_apply = local.LocalDriver.apply


def _log(line: str) -> None:
    with open(os.environ["APPLY_LOG"], "a", encoding="utf-8") as handle:
        handle.write(f"{time.time():.3f} {line}\n")


def apply(self: local.LocalDriver, request: DeployRequest) -> Outcome:
    _log(f"{request.job} {request.user.id}")
    if request.job == os.environ["SLOW_JOB"] and request.user.id == os.environ["SLOW_USER"]:
        subprocess.run(["git", "remote", "set-url", "origin", "/nonexistent/remote.git"], check=True)
        time.sleep(float(os.environ["SLOW_SECONDS"]))
        _log("SLOW-END")
    return _apply(self, request)


local.LocalDriver.apply = apply  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
