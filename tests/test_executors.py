"""The thread executor runs short in-process calls (`Driver.inline_calls`, the `local` driver) on the caller's
thread, and sends a driver to its pool for good once its calls prove slow, a few in a row (a slow mount under
`local`); one slow call among fast ones (a pause of the whole process) does not."""

from __future__ import annotations

import threading
import time

from reconciler.drivers.base import Outcome
from reconciler.run.executors import INLINE_MAX_SECONDS, INLINE_SLOW_CALLS, ThreadExecutor, UserTask


def task(user: str, driver_type: str = "local") -> UserTask:
    return UserTask(job="j", build_id="b", epoch=1, block=0, user=user, desired_commit="c", server="s",
                    driver_type=driver_type, action="APPLY-AUTO", idempotent=True)


def test_short_local_calls_run_on_the_callers_thread_until_several_in_a_row_are_slow() -> None:
    threads: dict[str, int] = {}
    slow = INLINE_MAX_SECONDS * 3
    # one slow call among fast ones (a collector's pause), then a slow streak (a slow mount)
    delay = {"u1": 0.0, "u2": slow, "u3": 0.0, **{f"s{i}": slow for i in range(INLINE_SLOW_CALLS)}, "last": 0.0}

    def run(t: UserTask) -> Outcome:
        threads[t.user] = threading.get_ident()
        time.sleep(delay[t.user])
        return Outcome("DEPLOYED", "ok")

    done: dict[str, Outcome] = {}
    executor = ThreadExecutor(run, workers=4)
    try:
        assert executor.inline("local") and not executor.inline("command") and not executor.inline("nosuch")
        for user in ("u1", "u2", "u3"):
            executor.submit(task(user), lambda t, o: done.__setitem__(t.user, o))
            assert user in done, "an inline call is finished when submit returns"
        assert threads["u1"] == threads["u2"] == threads["u3"] == threading.get_ident()
        assert executor.inline("local"), "one slow call among fast ones keeps the driver inline"
        for i in range(INLINE_SLOW_CALLS):
            assert executor.inline("local")
            executor.submit(task(f"s{i}"), lambda t, o: done.__setitem__(t.user, o))
            assert threads[f"s{i}"] == threading.get_ident()
        assert not executor.inline("local"), "a streak of slow calls sends the driver to the pool"
        executor.submit(task("last"), lambda t, o: done.__setitem__(t.user, o))
    finally:
        executor.close()
    assert done["last"].status == "DEPLOYED" and threads["last"] != threading.get_ident()
