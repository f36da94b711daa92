"""Background reconcile passes for `serve`: one worker thread, one pass at a time, triggers coalesce.

A trigger that arrives while a pass runs queues exactly one more pass (which reads the branch and
the ledger afresh), however many triggers arrive. The pass takes the repo lock like any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.timeutil import iso, utcnow
from reconciler.errors import UserError
from reconciler.ledger.lock import RepoLock
from reconciler.run.reconcile_pass import PassOptions, run_pass
from reconciler.run.summary import PassSummary

Events = Callable[[str, dict[str, object]], None]


@dataclass
class PassReport:
    outcome: str  # ok | failure (a job ended FAILURE) | interrupted | error (the pass could not run)
    seconds: float
    finished_at: str
    detail: str = ""


class PassRunner:
    def __init__(self, make_options: Callable[[threading.Event], PassOptions], events: Events,
                 on_report: Callable[[PassReport], None] = lambda report: None,
                 lock_dir: Path | None = None) -> None:
        self._make_options = make_options
        self._lock_dir = lock_dir
        self._events = events
        self._on_report = on_report
        self._cond = threading.Condition()
        self._pending = False
        self._running = False
        self._closing = False
        self.stop = threading.Event()
        self.last: PassReport | None = None
        self._thread = threading.Thread(target=self._loop, name="reconcile-pass", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def trigger(self, reason: str) -> bool:
        """Ask for a pass; False when one was already queued (this trigger coalesced into it)."""
        with self._cond:
            if self._closing:
                return False
            queued = not self._pending
            self._pending = True
            self._events("pass.triggered", {"reason": reason, "coalesced": not queued})
            self._cond.notify_all()
        return queued

    @property
    def busy(self) -> dict[str, bool]:
        with self._cond:
            return {"running": self._running, "queued": self._pending}

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def shutdown(self) -> None:
        """Stop taking triggers, ask the running pass to stop after its users in flight, wait for it."""
        with self._cond:
            self._closing = True
            self._pending = False
            self._cond.notify_all()
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                self._pending = False
                self._running = True
            try:
                self.last = self._one_pass()
                self._on_report(self.last)
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()

    def _one_pass(self) -> PassReport:
        started = time.monotonic()
        self._events("pass.started", {})
        detail = ""
        summary: dict[str, object] = {}
        try:
            if not self._wait_for_lock():
                outcome, detail = "interrupted", "stopped while another pass held the repo lock"
            else:
                found = PassSummary.of(run_pass(self._make_options(self.stop)))
                outcome, summary = found.outcome, found.event()  # what ran, and every problem's message
        except UserError as exc:
            outcome, detail = "error", str(exc)
        except Exception as exc:  # a bug must not kill the worker: report it and keep serving
            outcome, detail = "error", f"internal error: {type(exc).__name__}: {exc}"
        report = PassReport(outcome, time.monotonic() - started, iso(utcnow()) or "", detail)
        self._events("pass.finished", {**summary, "outcome": outcome, "seconds": round(report.seconds, 3),
                                       **({"error": detail} if detail else {})})
        return report


    def _wait_for_lock(self) -> bool:
        """Wait while another pass (watch, a push hook, a CLI run) holds the repo lock, but stay
        stoppable: run_pass itself would wait without looking at the stop event. False if stopped."""
        if self._lock_dir is None:
            return True
        while not self.stop.is_set():
            try:
                with RepoLock(self._lock_dir, wait=0):
                    return True
            except UserError:
                self.stop.wait(0.25)
        return False
