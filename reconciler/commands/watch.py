"""Keep a clone reconciled: passes on start, on commits, on file changes and on a poll of the remote.

Watches jobs/, definitions/ and servers/. Logs one JSON line per event on stderr. SIGTERM or
SIGINT lets the users in flight finish, checkpoints and commits their results, and exits 0 (a
second signal stops at once, exit 130).
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", help="remote to poll, fetch from and push to (default: reconciler.yaml, "
                        "else the branch's upstream, else none)")
    parser.add_argument("--interval", type=float, default=30.0, metavar="SECONDS",
                        help="how often to poll the remote (default: 30)")
    parser.add_argument("--debounce", type=int, default=500, metavar="MS", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from reconciler.errors import UserError
    from reconciler.eventlog import emit
    from reconciler.triggers.watch import Watcher, WatchOptions

    if args.interval <= 0:
        raise UserError("--interval must be a positive number of seconds")
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second signal: the user insists
            raise KeyboardInterrupt
        stop.set()
        emit("watch.stopping", {"signal": signal.Signals(signum).name,
                                      "detail": "finishing the users in flight, then checkpointing"})

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    options = WatchOptions(repo=args.repo, remote=args.remote, interval=args.interval, debounce_ms=args.debounce,
                           stop=stop, events=emit)
    return Watcher(options).run()
