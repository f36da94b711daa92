"""Two hosts on one remote (SPEC 9.1 rules 1-4, issue 12): lease expiry, a partition, two recoverers.

A second host is a UTS namespace (`unshare -u` + `hostname`, root only), so the reconciler sees another
host name and may not judge the other host's processes: only the lease decides. What ran is counted by a
`command` driver appending one line per run (begins.log when it starts, effects.log when it applies);
every check reads the remote, never the reconciler's own view.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import pytest

from tests.support.chaos_world import add_clone, wait_for
from tests.support.two_hosts import (
    HOST_A,
    HOST_B,
    LEASE,
    MakeSite,
    converged,
    freeze,
    history_problems,
    keep_pushing,
    lease_end,
    make_site,
    needs_hosts,
    owner_host,
    passes_until,
    settle,
    thaw,
)

__all__ = ["make_site"]  # the fixture, imported so that pytest finds it here


@needs_hosts
@pytest.mark.timeout(300)
def test_two_recoverers_of_an_expired_lease_at_once(make_site: MakeSite) -> None:
    """A live owner on host A is frozen mid-build (u1 running); once its lease expired, two clones on host B
    start recovering at the same moment, while a human pushes: one takeover (epoch 2) wins, u2 and u3 run
    exactly once. 2 rounds (each waits out a lease; before the fencing every round broke)."""
    s = make_site(users=4, user_seconds=(0.05, 0.1))
    a, b1, b2 = add_clone(s.world, "a"), add_clone(s.world, "b1"), add_clone(s.world, "b2")
    report: list[dict[str, Any]] = []
    for n in range(2):
        job = s.push_job(n)
        gate = s.hold(job, "u1")
        owner = s.start(a, HOST_A)
        begun = wait_for(lambda job=job: s.begins(job, "u1", HOST_A), 60, what="u1 to start on host A")
        freeze(owner, also=(begun[0]["pid"],))
        expires = lease_end(s.record(job))
        wait_for(lambda expires=expires: time.time() > expires + 0.5, LEASE + 30, what="the lease to expire")
        racers = [s.start(b1, HOST_B), s.start(b2, HOST_B)]
        human = threading.Thread(target=keep_pushing, args=(s, racers, n))
        human.start()
        codes = [r.wait(120) for r in racers]
        human.join(60)
        thaw(owner, also=(begun[0]["pid"],))
        gate.unlink()
        owner.wait(90)
        settle(s, [(b1, HOST_B), (b2, HOST_B), (a, HOST_A)])
        effects, record = s.effects(job), s.record(job)
        users = {u: r["status"] for blk in record.get("blocks", []) for u, r in blk["users"].items()}
        report.append({"job": job, "exit codes": codes, "epoch": record.get("epoch"),
                       "runs, result": {u: f"{effects[u]}, {users.get(u)}" for u in ("u0", "u1", "u2", "u3")}})
    print("\ntwo recoverers of an expired lease:", json.dumps(report))
    broken = [r for r in report if any(s.effects(r["job"])[u] != 1 for u in ("u0", "u1", "u2", "u3"))]
    problems = {"rounds where a user did not run exactly once": broken, "history": history_problems(s),
                "convergence": [p for c in (a, b1, b2) for p in converged(s, c)]}
    failed = {k: v for k, v in problems.items() if v}
    assert not failed, (f"{len(broken)} of {len(report)} rounds broken:\n"
                        f"{json.dumps(failed, indent=1, default=str)[:5000]}")


@needs_hosts
@pytest.mark.timeout(240)
def test_a_stopped_owner_is_taken_over_only_after_its_lease_then_runs_nothing(make_site: MakeSite) -> None:
    s = make_site(users=4, user_seconds=(0.05, 0.1))
    a, b = add_clone(s.world, "a"), add_clone(s.world, "b")
    job = s.push_job(0)
    gate = s.hold(job, "u1")
    owner = s.start(a, HOST_A)
    begun = wait_for(lambda: s.begins(job, "u1", HOST_A), 60, what="u1 to start on host A")
    command_pgid = begun[0]["pid"]  # the command runs in its own session: the frozen host freezes it too
    freeze(owner, also=(command_pgid,))
    stopped_at = time.time()
    record = s.record(job)
    assert owner_host(record) == HOST_A and record.get("status") == "WORKING", record
    expires = lease_end(record)
    assert expires > stopped_at - 1, "the owner's lease had already expired while it was running"
    early = passes_until(s, b, HOST_B, job, lambda r: r.get("status") in ("SUCCESS", "FAILURE"),
                         deadline=expires + 60, lease_until=expires)
    final = s.record(job)
    thaw(owner, also=(command_pgid,))
    continued_at = time.time()
    gate.unlink()  # u1's command, started by A before the freeze, now finishes (its one effect)
    rc = owner.wait(90)
    late_starts = [f"{x['user']} +{x['t'] - continued_at:.1f} s" for x in s.begins(job, host=HOST_A)
                   if x["t"] > continued_at]
    effects = s.effects(job)
    problems = {
        "taken over before the lease expired": early,
        "A started users after it was continued": late_starts,
        "users run more than once": {u: n for u, n in effects.items() if n > 1},
        "u2, u3 not run exactly once by B": [u for u in ("u2", "u3")
                                           if effects[u] != 1 or not s.begins(job, u, HOST_B)],
        "final record replaced after B wrote it": s.record(job) != final,
        "history": history_problems(s),
        "A did not report job.lost": '"job.lost"' not in owner.output(),
    }
    settle(s, [(a, HOST_A), (b, HOST_B)])
    problems["convergence"] = converged(s, a) + converged(s, b)
    print(f"\nstopped owner: lease expired {expires - stopped_at:.1f} s after the stop; B's passes before it "
          f"took over: {len(early)} early; effects {dict(effects)}; A after SIGCONT: exit {rc}, "
          f"{len(late_starts)} users started")
    failed = {k: v for k, v in problems.items() if v}
    assert not failed, f"owner rc {rc}: {json.dumps(failed, indent=1, default=str)[:4000]}\n{owner.output()[-2000:]}"


@needs_hosts
@pytest.mark.timeout(300)
def test_an_owner_cut_off_from_the_remote_stops_and_never_overwrites_the_new_owner(make_site: MakeSite) -> None:
    s = make_site(users=8, user_seconds=(0.8, 0.8))
    link = s.world.work / "link-a.git"
    link.symlink_to(s.world.remote)
    a = add_clone(s.world, "a", url=str(link))
    b = add_clone(s.world, "b")
    job = s.push_job(0)
    owner = s.start(a, HOST_A)
    wait_for(lambda: s.begins(job, "u1", HOST_A), 60, what="u1 to start on host A")
    cut = link.with_name("link-a.cut")
    os.rename(link, cut)  # host A can no longer reach the remote
    cut_at = time.time()
    record = s.record(job)
    expires = lease_end(record)
    early = passes_until(s, b, HOST_B, job, lambda r: owner_host(r) == HOST_B and r.get("status") in
                         ("SUCCESS", "FAILURE"), deadline=cut_at + 120, lease_until=expires)
    final = s.record(job)
    os.rename(cut, link)  # the remote is back
    rc = owner.wait(120)
    settle(s, [(a, HOST_A), (b, HOST_B)])
    fence = cut_at + LEASE / 2 + 1.0  # 1 s for a command to start and write its first line
    starts_a = s.begins(job, host=HOST_A)
    effects = s.effects(job)
    problems = {
        "taken over before the lease expired": early,
        "A started users more than lease/2 after it was cut off": [
            f"{x['user']} {x['t'] - cut_at:.1f} s after the cut" for x in starts_a if x["t"] > fence],
        "users run more than once": {u: n for u, n in effects.items() if n > 1},
        "final record replaced after B wrote it": s.record(job) != final,
        "history": history_problems(s),
        "convergence": converged(s, a) + converged(s, b),
    }
    after_cut = sorted(round(x["t"] - cut_at, 1) for x in starts_a if x["t"] > cut_at)
    print(f"\npartition: A started users at {after_cut} s after the cut (fence at {LEASE / 2} s); "
          f"lease expired {expires - cut_at:.1f} s after the cut; effects {dict(effects)}; A exit {rc}")
    failed = {k: v for k, v in problems.items() if v}
    assert not failed, (f"owner rc {rc}; A's starts after the cut (s): {after_cut}\n"
                        f"{json.dumps(failed, indent=1, default=str)[:4000]}\n{owner.output()[-2500:]}")
