"""Who owns a build: this process's identity, and whether another owner is provably gone."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from pathlib import Path

from reconciler.core.records import LedgerRecord, Owner
from reconciler.core.timeutil import utcnow


def me(started_at: datetime) -> Owner:
    """This process as the owner of the builds it claims (host, pid, start of the pass)."""
    return Owner(host=socket.gethostname(), pid=os.getpid(), started_at=started_at)


def owner_alive(owner: Owner, mine: Owner | None = None) -> bool | None:
    """True/False when provable (same host), None when the owner is elsewhere (rely on the lease)."""
    if owner.host != socket.gethostname():
        return None
    if owner.pid == os.getpid():
        # passes of one process (serve, watch) never overlap: an earlier pass of ours is over
        return mine is None or owner.started_at == mine.started_at
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _zombie(owner.pid):  # killed, not yet reaped by its parent: it runs nothing any more
        return False
    started = _process_start(owner.pid)
    # a process younger than the claim means the pid was reused: the owner is gone
    return started is None or started <= owner.started_at + timedelta(seconds=2)


def _process_start(pid: int) -> datetime | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), utcnow().tzinfo)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def recoverable(record: LedgerRecord, now: datetime, mine: Owner | None = None) -> bool:
    """SPEC 5.5: its owner is provably dead (same host, process gone), or its lease has expired."""
    alive = owner_alive(record.owner, mine)
    if alive is False:
        return True
    if alive is True:
        return False
    return record.lease_expires_at is not None and record.lease_expires_at < now
