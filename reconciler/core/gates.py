"""What holds back a job that is otherwise due: `after:` (WAITING, BLOCKED, AFTER_CYCLE) and `freeze:`
windows (FROZEN). The rollout part of the pure plan (SPEC 9.4); `plan()` applies it last.

A job runs only once every job it names in `after` has a `SUCCESS` record (its file may be deleted
since). For a job that has no record yet, valid and not suspended:
- **BLOCKED** (with an AFTER_BLOCKED problem naming the job): a job it names ended `FAILURE`, is
  `MODIFIED`, `INVALID`, unknown (no file, no record: also a file deleted before it ran), or is
  itself BLOCKED (blocking is transitive: the chain cannot move without a change to the repo);
  **AFTER_CYCLE**: the `after` lists of jobs that have not run form a cycle; each is BLOCKED.
  A BLOCKED job is never claimed; a scheduled job is BLOCKED as soon as it is known it never can run.
- **WAITING**: a job it names has not finished yet (pending, scheduled, suspended, waiting, frozen,
  in flight). Applies to due jobs; a job whose `run_at` is still ahead stays SCHEDULED.
- **FROZEN**: due, nothing to wait for, and a block deploys to an environment that a freeze window
  holds now. It is listed with the window's reason and the moment it could run (when every window
  holding any of its environments has ended); it runs on the first pass after that.
A build already claimed (in flight) is never held back: recovering it finishes what was started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.core.freeze import frozen, thaws_at
from reconciler.core.model import Job
from reconciler.core.problems import Problem
from reconciler.core.records import Ledger
from reconciler.core.validate import Desired

HOLDABLE = ("PENDING", "SCHEDULED")  # states of valid, unsuspended jobs without a record
UNRUN = (*HOLDABLE, "SUSPENDED")  # a cycle is reported even while one of its jobs is a draft
SATISFIED, WAIT, BLOCK = "satisfied", "wait", "block"


@dataclass
class Held:
    """The gates' verdict, merged into the Plan by `plan()`."""

    states: dict[str, str] = field(default_factory=dict)  # job -> WAITING | BLOCKED | FROZEN
    reasons: dict[str, str] = field(default_factory=dict)  # job -> why it is held (listing, status, page)
    problems: list[Problem] = field(default_factory=list)
    runs_at: dict[str, datetime | None] = field(default_factory=dict)  # frozen/scheduled -> earliest moment
    waits_for: dict[str, tuple[str, ...]] = field(default_factory=dict)  # job -> named jobs not SUCCESS yet


def hold_back(desired: Desired, ledger: Ledger, states: Mapping[str, str], now: datetime) -> Held:
    """Gate every job whose listing state so far is PENDING or SCHEDULED. `states`: those listing states."""
    held = Held()
    valid = desired.jobs  # a property that builds the mapping: once
    unrun = {name: job for name, state in states.items() if state in UNRUN and (job := valid.get(name)) is not None}
    jobs = {name: job for name, job in unrun.items() if states[name] in HOLDABLE}
    cycles = _cycles({name: [d for d in job.after if d in unrun] for name, job in unrun.items() if job.after})
    graph = {name: [d for d in job.after if d in jobs] for name, job in jobs.items() if job.after}
    verdicts: dict[str, Verdict] = {}  # job -> how the jobs that name it see it
    for name in _deps_first(graph, cycles):
        job = jobs[name]
        found = [(dep, _verdict(dep, cycles, verdicts, states, ledger)) for dep in job.after]
        blocked = [(dep, v) for dep, v in found if v.kind == BLOCK]
        waiting = [dep for dep, v in found if v.kind == WAIT]
        path, lines = desired.job_files[name].path, desired.job_files[name].after_lines
        if blocked:
            root = blocked[0][1].root or blocked[0][1].text  # the cause at the bottom of a chain
            verdicts[name] = Verdict(BLOCK, f"job {name} is blocked ({root})", "blocked", root)
            held.states[name] = "BLOCKED"
            held.reasons[name] = "blocked: " + "; ".join(v.text for _, v in blocked)
            for dep, v in blocked:
                held.problems.append(Problem(path, lines.get(dep, lines.get("")),
                                             f"job {name!r} will not run: {_advice(dep, v)}", "AFTER_BLOCKED"))
        elif waiting:
            verdicts[name] = Verdict(WAIT, f"job {name} is waiting", "")
            held.waits_for[name] = tuple(waiting)
            if states[name] == "PENDING":
                shown = ", ".join(f"{dep} ({held.states.get(dep) or states.get(dep, 'unknown')})" for dep in waiting)
                held.states[name], held.reasons[name] = "WAITING", f"waiting for {shown}"
        else:  # it may run now; whoever names it waits until it has a SUCCESS record
            verdicts[name] = Verdict(WAIT, f"job {name} is {states[name]}", "")
    for name, loop in sorted(cycles.items()):
        shown = " -> ".join([*loop, loop[0]])
        jf = desired.job_files[name]
        if name in jobs:  # a suspended draft on the cycle stays SUSPENDED; the problem is reported all the same
            held.states[name], held.reasons[name] = "BLOCKED", f"blocked: after: forms a cycle ({shown})"
        held.problems.append(Problem(jf.path, jf.after_lines.get(loop[1 % len(loop)], jf.after_lines.get("")),
                                     f"job {name!r}: after: forms a cycle ({shown}); none of these jobs can ever "
                                     "run: remove one of the names", "AFTER_CYCLE"))
    _freeze(desired, jobs, states, held, now)
    return held


@dataclass(frozen=True)
class Verdict:
    kind: str  # SATISFIED | WAIT | BLOCK
    text: str  # e.g. "job a ended FAILURE"
    cause: str  # failure | unknown | modified | invalid | deleted | blocked | cycle | "" (what to advise)
    root: str = ""  # for a blocked job: what blocks the chain at its bottom


def _verdict(dep: str, cycles: Mapping[str, list[str]], verdicts: Mapping[str, Verdict],
             states: Mapping[str, str], ledger: Ledger) -> Verdict:
    """How a job that names `dep` in after: sees it."""
    if dep in cycles:
        return Verdict(BLOCK, f"job {dep} is on a cycle of after:", "cycle")
    if dep in verdicts:
        return verdicts[dep]
    state = states.get(dep)
    if state is None:
        return Verdict(BLOCK, f"job {dep} does not exist (no job file and no ledger record)", "unknown")
    if state == "DELETED":  # the file is gone; its record decides
        record = ledger.head(dep)
        state = record.status if record is not None else "DELETED"
    if state == "SUCCESS":
        return Verdict(SATISFIED, "", "")
    if state == "FAILURE":
        return Verdict(BLOCK, f"job {dep} ended FAILURE", "failure")
    if state == "MODIFIED":
        return Verdict(BLOCK, f"job {dep} was changed after it ran (MODIFIED)", "modified")
    if state in ("INVALID", "DELETED"):
        return Verdict(BLOCK, f"job {dep} is {state.lower()}", state.lower())
    return Verdict(WAIT, f"job {dep} is {state}", "")  # SUSPENDED, IN-PROGRESS, WORKING


def _advice(dep: str, verdict: Verdict) -> str:
    if verdict.cause == "failure":
        return (f"{verdict.text}; a finished job never runs again: retry it (`reconciler retry {dep}`) and "
                "name the retry job in after:")
    if verdict.cause == "unknown":
        return f"{verdict.text}; name an existing job in after:"
    if verdict.cause == "invalid":
        return f"{verdict.text}; fix it first"
    return verdict.text


def _deps_first(graph: Mapping[str, list[str]], cycles: Mapping[str, list[str]]) -> list[str]:
    """The jobs of `graph` not on a cycle, every job after the jobs it names (iterative: chains may be long)."""
    order: list[str] = []
    done: set[str] = set(cycles)
    for root in sorted(graph):
        if root in done:
            continue
        work = [(root, iter(graph[root]))]
        done.add(root)
        while work:
            node, deps = work[-1]
            dep = next(deps, None)
            if dep is None:
                work.pop()
                order.append(node)
            elif dep in graph and dep not in done:
                done.add(dep)
                work.append((dep, iter(graph[dep])))
    return order


def _cycles(graph: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """job -> the cycle it is on (as a path starting at that job), for every job on a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(component)
    found: dict[str, list[str]] = {}
    for component in components:
        members = set(component)
        for start in component:
            found[start] = _path_in(start, graph, members)
    return found


def _path_in(start: str, graph: Mapping[str, Iterable[str]], members: set[str]) -> list[str]:
    """A shortest cycle through `start` inside its component (breadth first), as a path from `start`."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return list(reversed(path))
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start]


def _freeze(desired: Desired, jobs: Mapping[str, Job], states: Mapping[str, str], held: Held,
            now: datetime) -> None:
    windows = desired.settings.freeze
    for name, job in sorted(jobs.items()):
        if name in held.states:
            continue
        if states[name] == "SCHEDULED" and job.run_at is not None:  # when it runs: run_at, or after a window
            held.runs_at[name] = thaws_at(windows, environments(desired, job), job.run_at) if windows else job.run_at
        elif windows and states[name] == "PENDING" and name not in held.waits_for:
            hold = frozen(windows, environments(desired, job), now)
            if hold is not None:
                held.states[name], held.reasons[name], held.runs_at[name] = "FROZEN", hold.message(), hold.until


def environments(desired: Desired, job: Job) -> list[str]:
    """The environments a job deploys to, in block order."""
    return list(dict.fromkeys(desired.servers[b.server].environment for b in job.blocks
                              if b.server in desired.servers))


def dependents(waits_for: Mapping[str, Iterable[str]], job: str) -> list[str]:
    """Every job that waits, directly or through others, for `job` (`Plan.waits_for`), sorted.

    For the engine: when `job` ends FAILURE these turn BLOCKED (notify `job.blocked`); when it ends
    SUCCESS and some of them wait for nothing else, a new plan would claim them."""
    reverse: dict[str, set[str]] = {}
    for waiter, deps in waits_for.items():
        for dep in deps:
            reverse.setdefault(dep, set()).add(waiter)
    found: set[str] = set()
    todo = [job]
    while todo:
        for waiter in reverse.get(todo.pop(), ()):
            if waiter not in found:
                found.add(waiter)
                todo.append(waiter)
    return sorted(found - {job})
