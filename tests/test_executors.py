"""The thread executor runs short in-process calls (`Driver.inline_calls`, the `local` driver) on the caller's
thread, and sends a driver to its pool for good once one call proves slow (a slow mount under `local`)."""

from __future__ import annotations

import threading
import time

from reconciler.drivers.base import Outcome
from reconciler.run.executors import INLINE_MAX_SECONDS, ThreadExecutor, UserTask


def task(user: str, driver_type: str = "local") -> UserTask:
    return UserTask(job="j", build_id="b", epoch=1, block=0, user=user, desired_commit="c", server="s",
                    driver_type=driver_type, action="APPLY-AUTO", idempotent=True)


def test_short_local_calls_run_on_the_callers_thread_until_one_is_slow() -> None:
    threads: dict[str, int] = {}
    delay = {"u1": 0.0, "u2": INLINE_MAX_SECONDS * 3, "u3": 0.0}

    def run(t: UserTask) -> Outcome:
        threads[t.user] = threading.get_ident()
        time.sleep(delay[t.user])
        return Outcome("DEPLOYED", "ok")

    done: dict[str, Outcome] = {}
    executor = ThreadExecutor(run, workers=4)
    try:
        assert executor.inline("local") and not executor.inline("command") and not executor.inline("nosuch")
        for user in ("u1", "u2"):
            executor.submit(task(user), lambda t, o: done.__setitem__(t.user, o))
            assert user in done, "an inline call is finished when submit returns"
        assert threads["u1"] == threads["u2"] == threading.get_ident()
        assert not executor.inline("local"), "one slow call sends the driver to the pool"
        executor.submit(task("u3"), lambda t, o: done.__setitem__(t.user, o))
    finally:
        executor.close()
    assert done["u3"].status == "DEPLOYED" and threads["u3"] != threading.get_ident()
