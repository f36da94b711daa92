"""Two recovery passes at the same moment on one remote (SPEC 9.1 rules 1-2, issue 12's reproduction), alone
and with a human pushing all the while. Split from tests/test_two_hosts.py so that the suite's workers share
the slow rounds; the helpers are in tests/support/two_hosts.py.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.support.chaos_world import add_clone, kill_group, wait_for
from tests.support.two_hosts import MakeSite, converged, history_problems, keep_pushing, make_site, settle

__all__ = ["make_site"]  # the fixture, imported so that pytest finds it here


@pytest.mark.timeout(300)
@pytest.mark.parametrize("human_racing", [False, True], ids=["alone", "human-pushing"])
def test_two_recoverers_at_once_run_each_remaining_user_exactly_once(make_site: MakeSite, human_racing: bool) -> None:
    """Kill a clone while u0 of a 4-user command job runs; start two recovery passes in two other clones at
    the same moment (same host: the dead owner is provably dead, both may recover at once). 4 rounds alone;
    2 with a human pushing all the while (before the fencing every round broke; with a human, every push of
    theirs is paced and a round takes about 50 s): the recoverers' pushes are then also rejected by commits
    that are not theirs (a takeover replayed onto a newer tip must still be a compare-and-swap)."""
    s = make_site(users=4, user_seconds=(0.05, 0.15))
    killed, first, second = (add_clone(s.world, name) for name in ("k", "r1", "r2"))
    report: list[dict[str, Any]] = []
    for n in range(2 if human_racing else 4):
        job = s.push_job(n)
        gate = s.hold(job, "u0")
        victim = s.start(killed)
        begun = wait_for(lambda job=job: s.begins(job, "u0"), 60, what="u0 to start")
        kill_group(victim.proc.pid)
        kill_group(begun[0]["pid"])  # the machine went down with u0's command
        victim.wait(30)
        gate.unlink()
        racers = [s.start(first), s.start(second)]
        human = threading.Thread(target=keep_pushing, args=(s, racers, n)) if human_racing else None
        if human is not None:
            human.start()
        codes = [r.wait(120) for r in racers]
        if human is not None:
            human.join(60)
        settle(s, [(first, None), (second, None), (killed, None)])
        effects = s.effects(job)
        record = s.record(job)
        users = {u: r["status"] for b in record.get("blocks", []) for u, r in b["users"].items()}
        report.append({"job": job, "exit codes": codes, "status": record.get("status"),
                       "runs, result": {u: f"{effects[u]}, {users.get(u)}" for u in ("u0", "u1", "u2", "u3")}})
    print("\ntwo recoverers:", json.dumps(report))
    twice = [r for r in report if any(s.effects(r["job"])[u] != 1 for u in ("u1", "u2", "u3"))
             or s.effects(r["job"])["u0"] > 0]
    problems = {"rounds where u1-u3 did not run exactly once (or u0 ran)": twice, "history": history_problems(s),
                "convergence": [p for c in (killed, first, second) for p in converged(s, c)]}
    failed = {k: v for k, v in problems.items() if v}
    assert not failed, (f"{len(twice)} of {len(report)} rounds broken:\n"
                        f"{json.dumps(failed, indent=1, default=str)[:5000]}")
