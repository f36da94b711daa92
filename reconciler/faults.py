"""Failpoints for fault-injection tests: crash, pause or record at named points of a pass.

Inactive unless `RECONCILER_FAILPOINTS` is set, e.g. `claim.after-push=kill@2,user.before-apply=sleep:0.5`.
Actions: `kill[@N]` (SIGKILL on the Nth hit, default the first), `sleep:S`, `exec` (run the command in
`RECONCILER_FAILPOINT_EXEC` once), and every hit is appended to `RECONCILER_FAILPOINT_LOG` when set.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time

_SPEC = os.environ.get("RECONCILER_FAILPOINTS", "")
_LOG = os.environ.get("RECONCILER_FAILPOINT_LOG")
_hits: dict[str, int] = {}
_lock = threading.Lock()
_actions: dict[str, str] = {}
for _item in filter(None, (part.strip() for part in _SPEC.split(","))):
    _name, _, _action = _item.partition("=")
    _actions[_name] = _action or "kill"
ACTIVE = bool(_actions) or _LOG is not None


def point(name: str, detail: str = "") -> None:
    if not ACTIVE:
        return
    with _lock:
        _hits[name] = count = _hits.get(name, 0) + 1
        if _LOG is not None:
            with open(_LOG, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {name} {detail}\n")
    action = _actions.get(name)
    if action is None:
        return
    if action.startswith("kill"):
        nth = int(action.split("@", 1)[1]) if "@" in action else 1
        if count == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
    elif action == "exec" and count == 1:
        subprocess.run(shlex.split(os.environ.get("RECONCILER_FAILPOINT_EXEC", "true")), check=False)
