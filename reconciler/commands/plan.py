"""Show what `reconcile` would do now, without doing it."""

from __future__ import annotations

import argparse
import os

from reconciler.commands._output import emit_json, print_problems
from reconciler.commands._repo import branch_state
from reconciler.commands._uncommitted import uncommitted_jobs, uncommitted_notice
from reconciler.core.model import recipients
from reconciler.core.rollout import describe
from reconciler.core.timeutil import iso


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    state = branch_state(args.repo)
    pending = uncommitted_jobs(args.repo)
    notice = uncommitted_notice(pending)
    if state is None:
        if args.format == "json":
            emit_json({"valid": True, "to_run": [], "up_to_date": [], "problems": [],
                       "uncommitted_jobs": [p for _, p in pending]})
        else:
            print("nothing committed yet: nothing to do")
            if notice:
                print(notice)
        return 0
    plan = state.plan(os.environ)  # secrets are judged as a pass here would (rule 10)
    if args.format == "json":
        emit_json({**plan.as_json(), "uncommitted_jobs": [p for _, p in pending]})
    else:
        print_problems(plan.problems)
        for name in plan.to_run:
            job = state.desired.jobs[name]
            print(f"run {name}:")
            for block in job.blocks:
                server = state.desired.servers[block.server]
                users = ", ".join(server.user_ids) if block.users == "all" else ", ".join(block.users)
                print(f"  {block.action} {block.definition} on {block.server} "
                      f"({server.environment}/{server.organization}) for {users}")
                if block.rollout is not None:
                    print(f"    rollout: {describe(block.rollout, recipients(block, server))}")
        for label, names in (("in flight", plan.in_flight), ("scheduled", plan.scheduled),
                             ("suspended", plan.suspended), ("invalid", plan.invalid), ("modified", plan.modified)):
            if names:
                print(f"{label}: {', '.join(names)}")
        for name in [*plan.waiting, *plan.blocked, *plan.frozen]:  # held back by after: or freeze:
            print(f"{plan.states[name].lower()} {name}: {plan.reasons[name]}")
        for name in plan.scheduled:
            runs_at, later = plan.runs_at.get(name), state.desired.jobs.get(name)
            if later is not None and later.run_at is not None and runs_at != later.run_at:  # run_at is frozen
                when = iso(runs_at) if runs_at else "not within reach (frozen)"
                print(f"scheduled {name}: run_at {iso(later.run_at)} is in a freeze window; runs at {when}")
        print(f"{len(plan.to_run)} to run, {len(plan.up_to_date)} up to date")
        if notice:
            print(notice)
    return 1 if plan.problems else 0
